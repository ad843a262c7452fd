"""The architecture matrix: every encoder family of README's "Encoders" table trains, reloads, predicts, exports and
adapts, on a tiny random encoder of that family built offline from its config class (MiniLM's tokenizer beside it).

One short training run per architecture (a sentence task, a softmax token task and a CRF token task, LoRA on the
encoder with its default `target_modules`) is shared by the tests of that architecture; each test checks one
feature. The README table is parsed here, so every row and column it shows is what these tests exercise.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, save_tiny_encoder, tiny_encoder_config
from safetensors.torch import load_file
from train_fixtures import joint_config, run_config, write_joint_data
from transformers import AutoModel

from hf_mtl import MultiTaskConfig, MultiTaskModel, MultiTaskPipeline, cli
from hf_mtl.lora import ADAPTER_FOLDER
from hf_mtl.pipeline_mtl import split_words
from hf_mtl.tokenizer_checks import max_input_length

pytestmark = pytest.mark.architectures

TEXTS = [
    "anna berg said the shares profit of acme corp in paris.",
    "",
    "omar (northwind) said: the election vote in new york, lagos",
    " ".join(["lena kovacs said the match goal of acme corp in lagos"] * 30),  # windows past the position limit
]
# Architectures whose folders are also reloaded by remote code where hf_mtl cannot be imported: three families.
REMOTE_CODE_ARCHITECTURES = ("deberta-v2", "mpnet", "modernbert")


def readme_matrix() -> dict:
    """`model_type` -> {column: cell} of the README table under "### Encoders"."""
    section = (REPO_ROOT / "README.md").read_text().split("\n### Encoders\n", 1)[1].split("\n#", 1)[0]
    table = next(block for block in section.split("\n\n") if block.startswith("|"))
    lines = table.splitlines()
    columns = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|"))))
        rows[re.search(r"`([^`]+)`", cells[columns[0]]).group(1)] = cells
    return rows


MATRIX = readme_matrix()


def test_the_readme_table_covers_the_encoders_users_pick_first():
    assert {"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta-v2", "modernbert", "mpnet",
            "mobilebert", "ernie", "camembert"} <= set(MATRIX)


@pytest.fixture(scope="module", params=sorted(MATRIX))
def trained(request, tmp_path_factory, tokenizer):
    """(model_type, trained folder) after a few steps of `run_mtl.py`'s main with LoRA, sentence, softmax and CRF heads."""
    model_type = request.param
    root = tmp_path_factory.mktemp(model_type)
    save_tiny_encoder(root / "encoder", tokenizer, model_type)
    config = joint_config(root / "encoder", write_joint_data(root / "data"), root / "model", max_steps=2, lora=True,
                          do_eval=False)
    config["tasks"].append({"name": "ner_crf", "type": "token_classification", "dataset": "demo", "crf": True})
    run_config(config, root)
    return model_type, root / "model"


def torch_predictions(folder):
    return MultiTaskPipeline(str(folder))(TEXTS, return_tags=True, bf16=False)


def test_attention_is_the_encoders_default(trained):
    model_type, folder = trained
    model = AutoModel.from_pretrained(folder)
    assert model.config._attn_implementation == MATRIX[model_type]["attention"]
    assert model.encoder.config._attn_implementation == MATRIX[model_type]["attention"]


def test_automodel_reload_gives_the_saved_weights_logits(trained):
    model_type, folder = trained
    reloaded = AutoModel.from_pretrained(folder).eval()
    assert type(reloaded) is MultiTaskModel
    # The reference: a model built from config.json with model.safetensors loaded strictly, by hand.
    reference = MultiTaskModel(MultiTaskConfig.from_pretrained(folder)).eval()
    reference.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    inputs = MultiTaskPipeline(str(folder)).tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected, actual = reference(**inputs).logits, reloaded(**inputs).logits
    for name in expected:
        assert torch.equal(expected[name], actual[name]), (model_type, name)


