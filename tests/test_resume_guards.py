"""Checkpoints of a training run: a new run does not inherit an earlier run's checkpoints, a resume must match the run
that wrote its checkpoint, damaged optimizer/scheduler/RNG files are skipped, a failed (full-disk) save leaves no
half-written checkpoint, `train --help`, and SIGTERM / SIGINT stop at a step's end with a checkpoint."""

import errno
import json
import logging
import os
import shutil
import sys

import pytest
from train_fixtures import joint_config, run_config, run_process, write_config, write_joint_data
from transformers import Trainer

from hf_mtl.errors import ConfigError, HfMtlError, ModelError
from hf_mtl.train import resolve_resume
from hf_mtl.checkpoints import RUN_RECORD, check_checkpoint, last_complete_checkpoint

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_joint_data(tmp_path_factory.mktemp("data"), sizes=(32, 8, 8))


def checkpoint_config(encoder_dir, data_dir, output, **overrides):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2, do_eval=False, do_predict=False)
    return joint_config(encoder_dir, data_dir, output, **{**settings, **overrides})


def checkpoints(folder):
    return sorted(path.name for path in folder.glob("checkpoint-*"))


def record(checkpoint):
    return json.loads((checkpoint / RUN_RECORD).read_text())


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, encoder_dir, data_dir):
    """A finished run with checkpoint-2 and checkpoint-4, copied by the tests that change it."""
    root = tmp_path_factory.mktemp("finished")
    run_config(checkpoint_config(encoder_dir, data_dir, root / "run"), root)
    return root / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


def test_a_new_run_replaces_the_earlier_runs_checkpoints(run_copy, tmp_path, encoder_dir, data_dir, caplog):
    assert checkpoints(run_copy) == ["checkpoint-2", "checkpoint-4"]
    config = checkpoint_config(encoder_dir, data_dir, run_copy, max_steps=3, save_steps=3, learning_rate=2e-3, seed=11)
    with caplog.at_level(logging.WARNING, logger="hf_mtl"):
        run_config(config, tmp_path)
    assert "2 checkpoint(s) of an earlier run, which this run does not resume" in caplog.text
    assert checkpoints(run_copy) == ["checkpoint-3"]
    assert not (tmp_path / ".run.hf_mtl-earlier-checkpoints").exists()  # removed once the run trained
    assert record(run_copy / "checkpoint-3")["training"]["learning_rate"] == 2e-3
    assert resolve_resume(True, str(run_copy)) == str(run_copy / "checkpoint-3")


def test_a_new_run_that_fails_gives_the_earlier_runs_checkpoints_back(run_copy, tmp_path, encoder_dir, data_dir,
                                                                     monkeypatch):
    from transformers import Trainer

    from hf_mtl.errors import HfMtlError

    def fail(self, *args, **kwargs):
        assert checkpoints(run_copy) == []  # set aside while this run trains
        raise HfMtlError("training failed")

    monkeypatch.setattr(Trainer, "train", fail)
    config = checkpoint_config(encoder_dir, data_dir, run_copy, max_steps=3, save_steps=3, learning_rate=2e-3, seed=11)
    with pytest.raises(HfMtlError, match="training failed"):
        run_config(config, tmp_path)
    assert checkpoints(run_copy) == ["checkpoint-2", "checkpoint-4"]
    assert not (tmp_path / ".run.hf_mtl-earlier-checkpoints").exists()


def test_an_unchanged_resume_from_json_true_works_and_names_its_checkpoint(run_copy, tmp_path, encoder_dir, data_dir,
                                                                          caplog):
    config = checkpoint_config(encoder_dir, data_dir, run_copy, resume_from_checkpoint=True,  # JSON true
                               logging_steps=2, save_total_limit=3, per_device_eval_batch_size=4)  # free to change
    with caplog.at_level(logging.INFO, logger="hf_mtl"):
        run_config(config, tmp_path)
    assert f"resuming from {run_copy / 'checkpoint-4'}" in caplog.text
    assert checkpoints(run_copy) == ["checkpoint-2", "checkpoint-4"]  # a resume keeps its run's checkpoints


