"""A `sentence_similarity` task trained with `run_mtl.py` beside other kinds, and everything downstream of it."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import (accelerate_launch, joint_config, run_config, run_process, save_tiny_encoder, write_config,
                            write_joint_data)

from hf_mtl import MultiTaskPipeline
from hf_mtl.errors import ConfigError, DataError

pytestmark = pytest.mark.training

WORDS = ["red", "green", "blue", "cat", "dog", "bird", "runs", "sleeps", "sings", "big", "small", "old"]


def write_pairs(folder, sizes=(48, 16), seed=0, scored=True, constant=None):
    """Pairs whose score is their word overlap (0-5), and a hard negative sharing no word with the first text."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "validation"), sizes):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for _ in range(size):
                first = rng.sample(WORDS, 5)
                kept = rng.randint(0, 5)
                second = first[:kept] + rng.sample([word for word in WORDS if word not in first], 5 - kept)
                negative = [word for word in WORDS if word not in first][:5]
                row = {"a": " ".join(first), "b": " ".join(second), "n": " ".join(negative)}
                if scored:
                    row["score"] = float(kept if constant is None else constant)
                handle.write(json.dumps(row) + "\n")
    return folder


def similarity_config(root, tokenizer, *, task, data=None, **overrides):
    encoder = save_tiny_encoder(root / "encoder", tokenizer)
    config = joint_config(encoder, write_joint_data(root / "joint"), root / "out", **overrides)
    data = data or write_pairs(root / "pairs")
    config["datasets"]["pairs"] = {"path": str(data), "format": "json",
                                   "data_files": {"train": "train.jsonl", "validation": "validation.jsonl"}}
    config["tasks"].append({"name": "sim", "type": "sentence_similarity", "dataset": "pairs", "text_column": "a",
                            "text_pair_column": "b", **task})
    return config


def test_scored_pairs_train_jointly_with_other_kinds(tmp_path, tokenizer):
    config = similarity_config(tmp_path, tokenizer, task={"label_column": "score", "matryoshka_dims": [16]},
                               max_steps=6)
    run_config(config, tmp_path)
    output = tmp_path / "out"
    results = json.loads((output / "eval_results.json").read_text())
    for key in ("eval_sim_spearman", "eval_sim_pearson", "eval_topic_accuracy", "eval_ner_f1"):
        assert -1.0 <= results[key] <= 1.0, key
    main_metrics = [results["eval_topic_accuracy"], results["eval_ner_f1"], results["eval_sim_spearman"]]
    assert results["eval_score"] == pytest.approx(sum(main_metrics) / 3)
    saved = json.loads((output / "config.json").read_text())["tasks"][-1]
    assert saved == {"name": "sim", "type": "sentence_similarity", "loss": "cosent", "matryoshka_dims": [16]}
    assert "## Task `sim` (sentence_similarity)" in (output / "eval_report.md").read_text()
    card = (output / "README.md").read_text()
    assert "sentence-similarity" in card and "Spearman correlation (cosine)" in card

    pipe = MultiTaskPipeline(str(output), bf16=False)
    pair = {"text": "red cat runs big old", "text_pair": "red cat sleeps small old"}
    assert pipe(pair)["sim"]["score"] == pytest.approx(pipe.similarity(pair["text"], pair["text_pair"]), abs=1e-5)
    assert "sim" not in pipe("red cat runs")
    assert remote_pair_score(output, pair, tmp_path) == pytest.approx(pipe(pair)["sim"]["score"], abs=1e-4)

    from hf_mtl.evaluate_model import evaluate_model
    from hf_mtl.export import export_task

    rows = [json.loads(line) for line in (tmp_path / "pairs" / "validation.jsonl").read_text().splitlines()]
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps({"text": row["a"], "text_pair": row["b"], "label": row["score"]}) + "\n"
                                for row in rows))
    evaluated = evaluate_model(str(output), str(held_out), tasks=["sim"])
    assert evaluated["test_sim_spearman"] == pytest.approx(results["eval_sim_spearman"], abs=1e-3)
    with pytest.raises(ConfigError, match="task 'sim' is a bi-encoder"):
        export_task(str(output), "sim", str(tmp_path / "stock"))

    from hf_mtl.onnx import export_onnx

    export_onnx(str(output), str(tmp_path / "onnx"))
    onnx_pipe = MultiTaskPipeline(str(tmp_path / "onnx"), backend="onnx")
    assert onnx_pipe(pair)["sim"]["score"] == pytest.approx(pipe(pair)["sim"]["score"], abs=1e-4)

    from sentence_transformers import SentenceTransformer

    from hf_mtl.export import export_sentence_transformers

    export_sentence_transformers(str(output), str(tmp_path / "st"))
    assert json.loads((tmp_path / "st" / "config_sentence_transformers.json").read_text())["matryoshka_dims"] == [16]
    texts = ["red cat runs", "blue bird sings"]
    assert np.allclose(SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(texts), pipe.embed(texts, bf16=False),
                       atol=1e-4)


