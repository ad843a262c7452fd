"""Training at scale on CPU, each in real subprocesses with 2 gloo processes: FSDP2 against DDP (same global batch),
FSDP resume (sharded and full state dict), two torchrun "nodes" on localhost, DeepSpeed ZeRO-2/3, LoRA under DDP and
FSDP; and one config on any machine (device choice, TensorBoard fallback)."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, tiny_model
from train_fixtures import (KILLED_RUN, accelerate_launch, joint_config, run_config, run_process, training_root,
                            weights, write_config, write_joint_data)

FSDP_CONFIG = REPO_ROOT / "configs" / "accelerate" / "fsdp.yaml"
DEEPSPEED_CONFIGS = REPO_ROOT / "configs" / "deepspeed"
METRICS = ("eval_topic_accuracy", "eval_topic_macro_f1", "eval_ner_f1", "eval_ner_precision", "eval_ner_recall",
           "eval_ner_accuracy", "eval_score")
PREPROCESSED = "Tokenizing demo train: 100%"  # the datasets progress bar of a process that tokenized, not loaded


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    return training_root(tmp_path_factory, tokenizer, "scale")


def scale_config(setup, output, **overrides) -> dict:
    """30 steps of global batch 8 (2 processes x 4), no checkpoints unless asked. Uncertainty weighting gives the
    model a parameter outside encoder and heads, which FSDP must shard and save too."""
    _, encoder, data = setup
    settings = dict(max_steps=-1, num_train_epochs=5, per_device_train_batch_size=4, learning_rate=5e-3,
                    head_learning_rate=2e-2, loss_weighting="uncertainty", do_predict=False, save_strategy="no",
                    ddp_timeout=120, logging_steps=5)
    settings.update(overrides)
    config = joint_config(encoder, data, output, **settings)
    del config["use_cpu"]  # as in the configs users run: the machine picks the CPU
    return config


def launch(setup, name, launcher, config, *extra, env=None, expect_ok=True):
    result = run_process(launcher + [write_config(setup[0], name, config), *extra], env, timeout=400)
    log = result.stdout + result.stderr
    if expect_ok:
        assert result.returncode == 0, log[-6000:]
    return log


def torchrun(processes=2, *options) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), *options]


def eval_metrics(output) -> dict:
    return json.loads((output / "eval_results.json").read_text())


def assert_same_training(a, b, weight_tolerance=1e-3):
    """Two runs of the same data and global batch: the same metrics (within 0.5 points) and nearly the same weights."""
    metrics_a, metrics_b = eval_metrics(a), eval_metrics(b)
    for key in METRICS:
        assert abs(metrics_a[key] - metrics_b[key]) <= 0.005, (key, metrics_a, metrics_b)
    weights_a, weights_b = weights(a), weights(b)
    assert weights_a.keys() == weights_b.keys()
    for key, tensor in weights_a.items():
        assert torch.allclose(tensor, weights_b[key], atol=weight_tolerance), key


@pytest.fixture(scope="module")
def ddp_run(setup):
    output = setup[0] / "ddp"
    # a fresh datasets cache: the run shows whether one process or both tokenized
    log = launch(setup, "ddp", accelerate_launch(2) + ["run_mtl.py"], scale_config(setup, output),
                 env={"HF_DATASETS_CACHE": str(setup[0] / "cache_ddp")})
    return output, log


@pytest.fixture(scope="module")
def fsdp_run(setup):
    output = setup[0] / "fsdp"
    config = scale_config(setup, output, save_strategy="steps", save_steps=20)
    return output, launch(setup, "fsdp", accelerate_launch(config_file=FSDP_CONFIG) + ["run_mtl.py"], config)


@pytest.mark.multiprocess
def test_fsdp_trains_like_ddp_and_saves_the_same_folder(ddp_run, fsdp_run):
    (ddp, ddp_log), (fsdp, fsdp_log) = ddp_run, fsdp_run
    for log in (ddp_log, fsdp_log):
        assert "machine: cpu (no GPU found), 2 process(es), float32" in log
    assert eval_metrics(ddp)["eval_score"] > 0.6, eval_metrics(ddp)  # learned: the comparison means something
    assert_same_training(ddp, fsdp)
    # FSDP really ran: its own checkpoint files (accelerate's), beside the loadable model.safetensors
    assert (fsdp / "checkpoint-20" / "pytorch_model_fsdp.bin").is_file()
    assert (fsdp / "checkpoint-20" / "model.safetensors").is_file()  # FULL_STATE_DICT: each checkpoint loads
    # the final folder is a DDP run's: one model.safetensors, our code files and auto_map, no torch FSDP files
    names = {path.name for path in fsdp.iterdir()}
    assert {"model.safetensors", "modeling_mtl.py", "configuration_mtl.py", "pipeline_mtl.py"} <= names
    assert not [name for name in names if name.startswith(("_fsdp", "pytorch_model_fsdp"))], names
    assert json.loads((fsdp / "config.json").read_text())["auto_map"] == json.loads((ddp / "config.json").read_text())["auto_map"]
    log_variances = weights(fsdp)["task_log_variances"]
    assert log_variances.abs().min() > 0  # the uncertainty weights were sharded and trained with the rest

    from transformers import AutoModel

    reloaded = AutoModel.from_pretrained(str(fsdp))
    assert torch.equal(reloaded.task_log_variances.detach(), log_variances)


@pytest.mark.multiprocess
def test_fsdp_sharded_checkpoint_resumes_after_a_kill(setup, fsdp_run):
    """SHARDED_STATE_DICT checkpoints (each process writes its shard) resume to the weights of the uninterrupted
    run (which used FULL_STATE_DICT: the state dict type changes how checkpoints are written, not the training)."""
    root = setup[0]
    sharded = root / "fsdp_sharded.yaml"
    sharded.write_text(FSDP_CONFIG.read_text().replace("FULL_STATE_DICT", "SHARDED_STATE_DICT"))
    killed_run = root / "killed_run.py"
    killed_run.write_text(KILLED_RUN)
    output = root / "fsdp_killed"
    config = scale_config(setup, output, save_strategy="steps", save_steps=10)
    launcher = accelerate_launch(config_file=sharded)
    killed = launch(setup, "fsdp_killed", launcher + [str(killed_run)], config, env={"KILL_AT_STEP": "10"},
                    expect_ok=False)
    checkpoint = output / "checkpoint-10"
    assert (checkpoint / "pytorch_model_fsdp_0" / ".metadata").is_file(), killed[-4000:]
    assert not (checkpoint / "model.safetensors").exists() and not (output / "model.safetensors").exists()

    launch(setup, "fsdp_killed", launcher + ["run_mtl.py"], config, "--resume_from_checkpoint", "true",
           "--save_strategy", "no")
    final, uninterrupted = weights(output), weights(fsdp_run[0])
    assert final.keys() == uninterrupted.keys()
    for key, tensor in uninterrupted.items():
        assert torch.equal(tensor, final[key]), key


@pytest.mark.multiprocess
def test_fsdp_full_state_dict_checkpoint_resumes(setup, fsdp_run):
    output = setup[0] / "fsdp_resumed"
    launch(setup, "fsdp_resumed", accelerate_launch(config_file=FSDP_CONFIG) + ["run_mtl.py"],
           scale_config(setup, output), "--resume_from_checkpoint", str(fsdp_run[0] / "checkpoint-20"))
    final, uninterrupted = weights(output), weights(fsdp_run[0])
    for key, tensor in uninterrupted.items():
        assert torch.equal(tensor, final[key]), key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.multiprocess
def test_two_nodes_on_localhost_train_like_one_node(setup, ddp_run):
    """`torchrun --nnodes 2 --nproc_per_node 1` with c10d rendezvous: the same weights as 2 processes on one node.
    Each "node" has its own datasets cache, as separate machines do: preprocessing runs once per node, by its main
    process; on one node the second process loads the first one's cache."""
    root = setup[0]
    output = root / "two_nodes"
    config_path = write_config(root, "two_nodes", scale_config(setup, output))
    port = free_port()
    nodes = []
    for node in range(2):
        command = torchrun(1, "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                           "--rdzv-id", "hf_mtl_test") + ["run_mtl.py", config_path]
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                   HF_DATASETS_CACHE=str(root / f"cache_node{node}"))
        nodes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [node.communicate(timeout=400)[0] for node in nodes]
    for node, log in zip(nodes, logs):
        assert node.returncode == 0, log[-6000:]
    assert any("world size 2" in log for log in logs)
    single, multi = weights(ddp_run[0]), weights(output)
    assert single.keys() == multi.keys()
    for key, tensor in single.items():
        assert torch.equal(tensor, multi[key]), key
    assert [log.count(PREPROCESSED) for log in logs] == [1, 1]
    assert ddp_run[1].count(PREPROCESSED) == 1


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.multiprocess
def test_deepspeed_zero_on_cpu_trains_like_ddp(setup, ddp_run, stage):
    """ZeRO-2 (optimizer states and gradients sharded) and ZeRO-3 (parameters too) run on CPU processes: DeepSpeed's
    CPU accelerator communicates over gloo (it JIT-builds its shared-memory op with the C++ compiler)."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install 'hf_mtl[deepspeed]')")
    output = setup[0] / f"zero{stage}"
    launch(setup, f"zero{stage}", torchrun(2) + ["run_mtl.py"],
           scale_config(setup, output, save_strategy="steps", save_steps=20),
           "--deepspeed", str(DEEPSPEED_CONFIGS / f"zero{stage}.json"))
    assert (output / "checkpoint-20" / "global_step20" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file()
    assert_same_training(ddp_run[0], output)


def lora_config(setup, output):
    return scale_config(setup, output, max_steps=6, save_strategy="steps", save_steps=3, lora={"r": 4}, freeze_layers=1)


@pytest.mark.multiprocess
def test_lora_under_ddp_and_fsdp(setup):
    """LoRA with freeze_layers: the same training under DDP and FSDP; merged weights in model.safetensors, the
    adapter beside them; heads and the upper layer's adapters train, the frozen lower layer and all base weights
    outside the adapted projections stay as they were."""
    root = setup[0]
    outputs = {"ddp": root / "lora_ddp", "fsdp": root / "lora_fsdp"}
    launch(setup, "lora_ddp", accelerate_launch(2) + ["run_mtl.py"], lora_config(setup, outputs["ddp"]))
    launch(setup, "lora_fsdp", accelerate_launch(config_file=FSDP_CONFIG) + ["run_mtl.py"],
           lora_config(setup, outputs["fsdp"]))
    assert_same_training(outputs["ddp"], outputs["fsdp"], weight_tolerance=1e-4)

    from safetensors.torch import load_file

    initial = {f"encoder.{key}": value for key, value in load_file(str(setup[1] / "model.safetensors")).items()}
    for output in outputs.values():
        trained = weights(output)
        assert set(initial) - {key for key in initial if key.startswith("encoder.pooler.")} <= set(trained)
        for key, value in initial.items():
            if key.startswith("encoder.pooler."):
                continue
            adapted = ".layer.1.attention.self.query." in key or ".layer.1.attention.self.value." in key
            adapted = adapted and key.endswith(".weight")
            assert torch.equal(trained[key], value) != adapted, key
        assert (output / "lora_adapter" / "adapter_model.safetensors").is_file()
        assert (output / "checkpoint-3" / "lora_adapter" / "adapter_model.safetensors").is_file()


def test_fsdp_units_are_the_encoder_layers():
    """FSDP wraps the encoder's `_no_split_modules` except the one holding the input embeddings (accelerate shards
    those on their own, and twice-sharded parameters fail)."""
    from hf_mtl.distributed import fsdp_layer_classes

    tasks = [{"name": "topic", "type": "sequence_classification", "labels": ["a", "b"]}]
    for model_type, expected in (("bert", ["BertLayer"]), ("distilbert", ["TransformerBlock"])):
        model = tiny_model(tasks, model_type)
        assert fsdp_layer_classes(model) == expected, model._no_split_modules


# ---- one config, any machine ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gpu, gpu_bf16, values, overrides, expected",
    [
        (False, False, {"bf16": True}, [], {"bf16": True, "use_cpu": True}),
        (False, False, {"bf16": True, "use_cpu": False}, [], {"bf16": True, "use_cpu": False}),  # explicit: kept
        (False, False, {"bf16": True}, ["--use_cpu", "false"], {"bf16": True}),  # explicit on the command line
        (True, True, {"bf16": True}, [], {"bf16": True}),
        (True, False, {"bf16": True}, [], {"bf16": False}),  # e.g. a V100: float32
        (True, False, {"bf16": True, "use_cpu": True}, [], {"bf16": True, "use_cpu": True}),  # CPU: decided later
    ],
)
def test_machine_defaults(monkeypatch, gpu, gpu_bf16, values, overrides, expected):
    import transformers.utils

    from hf_mtl import machine

    monkeypatch.setattr(machine, "has_accelerator", lambda: gpu)
    monkeypatch.setattr(transformers.utils, "is_torch_bf16_gpu_available", lambda: gpu_bf16)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert machine.machine_defaults(values, overrides) == expected


def no_gpu_here():
    from hf_mtl.machine import has_accelerator

    return not has_accelerator()


@pytest.mark.skipif(not no_gpu_here(), reason="checks the choice of a machine without GPU")
@pytest.mark.training
def test_a_gpu_config_runs_on_this_cpu_without_tensorboard(tmp_path, tiny_encoder, monkeypatch, caplog):
    """`bf16` without `use_cpu` and `report_to: tensorboard` with tensorboard missing: the run trains on the CPU
    (bf16 where the CPU has it natively), says so in one line, and warns once about TensorBoard."""
    from hf_mtl.precision import cpu_has_native_bf16

    for module in ("tensorboard", "tensorboardX"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: find_spec() answers None
    data = write_joint_data(tmp_path / "data")
    config = joint_config(tiny_encoder, data, tmp_path / "out", bf16=True, report_to="tensorboard", do_predict=False)
    del config["use_cpu"]
    with caplog.at_level("INFO", logger="hf_mtl"):
        run_config(config, tmp_path)
    assert "machine: cpu (no GPU found), 1 process(es)" in caplog.text
    assert "tensorboard is not installed" in caplog.text
    recorded = json.loads((tmp_path / "out" / "training_args.json").read_text())
    assert recorded["use_cpu"] is True and recorded["report_to"] == []
    assert recorded["bf16"] is cpu_has_native_bf16()
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.skipif(not no_gpu_here(), reason="checks the choice of a machine without GPU")
def test_explicit_use_cpu_false_without_gpu_is_a_config_error(tmp_path, tiny_encoder):
    from hf_mtl.errors import ConfigError

    config = joint_config(tiny_encoder, tmp_path / "data", tmp_path / "out", bf16=True, use_cpu=False)
    with pytest.raises(ConfigError, match="use_cpu"):
        run_config(config, tmp_path)


@pytest.mark.skipif(not no_gpu_here(), reason="checks the choice of a machine without GPU")
@pytest.mark.multiprocess
def test_headline_accelerate_launch_runs_on_a_machine_without_gpu(setup):
    """`accelerate launch run_mtl.py CONFIG` with a GPU config (bf16, no use_cpu, TensorBoard) and no accelerate
    config file: one process on the CPU."""
    output = setup[0] / "headline"
    config = scale_config(setup, output, max_steps=2, save_strategy="no", bf16=True, report_to="tensorboard",
                          do_eval=False)
    log = launch(setup, "headline", [sys.executable, "-m", "accelerate.commands.launch", "run_mtl.py"], config)
    assert "machine: cpu (no GPU found), 1 process(es)" in log
    assert (output / "model.safetensors").is_file()