@pytest.mark.parametrize("change, expected", [
    ({"learning_rate": 2e-3}, "learning_rate: checkpoint 0.001, run 0.002"),
    ({"pooling": "cls"}, "pooling: checkpoint 'mean', run 'cls'"),
    ({"seed": 8, "per_device_train_batch_size": 4}, "per_device_train_batch_size: checkpoint 8, run 4; seed: checkpoint 7, run 8"),
    ({"max_seq_length": 24}, "max_seq_length: checkpoint 32, run 24"),
    ("labels", "tasks.topic.labels: checkpoint ['business', 'politics', 'sports', 'technology'], run ['technology',"),
    ("crf", "tasks.ner.crf: checkpoint None, run True"),
    ("task", "tasks: checkpoint ['topic', 'ner'], run ['topic', 'ner', 'topic2']"),
])
def test_a_resume_that_changes_the_run_is_refused_before_training(run_copy, tmp_path, encoder_dir, data_dir, change,
                                                                  expected):
    config = checkpoint_config(encoder_dir, data_dir, run_copy, resume_from_checkpoint=True)
    if change == "labels":
        config["tasks"][0]["labels"] = ["technology", "sports", "politics", "business"]
    elif change == "crf":
        config["tasks"][1]["crf"] = True
    elif change == "task":
        config["tasks"].append({"name": "topic2", "type": "sequence_classification", "dataset": "demo",
                                "label_column": "topic"})
    else:
        config.update(change)
    before = {path: path.stat().st_mtime_ns for path in run_copy.rglob("*")}
    with pytest.raises(ConfigError) as error:
        run_config(config, tmp_path)
    message = str(error.value)
    assert message.startswith(f"resume_from_checkpoint {run_copy / 'checkpoint-4'}: this run differs"), message
    assert expected in message
    assert {path: path.stat().st_mtime_ns for path in run_copy.rglob("*")} == before


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"])
def test_a_damaged_resume_file_makes_the_checkpoint_skipped(finished_run, tmp_path, name, caplog):
    folder = shutil.copytree(finished_run / "checkpoint-4", tmp_path / "checkpoint-4")
    shutil.copytree(finished_run / "checkpoint-2", tmp_path / "checkpoint-2")
    check_checkpoint(str(folder))  # intact
    truncate(folder / name)
    with caplog.at_level(logging.WARNING, logger="hf_mtl"):
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert f"skipping damaged checkpoint {folder}" in caplog.text
    with pytest.raises(ModelError, match=f"resume_from_checkpoint {folder}: the checkpoint is damaged"):
        resolve_resume(str(folder), str(tmp_path))
    truncate(tmp_path / "checkpoint-2" / "optimizer.pt")
    with pytest.raises(ModelError, match="every checkpoint in .* is damaged"):
        last_complete_checkpoint(str(tmp_path))


def test_a_resume_past_a_truncated_optimizer_continues_from_the_previous_checkpoint(run_copy, tmp_path, encoder_dir,
                                                                                    data_dir, caplog):
    truncate(run_copy / "checkpoint-4" / "optimizer.pt")
    config = checkpoint_config(encoder_dir, data_dir, run_copy, resume_from_checkpoint=True)
    with caplog.at_level(logging.INFO, logger="hf_mtl"):
        run_config(config, tmp_path)
    assert f"skipping damaged checkpoint {run_copy / 'checkpoint-4'}" in caplog.text
    assert f"resuming from {run_copy / 'checkpoint-2'}" in caplog.text
    check_checkpoint(str(run_copy / "checkpoint-4"))  # written again by the resumed run


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 10624 vs 10516")])
def test_a_checkpoint_save_that_fails_is_removed_and_named(tmp_path, encoder_dir, data_dir, monkeypatch, failure):
    original = Trainer._save_optimizer_and_scheduler

    def fill_the_disk(self, output_dir):
        if self.state.global_step < 4:
            return original(self, output_dir)
        with open(os.path.join(output_dir, "optimizer.pt"), "wb") as handle:
            handle.write(b"PK\x03\x04 half of it")
        raise failure

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fill_the_disk)
    output = tmp_path / "run"
    with pytest.raises(HfMtlError) as error:
        run_config(checkpoint_config(encoder_dir, data_dir, output), tmp_path)
    message = str(error.value)
    if isinstance(failure, OSError):  # a full disk: outputs.disk_full_error's line
        assert message.startswith(f"output_dir {output / 'checkpoint-4'}: no space left on the file system"), message
        assert "the previous one is" in message and "free there" in message
        assert "checkpoint-2 is kept: resume from it with --resume_from_checkpoint true" in message
    else:  # a failed write on a disk with room
        assert message.startswith(f"saving checkpoint {output / 'checkpoint-4'} failed: RuntimeError"), message
        assert "(the size of checkpoint-2)" in message and f"free in {output}" in message
    assert "half-written checkpoint was removed" in message
    assert checkpoints(output) == ["checkpoint-2"]  # the complete one stays, to resume from
    check_checkpoint(str(output / "checkpoint-2"))
    assert not (output / "model.safetensors").exists()