def test_pipeline_tags_every_word_and_spans_sit_on_the_text(trained):
    model_type, folder = trained
    pipe = MultiTaskPipeline(str(folder))
    long_text = TEXTS[-1]
    assert len(pipe.tokenizer(long_text)["input_ids"]) > max_input_length(pipe.model.config, pipe.tokenizer)
    for text, result in zip(TEXTS, pipe(TEXTS, return_tags=True, bf16=False)):
        assert result["words"] == [text[start:end] for start, end in split_words(text)]
        for task in ("ner", "ner_crf"):
            assert len(result["tags"][task]) == len(result["words"])
            for entity in result[task]:
                assert text[entity["start"] : entity["end"]] == entity["text"]
                assert entity["start"] in {start for start, _ in split_words(text)}
        assert result["topic"]["label"] in {"business", "politics", "sports", "technology"}


def test_lora_adapts_the_default_target_modules(trained):
    model_type, folder = trained
    adapter = json.loads((folder / ADAPTER_FOLDER / "adapter_config.json").read_text())
    expected = {name.strip() for name in MATRIX[model_type]["LoRA default `target_modules`"].strip("`").split(",")}
    assert set(adapter["target_modules"]) == expected
    assert load_file(str(folder / ADAPTER_FOLDER / "adapter_model.safetensors"))


