"""Crash and resume (SIGKILL, damaged checkpoint) and multi-process DDP on CPU, each in real subprocesses."""

import json
import sys

import pytest
import torch
from train_fixtures import KILLED_RUN, accelerate_launch, joint_config, run_process, training_root, weights, write_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    return training_root(tmp_path_factory, tokenizer, "resume")


def resume_config(encoder, data, output, mixed=False):
    # hidden dropout stays on: an exact match then also proves that the RNG state was restored
    config = joint_config(encoder, data, output, max_steps=6, save_strategy="steps", save_steps=2, do_eval=False,
                          do_predict=False, learning_rate=5e-3)
    if mixed:  # the same files as two separate data sets: one per task, mixed by the sampler
        config["datasets"] = {"ner_set": config["datasets"]["demo"], "topic_set": config["datasets"]["demo"]}
        config["tasks"][0]["dataset"], config["tasks"][1]["dataset"] = "topic_set", "ner_set"
        config["task_sampling"] = "temperature"
    return config


@pytest.fixture(scope="module")
def uninterrupted(setup):
    root, encoder, data = setup
    final = {}
    for mixed in (False, True):
        output = root / f"uninterrupted_{mixed}"
        result = run_process([sys.executable, "run_mtl.py", write_config(root, f"plain_{mixed}", resume_config(encoder, data, output, mixed))])
        assert result.returncode == 0, result.stderr[-3000:]
        final[mixed] = weights(output)
    return final


@pytest.mark.parametrize("kill_step, damage_newest, mixed", [(2, False, False), (4, True, False), (2, False, True)])
def test_killed_run_resumes_to_bit_identical_weights(setup, uninterrupted, kill_step, damage_newest, mixed):
    root, encoder, data = setup
    uninterrupted = uninterrupted[mixed]
    output = root / f"killed_{kill_step}_{mixed}"
    config_path = write_config(root, f"killed_{kill_step}_{mixed}", resume_config(encoder, data, output, mixed))

    killed = run_process([sys.executable, "-c", KILLED_RUN, config_path], {"KILL_AT_STEP": str(kill_step)})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (output / f"checkpoint-{kill_step}" / "trainer_state.json").is_file()
    assert not (output / "model.safetensors").exists()
    if damage_newest:  # as if killed while writing it
        newest = output / f"checkpoint-{kill_step}" / "model.safetensors"
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    resumed = run_process([sys.executable, "run_mtl.py", config_path, "--resume_from_checkpoint", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    if damage_newest:
        assert f"skipping damaged checkpoint {output / f'checkpoint-{kill_step}'}" in log
    final = weights(output)
    assert final.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, final[name]), name


def test_two_process_ddp_on_cpu(setup):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU: two gloo ranks; same per-device batch halves the
    steps, same global batch ends at the same metrics (within 0.5 points) as one process."""
    root, encoder, data = setup
    runs = {}
    for processes, batch_size in ((1, 8), (2, 8), (2, 4)):
        output = root / f"ddp_{processes}x{batch_size}"
        config = joint_config(encoder, data, output, max_steps=-1, num_train_epochs=20, save_strategy="no",
                              per_device_train_batch_size=batch_size, learning_rate=5e-3, head_learning_rate=2e-2,
                              do_predict=False,
                              ddp_timeout=120, logging_steps=5)
        path = write_config(root, f"ddp_{processes}x{batch_size}", config)
        result = run_process(accelerate_launch(processes) + ["run_mtl.py", path], timeout=400)
        assert result.returncode == 0, result.stderr[-4000:]
        assert f"world size {processes}" in result.stdout + result.stderr
        state = json.loads((output / "trainer_state.json").read_text())
        runs[processes, batch_size] = (state["global_step"], json.loads((output / "eval_results.json").read_text()))

    assert runs[1, 8][0] == 120 and runs[2, 8][0] == 60 and runs[2, 4][0] == 120
    for key in ("eval_topic_accuracy", "eval_ner_f1"):
        assert runs[1, 8][1][key] > 0.9, (key, runs)  # both tasks learned: the comparison means something
    metrics = [key for key in runs[1, 8][1] if key.startswith(("eval_topic_", "eval_ner_")) or key == "eval_score"]
    assert len(metrics) == 7
    for key in metrics:
        assert abs(runs[1, 8][1][key] - runs[2, 4][1][key]) <= 0.005, (key, runs)