@pytest.mark.subprocess
def test_train_help_lists_the_options():
    for command, usage in (([sys.executable, "run_mtl.py", "--help"], "usage: python run_mtl.py CONFIG.json"),
                           ([sys.executable, "-m", "hf_mtl.cli", "train", "--help"], "usage: hf-mtl train CONFIG.json")):
        result = run_process(command, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith(usage), result.stdout[:300]
        for option in ("--model_name_or_path", "--tasks", "--learning_rate", "--freeze_layers", "--resume_from_checkpoint"):
            assert option in result.stdout


# Sends itself SIGNAL during the first training step, as a Ctrl-C or a preemption notice would arrive.
SIGNALLED_RUN = """
import os, signal, sys
from transformers import Trainer
original_step = Trainer.training_step
def step_then_signal(self, *args, **kwargs):
    loss = original_step(self, *args, **kwargs)
    if self.state.global_step == 0:
        os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
    return loss
Trainer.training_step = step_then_signal
from hf_mtl.train import cli_main
cli_main(sys.argv[1:])
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
@pytest.mark.subprocess
def test_a_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, encoder_dir, data_dir, signal_name):
    (tmp_path / "harness.py").write_text(SIGNALLED_RUN)
    output = tmp_path / "run"
    config_path = write_config(tmp_path, "run", checkpoint_config(encoder_dir, data_dir, output, save_strategy="no"))
    # A command-line option of the run is part of the resume command, or the resume would be refused as a change.
    stopped = run_process([sys.executable, str(tmp_path / "harness.py"), config_path, "--learning_rate", "0.002"],
                          {"SIGNAL": signal_name})
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: interrupted at step 1; checkpoint saved in {output / 'checkpoint-1'}; resume with: "
                      f"hf-mtl train {config_path} --learning_rate 0.002 --resume_from_checkpoint true"]
    assert "Traceback" not in stopped.stderr + stopped.stdout
    check_checkpoint(str(output / "checkpoint-1"))
    assert not (output / "model.safetensors").exists()
    if signal_name == "SIGINT":
        return
    resumed = run_process([sys.executable, "run_mtl.py", *errors[0].split("resume with: hf-mtl train ")[1].split()])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {output / 'checkpoint-1'}" in resumed.stdout + resumed.stderr
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 4
    assert (output / "model.safetensors").is_file()


def test_a_ctrl_c_before_training_is_one_line_and_leaves_no_output(tmp_path, encoder_dir, data_dir, monkeypatch, capsys):
    from hf_mtl.train import cli_main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("hf_mtl.train.load_data", interrupted)
    config_path = write_config(tmp_path, "run", checkpoint_config(encoder_dir, data_dir, tmp_path / "run"))
    with pytest.raises(SystemExit) as exit_info:
        cli_main([config_path])
    assert exit_info.value.code == 130
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: interrupted; an unfinished run leaves output_dir {tmp_path / 'run'} as it was, plus the "
                      f"checkpoints it saved (resume with: hf-mtl train {config_path} --resume_from_checkpoint true)"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.json"]
