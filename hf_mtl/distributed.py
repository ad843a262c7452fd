"""FSDP as asked (CPU processes too), a final FSDP save gathered into one `model.safetensors`, and DeepSpeed ZeRO-3
loading: what `MultiTaskTrainer` adds to `Trainer` for the distributed engines."""

import contextlib
import logging
import os

from .errors import ConfigError
from .freezing import encoder_layers
from .machine import TRUE_STRINGS

logger = logging.getLogger(__name__)


def fsdp_layer_classes(model) -> list:
    """
    The classes FSDP wraps as units: the encoder's `_no_split_modules` (its transformer layers; the layer class where
    it declares none) without the ones holding the input embeddings (BERT's `BertEmbeddings`): accelerate shards the
    input embeddings as a unit of their own, and sharding them inside an already sharded unit fails
    (`Invariant encountered: value was None`).
    """

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


class DistributedTrainerMixin:
    """What `MultiTaskTrainer` adds to `Trainer` for the engines: FSDP set up as asked (CPU processes too), and a final
    FSDP save gathered into one `model.safetensors` with the model's own code files."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        prepare_fsdp(self)

    def save_model(self, output_dir=None, _internal_call=False):
        with full_state_dict_for_final_save(self, final=not _internal_call):
            super().save_model(output_dir, _internal_call)

    def _save(self, output_dir=None, state_dict=None):
        with plain_model_class(self.model):
            super()._save(output_dir, state_dict)
