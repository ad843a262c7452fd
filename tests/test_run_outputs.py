"""After a tiny training run: reports, plots, model card and the Hub push hold the run's own numbers and files."""

import collections
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import confusion_counts, plotted_lines, record_saved_figures
from train_fixtures import joint_config, run_config, save_tiny_encoder, write_joint_data

import hf_mtl.hub
import hf_mtl.train

pytestmark = pytest.mark.training


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
    figures = record_saved_figures(patch)
    try:
        run_config(config, root)
    finally:
        patch.undo()
    log_history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    return {"output": output, "calls": calls, "figures": figures, "log_history": log_history}


def test_reports_hold_the_numbers_of_the_results_files(run):
    output = run["output"]
    for split in ("eval", "test"):
        results = json.loads((output / f"{split}_results.json").read_text())
        report = (output / f"{split}_report.md").read_text()
        for key in (f"{split}_ner_precision", f"{split}_ner_recall", f"{split}_ner_f1", f"{split}_topic_accuracy"):
            assert f"{results[key]:.4f}" in report, (key, results[key])
        assert "topic" in report and "ner" in report


def test_plots_draw_the_runs_own_losses_and_test_predictions(run):
    output, figures = run["output"], run["figures"]
    assert sorted(path.name for path in (output / "plots").iterdir()) == sorted(figures)
    logged = [entry for entry in run["log_history"] if "loss" in entry]
    assert len(logged) == 6  # max_steps 6, logging_steps 1
    losses = plotted_lines(figures["training_loss.png"])
    assert losses["total"] == ([float(entry["step"]) for entry in logged], [entry["loss"] for entry in logged])
    assert losses["ner"][1] == [entry["loss_ner"] for entry in logged]
    evaluations = [entry for entry in run["log_history"] if "eval_score" in entry]
    assert plotted_lines(figures["eval_metrics.png"])["score"][1] == [entry["eval_score"] for entry in evaluations]
    # The confusion matrix counts the test predictions the run wrote, one per example.
    predictions = [json.loads(line) for line in (output / "test_predictions.jsonl").read_text().splitlines()]
    expected = collections.Counter((row["topic"]["gold"], row["topic"]["pred"]) for row in predictions)
    assert confusion_counts(figures["confusion_matrix_topic.png"]) == dict(expected) and len(predictions) == 16


def test_model_card_yaml_parses_and_its_model_index_matches(run):
    output = run["output"]
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
    output, calls = run["output"], run["calls"]
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


@pytest.mark.subprocess
def test_finished_folder_loads_without_hf_mtl(run, tmp_path):
    output = run["output"]
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
