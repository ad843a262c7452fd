"""`hf-mtl info` and `hf-mtl evaluate` on a tiny trained folder: the summary matches the folder's files, and
evaluating the run's test split gives the run's own test metrics, report and predictions."""

import json
import shutil

import pytest
from safetensors.torch import load_file
from train_fixtures import joint_config, run_config, training_root

from hf_mtl import cli
from hf_mtl.folder_info import labels_text

pytestmark = pytest.mark.training

SPEED = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer):
    root, encoder, data = training_root(tmp_path_factory, tokenizer, "info")
    config = joint_config(encoder, data, root / "model")
    run_config(config, root)
    return {"root": root, "model": root / "model", "data": data, "config": root / "run_config.json"}


def run_cli(capsys, *argv):
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def task_metrics(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if not key.endswith(SPEED) and not key.endswith("_loss")}


def test_info_summarises_the_folder(capsys, trained):
    status, out, err = run_cli(capsys, "info", trained["model"], "--json")

    assert status == 0, err
    info = json.loads(out)
    assert [(task["name"], task["kind"]) for task in info["tasks"]] == [
        ("topic", "single_label_classification"), ("ner", "token_classification")]
    assert info["tasks"][0]["labels"] == ["business", "politics", "sports", "technology"]
    assert info["tasks"][1]["crf"] is False and info["tasks"][1]["labels"][0] == "O"
    assert info["encoder"] | {"name_or_path": None} == {
        "model_type": "bert", "name_or_path": None, "layers": 2, "hidden_size": 32, "max_positions": 128}
    weights = load_file(str(trained["model"] / "model.safetensors"))
    assert info["parameters"]["total"] == sum(tensor.numel() for tensor in weights.values())
    assert info["parameters"]["heads"] == sum(t.numel() for name, t in weights.items() if name.startswith("heads."))
    assert info["files"]["model.safetensors"] == (trained["model"] / "model.safetensors").stat().st_size
    assert info["pooling"] == "mean" and info["format"] == "torch"
    recorded = json.loads((trained["model"] / "test_results.json").read_text())
    assert info["metrics"]["test"] == {key[len("test_"):]: value for key, value in recorded.items()
                                       if not key.endswith(SPEED)}
    assert set(info["metrics"]) == {"eval", "test"}


def test_info_text_is_readable(capsys, trained):
    status, out, err = run_cli(capsys, "info", trained["model"])
    assert status == 0, err
    recorded = json.loads((trained["model"] / "test_results.json").read_text())
    assert "encoder:    bert from " in out and "2 layers, hidden size 32, 128 positions" in out
    assert "  topic  single_label_classification: 4 labels: business, politics, sports, technology" in out
    assert f"  test: 16 examples; score {recorded['test_score']:.4f}; topic accuracy " in out


def test_labels_are_abbreviated():
    assert labels_text([f"L{index}" for index in range(20)]) == "20 labels: L0, L1, L2, L3, L4, L5, L6, L7, ... (12 more)"
    assert labels_text(None) == "a number"


@pytest.mark.parametrize("folder, message", [("encoder", "not an hf_mtl model folder"), ("nowhere", "no such folder")])
def test_info_on_a_wrong_folder_is_one_line(capsys, trained, folder, message):
    status, _, err = run_cli(capsys, "info", trained["root"] / folder)
    assert status == 2 and err.startswith(f"error: model {trained['root'] / folder}: {message}") and err.count("\n") == 1


def test_evaluate_gives_the_runs_test_metrics_and_report(capsys, trained, tmp_path):
    output = tmp_path / "evaluation"
    status, out, err = run_cli(capsys, "evaluate", "--model", trained["model"], "--data", trained["data"] / "test.jsonl",
                               "--config", trained["config"], "--output", output)

    assert status == 0, err
    recorded = json.loads((trained["model"] / "test_results.json").read_text())
    written = json.loads((output / "test_results.json").read_text())
    assert task_metrics(written) == pytest.approx(task_metrics(recorded), abs=1e-6)
    assert written["test_loss"] == pytest.approx(recorded["test_loss"], abs=1e-5)
    assert "test_score" in out  # printed as Trainer logs a split's metrics
    for name in ("test_report.md", "test_predictions.jsonl"):
        assert (output / name).read_text() == (trained["model"] / name).read_text()
    assert sorted(path.name for path in output.iterdir()) == ["test_predictions.jsonl", "test_report.md",
                                                               "test_results.json"]


def test_evaluate_without_config_finds_columns_by_name_and_keeps_earlier_results(capsys, trained, tmp_path):
    output = tmp_path / "evaluation"
    data = trained["data"] / "test.jsonl"
    argv = ["evaluate", "--model", trained["model"], "--data", data, "--output", output]
    assert run_cli(capsys, *argv)[0] == 0

    status, _, err = run_cli(capsys, *argv, "--name", "heldout", "--task", "ner")

    assert status == 0, err
    recorded = json.loads((trained["model"] / "test_results.json").read_text())
    heldout = json.loads((output / "heldout_results.json").read_text())
    assert task_metrics(heldout) == pytest.approx(
        {key.replace("test_", "heldout_"): value for key, value in task_metrics(recorded).items()
         if "_topic_" not in key and key != "test_score"} | {"heldout_score": recorded["test_ner_f1"]}, abs=1e-6)
    assert (output / "heldout_report.md").read_text().startswith("# Evaluation report: heldout")
    assert (output / "test_results.json").is_file()  # the earlier evaluation is kept


def test_evaluate_errors_are_one_line(capsys, trained, tmp_path):
    data = tmp_path / "unlabelled.jsonl"
    data.write_text('{"tokens": ["anna", "visited", "paris"]}\n', encoding="utf-8")
    status, _, err = run_cli(capsys, "evaluate", "--model", trained["model"], "--data", data)
    assert status == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert f"error: --data {data}: no column holds labels of the model's tasks" in err

    status, _, err = run_cli(capsys, "evaluate", "--model", trained["model"], "--data", data, "--task", "pos")
    assert status == 2 and "error: --task pos: the model has no such task (it has topic, ner)\n" in err

    model_copy = shutil.copytree(trained["model"], tmp_path / "model")
    status, _, err = run_cli(capsys, "evaluate", "--model", model_copy, "--data", trained["data"] / "test.jsonl",
                             "--output", model_copy)
    assert status == 2 and err.startswith(f"error: --output {model_copy}:") and err.count("\n") == 1


def test_info_names_crf_lora_and_onnx_files(capsys, trained, tmp_path):
    folder = shutil.copytree(trained["model"], tmp_path / "exported")
    config = json.loads((folder / "config.json").read_text())
    config["tasks"][1]["crf"] = True
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "lora_adapter").mkdir()
    (folder / "model.safetensors").rename(folder / "model.onnx")  # only the name matters to `info`
    for name in ("test_results.json", "eval_results.json"):
        (folder / name).unlink()

    status, out, err = run_cli(capsys, "info", folder)

    assert status == 0, err
    assert out.startswith(f"{folder}: hf_mtl model (ONNX export)")
    assert "  ner    token_classification + CRF: 7 labels" in out
    assert "files:      model.onnx (" in out and " MiB), lora_adapter, tokenizer\n" in out
    assert "metrics:    none recorded" in out and "parameters:" not in out
