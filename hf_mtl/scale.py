"""One config on any machine and engine (issue 18): the device a run picks, the TensorBoard fallback, FSDP as asked
(CPU processes too), DeepSpeed ZeRO-3 loading, and `ScaleTrainerMixin`, what `MultiTaskTrainer` adds to `Trainer` for
the engines and for LoRA checkpoints.

The shipped configs ask for `bf16` and `report_to: tensorboard`; the same JSON must run on a laptop, a CPU server, one
GPU and several, under `python`, `torchrun` or `accelerate launch` (DDP, FSDP, DeepSpeed).
"""

import contextlib
import logging
import os

import torch

from .errors import ConfigError

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
    from .training import fall_back_from_emulated_bf16

    fall_back_from_emulated_bf16(training_args)
    drop_missing_reporters(training_args)
    device = training_args.device
    reason = ""
    if device.type == "cpu":
        reason = " (no GPU found)" if not has_accelerator() else " (use_cpu)"
    precision = "bf16 autocast" if training_args.bf16 else "fp16 autocast" if training_args.fp16 else "float32"
    logger.info(f"machine: {device.type}{reason}, {training_args.world_size} process(es), {precision}, "
                f"parallel mode {training_args.parallel_mode.value}")


def fsdp_layer_classes(model) -> list:
    """
    The classes FSDP wraps as units: the encoder's `_no_split_modules` (its transformer layers; the layer class where
    it declares none) without the ones holding the input embeddings (BERT's `BertEmbeddings`): accelerate shards the
    input embeddings as a unit of their own, and sharding them inside an already sharded unit fails
    (`Invariant encountered: value was None`).
    """
    from .training import encoder_layers

    embeddings = model.get_input_embeddings()
    classes = []
    for name in getattr(model, "_no_split_modules", None) or []:
        holders = [module for module in model.modules() if type(module).__name__ == name]
        if not any(embeddings is sub for holder in holders for sub in holder.modules()):
            classes.append(name)
    return classes or [type(encoder_layers(model.encoder)[0]).__name__]  # e.g. DistilBERT declares none


def prepare_fsdp(trainer) -> None:
    """
    FSDP as asked for (`accelerate launch --config_file configs/accelerate/fsdp.yaml`, or TrainingArguments' `fsdp`),
    on GPUs and on CPU processes: accelerate applies FSDP only to GPU-like devices and otherwise trains plain DDP
    without a word, while FSDP2 (`fully_shard`) works on CPUs over gloo. Units: `fsdp_layer_classes` unless the
    config names its own (`fsdp_transformer_layer_cls_to_wrap`).
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    state = trainer.accelerator.state
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in TRUE_STRINGS
    if (wanted or trainer.args.fsdp_plugin_args) and state.distributed_type == DistributedType.MULTI_CPU:
        plugin = FullyShardedDataParallelPlugin(**(trainer.args.fsdp_plugin_args or {}))
        if plugin.fsdp_version != 2:
            raise ConfigError("FSDP on CPU processes needs FSDP2: set fsdp_version: 2 "
                              "(configs/accelerate/fsdp.yaml does)")
        if state.mixed_precision != "no":
            plugin.set_mixed_precision(state.mixed_precision)
        state.fsdp_plugin = plugin
        # as AcceleratorState does for GPUs: both states say FSDP, or the next AcceleratorState() reverts it
        state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        trainer.is_fsdp_enabled = True
    if not trainer.is_fsdp_enabled:
        return
    plugin = state.fsdp_plugin
    if plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.transformer_cls_names_to_wrap is None:
        plugin.transformer_cls_names_to_wrap = fsdp_layer_classes(trainer.model)


@contextlib.contextmanager
def plain_model_class(model):
    """FSDP2 turns the model's class into a generated `FSDPMultiTaskModel` defined in torch; `save_pretrained` would
    copy torch's files as the model code and write them into `auto_map`. Saving sees the model's own class."""
    from torch.distributed.fsdp import FSDPModule

    sharded_class = type(model)
    if not isinstance(model, FSDPModule):
        yield
        return
    model.__class__ = next(base for base in sharded_class.__mro__[1:] if not issubclass(base, FSDPModule))
    try:
        yield
    finally:
        model.__class__ = sharded_class


@contextlib.contextmanager
def full_state_dict_for_final_save(trainer, final: bool):
    """Checkpoints keep the configured FSDP state dict type (sharded checkpoints resume without gathering); the
    final model is always gathered into the one `model.safetensors` a DDP run writes."""
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None) if trainer.is_fsdp_enabled else None
    if not final or plugin is None or "FULL_STATE_DICT" in str(plugin.state_dict_type):
        yield
        return
    from torch.distributed.fsdp import StateDictType

    configured = plugin.state_dict_type
    plugin.state_dict_type = StateDictType.FULL_STATE_DICT  # what Trainer.save_model reads; the gather is accelerate's
    try:
        yield
    finally:
        plugin.state_dict_type = configured


@contextlib.contextmanager
def whole_weights_at_load(training_args):
    """
    DeepSpeed ZeRO-3: transformers partitions weights already inside `from_pretrained` (`deepspeed.zero.Init`), but
    hf_mtl copies the pretrained encoder's weights into its own model, which needs them whole. Loading happens
    without that partitioning (each process holds the model once, as under DDP); ZeRO-3 shards parameters,
    gradients and optimizer states when training starts.
    """
    from transformers.integrations.deepspeed import (is_deepspeed_zero3_enabled, set_hf_deepspeed_config,
                                                     unset_hf_deepspeed_config)

    if not is_deepspeed_zero3_enabled():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(training_args.hf_deepspeed_config)


class ScaleTrainerMixin:
    """What `MultiTaskTrainer` adds to `Trainer` for the engines and LoRA: FSDP set up as asked (CPU processes too),
    a final FSDP save gathered into one `model.safetensors` with the model's own code files, and LoRA checkpoints
    (merged weights + adapter) saved and read back."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        prepare_fsdp(self)

    def save_model(self, output_dir=None, _internal_call=False):
        with full_state_dict_for_final_save(self, final=not _internal_call):
            super().save_model(output_dir, _internal_call)

    def _save(self, output_dir=None, state_dict=None):
        from .lora import has_lora, save_merged

        if has_lora(self.model):
            state_dict = save_merged(self.model, state_dict, output_dir or self.args.output_dir, self.args.should_save)
        with plain_model_class(self.model):
            super()._save(output_dir, state_dict)

    def _loads_merged_lora(self) -> bool:
        """LoRA checkpoints hold merged weights; FSDP and DeepSpeed resume from their own files of the live model."""
        from .lora import has_lora

        return has_lora(self.model) and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._loads_merged_lora():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from .lora import load_merged

        load_merged(self.model if model is None else model, resume_from_checkpoint)

    def _load_best_model(self):
        if not self._loads_merged_lora():
            return super()._load_best_model()
        from .lora import load_merged

        logger.info(f"loading the best model from {self.state.best_model_checkpoint} (score: {self.state.best_metric})")
        load_merged(self.model, self.state.best_model_checkpoint)