def remote_pair_score(folder, pair, tmp_path) -> float:
    """The pair's score from the folder's own code (`trust_remote_code`) where hf_mtl cannot be imported."""
    script = f"""
import json, sys
sys.modules["hf_mtl"] = None  # any `import hf_mtl` now fails, as on a machine without the package
import transformers
pipe = transformers.pipeline(model={str(folder)!r}, trust_remote_code=True, bf16=False)
print(json.dumps(pipe({pair!r})["sim"]["score"]))
"""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_positive_pairs_with_hard_negatives_are_scored_by_retrieval(tmp_path, tokenizer):
    data = write_pairs(tmp_path / "pairs", scored=False)
    config = similarity_config(tmp_path, tokenizer, data=data, task={"text_negative_column": "n"}, max_steps=4)
    run_config(config, tmp_path)
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert 0 < results["eval_sim_mrr_at_10"] <= 1 and 0 <= results["eval_sim_recall_at_1"] <= 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "test_predictions.jsonl").read_text().splitlines()]
    assert all("sim" not in row for row in rows)  # the pairs have no test split; the joint data's rows have no pair


def test_cosine_mse_keeps_the_train_range_and_refuses_equal_scores(tmp_path, tokenizer):
    config = similarity_config(tmp_path / "a", tokenizer, task={"label_column": "score", "loss": "cosine_mse"},
                               max_steps=2, do_predict=False)
    run_config(config, tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "out" / "config.json").read_text())["tasks"][-1]
    assert (saved["target_min"], saved["target_max"]) == (0.0, 5.0)
    flat = write_pairs(tmp_path / "flat", constant=3)
    config = similarity_config(tmp_path / "b", tokenizer, data=flat, task={"label_column": "score", "loss": "cosine_mse"})
    with pytest.raises(DataError, match="every score of data set 'pairs'.s train split is 3; cosine_mse"):
        run_config(config, tmp_path / "b")


@pytest.mark.parametrize("task, overrides, error, message", [
    ({"text_negative_column": "n"}, {"per_device_train_batch_size": 1}, ConfigError,
     r"tasks\[2\].loss: multiple_negatives_ranking takes the other rows of a batch as negatives"),
    ({"label_column": "a"}, {}, DataError, "column 'a' .*not numbers"),
    ({"text_pair_column": "missing"}, {}, DataError, "no column 'missing'"),
    ({"label_column": "score", "loss": "ranking"}, {}, ConfigError, "loss: 'ranking' is not one of"),
    ({"label_column": "score"}, {"freeze_heads": ["sim"]}, ConfigError, r"freeze_heads: the heads of \['sim'\] have no weights"),
])
def test_bad_similarity_input_is_one_error(tmp_path, tokenizer, task, overrides, error, message):
    config = similarity_config(tmp_path, tokenizer, task=task, **overrides)
    with pytest.raises(error, match=message):
        run_config(config, tmp_path)
    assert not (tmp_path / "out").exists()


FSDP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp.yaml"


@pytest.mark.multiprocess
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_processes_train_both_towers_with_gradient_checkpointing(tmp_path, tokenizer, engine):
    """Every batch runs the pair tower on every rank (rows of the other data set get an empty pair), so DDP and
    FSDP see the same graph; the encoder runs twice per step under activation checkpointing."""
    config = similarity_config(tmp_path, tokenizer, task={"label_column": "score"}, max_steps=4, do_predict=False,
                               gradient_checkpointing=True, per_device_train_batch_size=4, ddp_timeout=120)
    path = write_config(tmp_path, "run", config)
    launcher = accelerate_launch(2) if engine == "ddp" else accelerate_launch(config_file=FSDP_CONFIG)
    result = run_process(launcher + ["run_mtl.py", path], timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "world size 2" in result.stdout + result.stderr
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert -1 <= results["eval_sim_spearman"] <= 1
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == 4