def test_onnx_and_int8_predict_what_torch_predicts(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    model_type, folder = trained
    assert MATRIX[model_type]["ONNX + int8"] == "yes"
    output = tmp_path / "onnx"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export-onnx", "--model", str(folder), "--output", str(output), "--quantize", "int8"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["onnx"]  # nothing left in the working directory (ONNX Runtime's dumps)
    expected = torch_predictions(folder)
    exported = MultiTaskPipeline(str(output), backend="onnx")(TEXTS, return_tags=True)
    for want, got in zip(expected, exported):
        assert got["tags"] == want["tags"], model_type
        assert got["topic"]["label"] == want["topic"]["label"]
        assert got["topic"]["score"] == pytest.approx(want["topic"]["score"], abs=1e-4)
    quantized = MultiTaskPipeline(str(output), backend="onnx", file_name="model_int8.onnx")(TEXTS, return_tags=True)
    for want, got in zip(expected, quantized):
        assert {task: len(tags) for task, tags in got["tags"].items()} == {
            task: len(tags) for task, tags in want["tags"].items()}


def test_export_task_serves_the_token_task_and_refuses_the_sentence_task(trained, tmp_path, capsys):
    model_type, folder = trained
    status = cli.main(["export-task", "--model", str(folder), "--task", "ner", "--output", str(tmp_path / "ner")])
    if not MATRIX[model_type]["export-task"].startswith("token tasks"):
        assert status == 2 and "adds layers of its own before the classifier" in capsys.readouterr().err
        assert not (tmp_path / "ner").exists()
        return
    assert status == 0
    from transformers import AutoModelForTokenClassification

    stock = AutoModelForTokenClassification.from_pretrained(tmp_path / "ner").eval()
    ours = AutoModel.from_pretrained(folder).eval()
    inputs = MultiTaskPipeline(str(folder)).tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(stock(**inputs).logits, ours(**inputs).logits["ner"], atol=1e-5, rtol=1e-5)
    # Mean pooling: no stock sequence classifier reproduces the sentence head, and the CRF has no stock class.
    for task, message in (("topic", "pooling"), ("ner_crf", "CRF")):
        assert cli.main(["export-task", "--model", str(folder), "--task", task, "--output", str(tmp_path / task)]) == 2
        assert message in capsys.readouterr().err


def test_export_task_of_a_sentence_task_where_the_stock_classifier_reads_the_pooler(trained, tmp_path, capsys):
    model_type, folder = trained
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    tasks = [{"name": "topic", "type": "sequence_classification", "labels": ["business", "sports"]}]
    try:
        model = MultiTaskModel.from_encoder(str(folder.parent / "encoder"), tasks=tasks, pooling="pooler")
    except ValueError as error:  # an encoder without a pooler layer
        assert "has none; use 'cls', 'mean' or 'max'" in str(error)
        assert "pooler" not in MATRIX[model_type]["export-task"]
        return
    model.save_pretrained(tmp_path / "pooler")
    MultiTaskPipeline(str(folder)).tokenizer.save_pretrained(tmp_path / "pooler")
    status = cli.main(["export-task", "--model", str(tmp_path / "pooler"), "--task", "topic",
                       "--output", str(tmp_path / "topic")])
    if "sentence tasks with `pooling: pooler`" not in MATRIX[model_type]["export-task"]:
        assert status == 2 and "with its own pre-classifier layers" in capsys.readouterr().err
        return
    assert status == 0
    stock = AutoModelForSequenceClassification.from_pretrained(tmp_path / "topic").eval()
    inputs = MultiTaskPipeline(str(folder)).tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(stock(**inputs).logits, model.eval()(**inputs).logits["topic"], atol=1e-5, rtol=1e-5)


def test_export_sentence_transformers_encodes_as_embed(trained, tmp_path):
    from sentence_transformers import SentenceTransformer

    model_type, folder = trained
    assert MATRIX[model_type]["export-sentence-transformers"] == "yes"
    output = tmp_path / "st"
    assert cli.main(["export-sentence-transformers", "--model", str(folder), "--output", str(output)]) == 0
    texts = [text for text in TEXTS if text]
    theirs = SentenceTransformer(str(output), device="cpu").encode(texts)
    ours = MultiTaskPipeline(str(folder)).embed(texts, bf16=False)
    cosines = (theirs * ours).sum(axis=1) / np.linalg.norm(theirs, axis=1) / np.linalg.norm(ours, axis=1)
    assert cosines.min() >= 0.9999


def test_remote_code_reload_where_hf_mtl_is_not_importable(trained, tmp_path):
    model_type, folder = trained
    if model_type not in REMOTE_CODE_ARCHITECTURES:
        pytest.skip("remote code is checked on three families: " + ", ".join(REMOTE_CODE_ARCHITECTURES))
    model = AutoModel.from_pretrained(folder).eval()
    pipe = MultiTaskPipeline(str(folder))
    inputs = pipe.tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = {name: value.tolist() for name, value in model(**inputs).logits.items()}
    expected_tags = [result["tags"] for result in pipe(TEXTS[:3], return_tags=True, bf16=False)]
    script = f"""
import json, sys
sys.modules["hf_mtl"] = None  # any `import hf_mtl` now fails, as on a machine without the package
import torch, transformers
model = transformers.AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert not type(model).__module__.startswith("hf_mtl"), type(model).__module__
pipe = transformers.pipeline(model={str(folder)!r}, trust_remote_code=True)
inputs = pipe.tokenizer({TEXTS[:3]!r}, padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
tags = [result["tags"] for result in pipe({TEXTS[:3]!r}, return_tags=True, bf16=False)]
print(json.dumps({{"logits": {{name: value.tolist() for name, value in logits.items()}}, "tags": tags}}))
"""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["logits"] == expected
    assert answer["tags"] == expected_tags


def test_an_attention_the_encoder_lacks_is_one_error_naming_the_encoder(tmp_path, tokenizer, capsys):
    save_tiny_encoder(tmp_path / "encoder", tokenizer, "deberta-v2")
    tasks = [{"name": "topic", "type": "sequence_classification", "labels": ["a", "b"]}]
    message = "'sdpa' is not supported by the encoder DebertaV2Model, which supports eager"
    with pytest.raises(ValueError, match=message):
        MultiTaskModel.from_encoder(str(tmp_path / "encoder"), tasks=tasks, attn_implementation="sdpa")
    config = MultiTaskConfig(encoder=tiny_encoder_config("deberta-v2").to_dict(), tasks=tasks)
    config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="'flex_attention' is not supported by the encoder DebertaV2Model"):
        MultiTaskModel(config)
    # The run config: refused before any data is read, as one `error:` line.
    run = joint_config(tmp_path / "encoder", tmp_path / "no-data-needed", tmp_path / "out", attn_implementation="sdpa")
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert cli.main(["train", str(tmp_path / "run.json")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
