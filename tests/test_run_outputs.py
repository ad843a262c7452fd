"""After a tiny training run: reports, plots, model card and the Hub push hold the run's own numbers and files."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from train_fixtures import joint_config, run_config, save_tiny_encoder, write_joint_data

import hf_mtl.hub
import hf_mtl.train


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("run_outputs")
    encoder = save_tiny_encoder(root / "encoder", tokenizer)
    data = write_joint_data(root / "data")
    output = root / "out"
    calls = []
    patch = pytest.MonkeyPatch()
    # Only the network is replaced: the preflight's check of the Hub (a token, online) and the two upload calls;
    # everything else runs for real.
    patch.setattr(hf_mtl.train, "check_hub_access", lambda token=None, where="push_to_hub": "someone")
    patch.setattr(hf_mtl.hub, "create_repo", lambda repo_id, **kwargs: calls.append(("create_repo", repo_id, kwargs))
                  or type("RepoUrl", (), {"repo_id": repo_id})())
    patch.setattr(hf_mtl.hub, "upload_folder", lambda **kwargs: calls.append(("upload_folder", kwargs)))
    config = joint_config(encoder, data, output, max_steps=6, eval_strategy="steps", eval_steps=3,
                          save_strategy="steps", save_steps=3, push_to_hub=True, hub_model_id="someone/tiny-mtl")
    try:
        run_config(config, root)
    finally:
        patch.undo()
    return output, calls


def test_reports_hold_the_numbers_of_the_results_files(run):
    output, _ = run
    for split in ("eval", "test"):
        results = json.loads((output / f"{split}_results.json").read_text())
        report = (output / f"{split}_report.md").read_text()
        for key in (f"{split}_ner_precision", f"{split}_ner_recall", f"{split}_ner_f1", f"{split}_topic_accuracy"):
            assert f"{results[key]:.4f}" in report, (key, results[key])
        assert "topic" in report and "ner" in report


def test_plots_exist_as_png(run):
    output, _ = run
    for name in ("training_loss.png", "eval_metrics.png", "confusion_matrix_topic.png"):
        path = output / "plots" / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_model_card_yaml_parses_and_its_model_index_matches(run):
    output, _ = run
    card = (output / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---\n")[1])
    assert "hf_mtl" in front_matter["tags"]
    results = json.loads((output / "all_results.json").read_text())
    entries = front_matter["model-index"][0]["results"]
    seen = 0
    for entry in entries:
        split = {"validation": "eval", "test": "test"}[entry["dataset"]["split"]]
        for metric in entry["metrics"]:
            key = {"f1": "macro_f1" if metric.get("args") else "f1"}.get(metric["type"], metric["type"])
            assert metric["value"] == pytest.approx(results[f"{split}_{entry['task']['name']}_{key}"])
            seen += 1
    assert seen >= 8
    assert "trust_remote_code=True" in card


def test_push_uploads_the_finished_folder_with_our_card(run):
    output, calls = run
    assert calls[0][0] == "create_repo" and calls[0][1] == "someone/tiny-mtl"
    upload = calls[1][1]
    assert upload["repo_id"] == "someone/tiny-mtl" and str(upload["folder_path"]) == str(output)
    files = hf_mtl.hub.files_to_upload(output)
    for name in ("model.safetensors", "config.json", "configuration_mtl.py", "modeling_mtl.py", "pipeline_mtl.py",
                 "tokenizer.json", "README.md", "eval_report.md", "test_report.md", "eval_results.json",
                 "plots/training_loss.png"):
        assert name in files, name
    assert not any(name.startswith("checkpoint-") or name.endswith(".bin") for name in files)
    assert "hf_mtl" in (output / "README.md").read_text()  # our card, not Trainer's


def test_finished_folder_loads_without_hf_mtl(run, tmp_path):
    output, _ = run
    script = f"""
import sys
sys.modules["hf_mtl"] = None
from transformers import AutoModel
model = AutoModel.from_pretrained({str(output)!r}, trust_remote_code=True)
print(model.config.task_names)
"""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "['topic', 'ner']" in result.stdout
