"""Crash and resume (SIGKILL, damaged checkpoint) and multi-process DDP on CPU, each in real subprocesses."""

import json
import shutil
import sys

import pytest
import torch
from conftest import requires_native_bf16
from train_fixtures import KILLED_RUN, accelerate_launch, joint_config, run_process, training_root, weights, write_config

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root, encoder, data = training_root(tmp_path_factory, tokenizer, "resume")
    (root / "harness.py").write_text(KILLED_RUN)
    return root, encoder, data


def torchrun(args, env_extra=None):
    """Two gloo ranks on the CPU; --standalone picks a free port."""
    return run_process([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args],
                       env_extra, timeout=400)


# "uneven": one data set per task, the topic task on the 16 rows of validation.jsonl, the NER task on the 48 of
# train.jsonl, so temperature sampling down-samples the NER rows (41 a 64-row epoch) and up-samples the topic rows
# (23): four steps of 16 rows an epoch, three epochs, killed in the middle of the third.
VARIANTS = {
    "single": {},
    # `bf16: true` trains in bf16 autocast where the CPU has native bf16: resuming must be exact there too
    "single_bf16": {"bf16": True},
    "uneven": {"mixed": True, "max_steps": 12, "save_steps": 5, "per_device_train_batch_size": 16,
               "train_sampling_strategy": "group_by_length"},
    "uneven_ddp": {"mixed": True, "max_steps": 12, "save_steps": 5, "per_device_train_batch_size": 8,
                   "ddp_timeout": 120},
}
UNEVEN_SIZES = {"topic_set": 16, "ner_set": 48}  # in the order prepare_datasets concatenates them (the tasks')


def resume_config(encoder, data, output, variant):
    options = dict(VARIANTS[variant])
    mixed = options.pop("mixed", False)
    # hidden dropout stays on: an exact match then also proves that the RNG state was restored
    config = joint_config(encoder, data, output, **{**dict(max_steps=6, save_strategy="steps", save_steps=2, do_eval=False,
                          do_predict=False, learning_rate=5e-3), **options})
    if mixed:  # one data set per task, mixed by the sampler
        topic_set = {**config["datasets"]["demo"], "data_files": {"train": "validation.jsonl"}}
        config["datasets"] = {"ner_set": config["datasets"]["demo"], "topic_set": topic_set}
        config["tasks"][0]["dataset"], config["tasks"][1]["dataset"] = "topic_set", "ner_set"
        config["task_sampling"] = "temperature"
    return config


def launch(variant, args, env_extra=None):
    return torchrun(args, env_extra) if variant.endswith("_ddp") else run_process([sys.executable, *args], env_extra)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    """variant -> (final weights, output folder) of the uninterrupted run, trained on first use."""
    root, encoder, data = setup
    final = {}

    def finished(variant):
        if variant not in final:
            output = root / f"uninterrupted_{variant}"
            config_path = write_config(root, f"plain_{variant}", resume_config(encoder, data, output, variant))
            result = launch(variant, [str(root / "harness.py"), config_path], {"RECORD_ROWS": str(output) + ".rows"})
            assert result.returncode == 0, result.stderr[-3000:]
            final[variant] = weights(output), output
        return final[variant]

    return finished


@pytest.mark.parametrize("kill_step, damage_newest, variant", [
    (2, False, "single"), (4, True, "single"), (10, False, "uneven"),
    pytest.param(2, False, "single_bf16", marks=requires_native_bf16),
])
def test_killed_run_resumes_to_bit_identical_weights(setup, uninterrupted, kill_step, damage_newest, variant):
    root, encoder, data = setup
    uninterrupted, _ = uninterrupted(variant)
    output = root / f"killed_{kill_step}_{variant}"
    config_path = write_config(root, f"killed_{kill_step}_{variant}", resume_config(encoder, data, output, variant))

    killed = launch(variant, [str(root / "harness.py"), config_path], {"KILL_AT_STEP": str(kill_step)})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (output / f"checkpoint-{kill_step}" / "trainer_state.json").is_file()
    assert not (output / "model.safetensors").exists()
    if damage_newest:  # as if killed while writing it
        newest = output / f"checkpoint-{kill_step}" / "model.safetensors"
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    resumed = launch(variant, ["run_mtl.py", config_path, "--resume_from_checkpoint", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    if damage_newest:
        assert f"skipping damaged checkpoint {output / f'checkpoint-{kill_step}'}" in log
    ran_bf16 = VARIANTS[variant].get("bf16", False)
    assert json.loads((output / "training_args.json").read_text())["bf16"] is ran_bf16  # the precision that ran
    final = weights(output)
    assert final.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, final[name]), name


def test_ddp_run_resumed_in_the_third_epoch_ends_at_bit_identical_weights(setup, uninterrupted):
    """Two ranks resumed from the uninterrupted run's checkpoint-10 (mid-epoch 2: the same checkpoint a run killed
    there leaves; the kill itself is tested above) must draw epoch 2's mixture again, not epoch 0's."""
    root, encoder, data = setup
    reference, reference_output = uninterrupted("uneven_ddp")
    output = root / "resumed_uneven_ddp"
    shutil.copytree(reference_output / "checkpoint-10", output / "checkpoint-10")
    config_path = write_config(root, "resumed_uneven_ddp", resume_config(encoder, data, output, "uneven_ddp"))
    resumed = torchrun(["run_mtl.py", config_path, "--resume_from_checkpoint", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (output / "checkpoint-5").exists()  # it did resume: a run from the start would have saved step 5
    final = weights(output)
    assert final.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(tensor, final[name]), name


def test_ddp_ranks_train_on_disjoint_halves_of_each_epochs_draw(uninterrupted):
    """Two ranks, 8 rows a batch each: epoch e's 64-row draw goes out in batches of 8, alternately to rank 0 and 1."""
    from hf_mtl.data import TrainMixture, sampling_probabilities

    _, output = uninterrupted("uneven_ddp")
    probabilities = sampling_probabilities(UNEVEN_SIZES, "temperature", 2.0)
    mixture = TrainMixture(tuple(UNEVEN_SIZES.values()), tuple(probabilities.values()), seed=7)
    assert mixture.counts == [23, 41]
    fetched = {rank: [list(map(int, line.split())) for line in open(f"{output}.rows.{rank}")] for rank in (0, 1)}
    assert [len(fetched[rank]) for rank in (0, 1)] == [12, 12]  # 3 epochs x 4 batches, nothing else read
    draws = []
    for epoch in range(3):
        draw = mixture.epoch_indices(epoch).tolist()
        batches = [draw[start : start + 8] for start in range(0, 64, 8)]
        assert fetched[0][4 * epoch : 4 * epoch + 4] == batches[0::2]
        assert fetched[1][4 * epoch : 4 * epoch + 4] == batches[1::2]
        draws.append(draw)
    assert draws[0] != draws[1] != draws[2]
    ner_rows = [{index for index in draw if index >= 16} for draw in draws]
    assert len(ner_rows[0]) == 41 and ner_rows[0] != ner_rows[1]  # the down-sampled set shows other rows
    assert ner_rows[0] | ner_rows[1] == set(range(16, 64))


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
