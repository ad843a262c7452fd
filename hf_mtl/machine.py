"""One config on any machine: the device a run picks, bf16 where the hardware has it, the TensorBoard fallback.

The shipped configs ask for `bf16` and `report_to: tensorboard`; the same JSON must run on a laptop, a CPU server, one
GPU and several, under `python`, `torchrun` or `accelerate launch`.
"""

import logging
import os

import torch

from .precision import cpu_has_native_bf16

logger = logging.getLogger(__name__)


TRUE_STRINGS = ("1", "true", "yes", "on")


def has_accelerator() -> bool:
    """Whether torch sees a GPU-like device (CUDA, ROCm, MPS, XPU, ...): where accelerate would put the model."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def explicit_keys(values: dict, overrides) -> set:
    """The keys a run sets itself: in the JSON, or as `--key value` / `--key=value` on the command line."""
    keys = set(values)
    for argument in overrides:
        if argument.startswith("--"):
            keys.add(argument[2:].split("=", 1)[0].replace("-", "_"))
    return keys


def machine_defaults(values: dict, overrides=()) -> dict:
    """
    The config values adapted to this machine, before `TrainingArguments` validates them (it refuses `bf16` without
    `use_cpu` on a machine without a GPU). An explicit `use_cpu` always wins; otherwise a machine without a GPU trains
    on the CPU (as `accelerate` does), and `bf16` on a GPU without bfloat16 (e.g. V100, T4) trains in float32.
    bf16 on a CPU without native bfloat16 is handled after parsing, by `fall_back_from_emulated_bf16`.
    """
    from transformers.utils import is_torch_bf16_gpu_available

    values = dict(values)
    explicit = explicit_keys(values, overrides)
    if "use_cpu" not in explicit and (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() in TRUE_STRINGS or not has_accelerator()
    ):
        values["use_cpu"] = True
    if values.get("bf16") and not values.get("use_cpu") and has_accelerator() and not is_torch_bf16_gpu_available():
        if os.environ.get("RANK", "0") == "0":
            logger.warning("bf16: this GPU has no bfloat16 support; training in float32 (set fp16 for mixed precision)")
        values["bf16"] = False
    return values


def drop_missing_reporters(training_args) -> None:
    """`report_to: tensorboard` without tensorboard installed: train without it, with one warning (instead of
    Trainer's error). `pip install tensorboard` (or `hf_mtl[tensorboard]`) brings the logs back."""
    from transformers.integrations import is_tensorboard_available

    if "tensorboard" in training_args.report_to and not is_tensorboard_available():
        logger.warning("report_to: tensorboard is not installed (pip install tensorboard); "
                       "training without TensorBoard logs")
        training_args.report_to = [name for name in training_args.report_to if name != "tensorboard"]


def adapt_to_machine(training_args) -> None:
    """After parsing: bf16 only where native, reporters that are installed, and one log line saying what runs where."""

    fall_back_from_emulated_bf16(training_args)
    drop_missing_reporters(training_args)
    device = training_args.device
    reason = ""
    if device.type == "cpu":
        reason = " (no GPU found)" if not has_accelerator() else " (use_cpu)"
    precision = "bf16 autocast" if training_args.bf16 else "fp16 autocast" if training_args.fp16 else "float32"
    logger.info(f"machine: {device.type}{reason}, {training_args.world_size} process(es), {precision}, "
                f"parallel mode {training_args.parallel_mode.value}")


def fall_back_from_emulated_bf16(training_args) -> bool:
    """Train in float32 when `bf16` asks for autocast on a CPU that only emulates bfloat16; says so once."""
    if not training_args.bf16 or training_args.device.type != "cpu" or cpu_has_native_bf16():
        return False
    logger.warning(
        "bf16: this CPU has no native bfloat16 (no AVX512-BF16 or AMX), so bf16 autocast would be many times slower "
        "than float32 here; training in float32 instead (training_args.json records bf16=false)."
    )
    training_args.bf16 = False
    training_args.mixed_precision = "no"
    return True
