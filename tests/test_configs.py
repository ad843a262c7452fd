"""Every shipped config runs 2 steps with its model and data swapped for offline tiny ones (same data set names)."""

import json
import random
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from kinds_fixtures import pair_example
from train_fixtures import PEOPLE, PLACES, TOPICS, joint_example, save_tiny_encoder

from hf_mtl.train import main

pytestmark = pytest.mark.training

CONFIGS = sorted(path.name for path in (REPO_ROOT / "configs").glob("*.json"))


@pytest.fixture(scope="module")
def offline(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("configs")
    encoder = save_tiny_encoder(root / "encoder", tokenizer)
    rng = random.Random(0)
    for split, size in (("train", 32), ("validation", 8), ("test", 8)):
        conll, news = root / "conll", root / "news"
        conll.mkdir(exist_ok=True)
        news.mkdir(exist_ok=True)
        with open(conll / f"{split}.jsonl", "w") as handle:  # the Hub's lhoestq/conll2003 columns
            for _ in range(size):
                example = joint_example(rng)
                handle.write(json.dumps({"tokens": example["tokens"], "ner_tags": example["tags"]}) + "\n")
        with open(news / f"{split}.jsonl", "w") as handle:  # the Hub's fancyzhx/ag_news columns
            for _ in range(size):
                text = f"{' '.join(rng.choice(PEOPLE))} visited {' '.join(rng.choice(PLACES))} for {rng.choice(TOPICS)}"
                handle.write(json.dumps({"text": text, "label": TOPICS.index(rng.choice(TOPICS))}) + "\n")
        # the Hub's nyu-mll/glue mrpc and stsb, google-research-datasets/go_emotions columns (ids without names)
        for name, make in (
            ("mrpc", lambda pair: {"sentence1": pair["sentence1"], "sentence2": pair["sentence2"],
                                   "label": int(pair["paraphrase"] == "yes")}),
            ("stsb", lambda pair: {"sentence1": pair["sentence1"], "sentence2": pair["sentence2"],
                                   "label": pair["similarity"]}),
            ("emotions", lambda pair: {"text": pair["sentence1"], "labels": [rng.randrange(4)] * rng.choice([1, 2])}),
        ):
            (root / name).mkdir(exist_ok=True)
            with open(root / name / f"{split}.jsonl", "w") as handle:
                for _ in range(size):
                    handle.write(json.dumps(make(pair_example(rng))) + "\n")
    files = {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}
    datasets = {
        name: {"path": str(root / name), "format": "json", "data_files": files}
        for name in ("conll", "news", "mrpc", "stsb", "emotions")
    }
    return root, encoder, datasets


def overrides(config, encoder, datasets, output):
    swapped = {"model_name_or_path": str(encoder), "output_dir": str(output), "max_steps": "2", "use_cpu": "true",
               "bf16": "false", "report_to": "none", "eval_strategy": "no", "save_strategy": "no",
               "load_best_model_at_end": "false", "per_device_train_batch_size": "4", "max_seq_length": "32",
               "disable_tqdm": "true"}
    # the tiny encoder has 2 layers
    if config.get("freeze_layers"):
        swapped["freeze_layers"] = "1"
    if config.get("unfreeze_schedule"):
        swapped["unfreeze_schedule"] = json.dumps({"start_frozen_layers": 2, "unfreeze_every_steps": 1})
    if "datasets" in config and set(config["datasets"]) <= set(datasets):
        swapped["datasets"] = json.dumps({name: datasets[name] for name in config["datasets"]})
    return [item for key, value in swapped.items() for item in (f"--{key}", value)]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_runs_two_steps_offline(name, offline, tmp_path):
    root, encoder, datasets = offline
    config_path = REPO_ROOT / "configs" / name
    config = json.loads(config_path.read_text())
    if name == "demo.json":  # already offline: only the encoder shrinks
        args = overrides({}, encoder, datasets, tmp_path / "out")
    elif name == "frozen_head.json":  # continues from a trained hf_mtl model
        trained = tmp_path / "trained"
        base = json.loads((REPO_ROOT / "configs" / "full_ft.json").read_text())
        main([str(REPO_ROOT / "configs" / "full_ft.json"), *overrides(base, encoder, datasets, trained), "--do_eval", "false",
              "--do_predict", "false"])
        args = overrides(config, trained, datasets, tmp_path / "out")
    elif name == "continual_distillation.json":  # continues the demo model: its demo tasks eval-only, "self" teachers
        trained = tmp_path / "trained"
        main([str(REPO_ROOT / "configs" / "demo.json"), *overrides({}, encoder, datasets, trained),
              "--do_eval", "false", "--do_predict", "false"])
        args = overrides(config, trained, datasets, tmp_path / "out")
        args += ["--datasets", json.dumps({"demo": config["datasets"]["demo"], "emotions": datasets["emotions"]})]
    else:
        args = overrides(config, encoder, datasets, tmp_path / "out")
    results = main([str(config_path), *args])

    assert results["train_samples"] > 0
    state = json.loads(Path(tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (tmp_path / "out" / "model.safetensors").is_file()
