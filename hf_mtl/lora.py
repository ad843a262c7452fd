"""LoRA on the shared encoder through peft (`pip install hf_mtl[peft]`); the task heads train fully.

peft's `modules_to_save` cannot wrap the `heads` ModuleDict, and a `PeftModel` around the whole model would save only
an adapter, so the adapters are injected into the encoder alone (`peft.inject_adapter_in_model`): the heads are
untouched, and the freezing options, learning-rate groups, DDP and FSDP see ordinary parameters.

Every save (checkpoints and the final model) writes the merged weights (W + B·A·alpha/r) as a plain
`model.safetensors`, so AutoModel, the pipeline, exports and the Hub copy need nothing new, and the adapter beside
it in `lora_adapter/` in peft's format (`PeftModel.from_pretrained(AutoModel.from_pretrained(base),
"<folder>/lora_adapter")` gives the fine-tuned encoder). Resuming a checkpoint reads the adapter back; training on
from the folder starts from its merged weights (with a new adapter when the config has a `lora` key again).
"""

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError, ModelError
from .freezing import encoder_layers

logger = logging.getLogger(__name__)

ADAPTER_FOLDER = "lora_adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_NAME = "default"
PEFT_PREFIX = "base_model.model."  # the key prefix of an adapter that `PeftModel.save_pretrained` writes


@dataclass
class LoraSettings:
    """The `lora` config key: rank, scaling numerator (`alpha / r` scales B·A), dropout on the adapter input, and
    the encoder's Linear layers to adapt (default: peft's choice for the model type, else the attention block's)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: list | None = None

    @classmethod
    def from_config(cls, value):
        """None for no `lora` key; `true` for the defaults; else a dict of the fields above."""
        if value in (None, False):
            return None
        if value is True:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f'lora: expected an object such as {{"r": 8}} or true, got {value!r}')
        unknown = sorted(set(value) - {"r", "alpha", "dropout", "target_modules"})
        if unknown:
            raise ConfigError(f"lora: unknown keys {unknown}; known: r, alpha, dropout, target_modules")
        settings = cls(**value)
        if not isinstance(settings.r, int) or isinstance(settings.r, bool) or settings.r < 1:
            raise ConfigError(f"lora.r: expected a positive integer, got {settings.r!r}")
        if not isinstance(settings.alpha, (int, float)) or settings.alpha <= 0:
            raise ConfigError(f"lora.alpha: expected a positive number, got {settings.alpha!r}")
        if not isinstance(settings.dropout, (int, float)) or not 0 <= settings.dropout < 1:
            raise ConfigError(f"lora.dropout: expected a number in [0, 1), got {settings.dropout!r}")
        targets = settings.target_modules
        if targets is not None and (not isinstance(targets, list) or not targets
                                    or not all(isinstance(name, str) and name for name in targets)):
            raise ConfigError(f"lora.target_modules: expected a list of module names, got {targets!r}")
        import_peft()  # a missing peft is a config error now, not after the data are prepared
        return settings


def import_peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("lora: needs peft: pip install 'hf_mtl[peft]'") from None
    return peft


# Query and value projections by their names across encoder families: LoRA's usual targets, as peft's defaults.
QUERY_NAMES = ("query", "q", "q_lin", "q_proj", "query_proj")
VALUE_NAMES = ("value", "v", "v_lin", "v_proj", "value_proj")


def attention_linear_names(encoder: nn.Module) -> list:
    """
    Names (last part) of the Linear layers to adapt in the attention blocks, for an encoder peft has no default for:
    the query and value projections where the first layer's attention has them by a known name; else every Linear
    layer of that attention whose name no Linear layer outside an attention block shares (peft matches names
    anywhere in the encoder: ModernBERT's attention `Wo` would also adapt its MLP's `Wo`).
    """

    def in_attention(name):
        return "attention" in name or "attn" in name

    first_layer = encoder_layers(encoder)[0]
    inside = {name.rsplit(".", 1)[-1] for name, module in first_layer.named_modules()
              if isinstance(module, nn.Linear) and in_attention(name)}
    query = [name for name in QUERY_NAMES if name in inside]
    value = [name for name in VALUE_NAMES if name in inside]
    if query and value:
        return sorted([query[0], value[0]])
    outside = {name.rsplit(".", 1)[-1] for name, module in encoder.named_modules()
               if isinstance(module, nn.Linear) and not in_attention(name)}
    return sorted(inside - outside)


def default_target_modules(encoder: nn.Module) -> list:
    peft = import_peft()
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    targets = PEFT_DEFAULTS.get(encoder.config.model_type)
    if isinstance(targets, list):
        return list(targets)
    targets = attention_linear_names(encoder)
    if not targets:
        raise ConfigError(f"lora.target_modules: peft {peft.__version__} has no default for "
                          f"{encoder.config.model_type!r} encoders and their attention block has no Linear layer; "
                          "name the layers to adapt")
    return targets


def add_lora(model, settings: LoraSettings, base_name_or_path: str):
    """Inject LoRA adapters into `model.encoder` (its other weights freeze; the heads stay trainable)."""
    peft = import_peft()
    targets = settings.target_modules or default_target_modules(model.encoder)
    config = peft.LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=list(targets), bias="none",
                             base_model_name_or_path=str(base_name_or_path))
    try:
        peft.inject_adapter_in_model(config, model.encoder, adapter_name=ADAPTER_NAME)
    except ValueError as error:  # e.g. target modules not found in the encoder
        raise ConfigError(f"lora.target_modules: {error}") from None
    layers = lora_layers(model)
    for name, module in layers.items():
        if not isinstance(module.get_base_layer(), nn.Linear) or getattr(module, "use_dora", {}).get(ADAPTER_NAME):
            raise ConfigError(f"lora.target_modules: {name} is a {type(module.get_base_layer()).__name__}; "
                              "hf_mtl adapts Linear layers only")
    model.lora_config = config
    logger.info(f"lora: r={settings.r}, alpha={settings.alpha}, dropout={settings.dropout} on {len(layers)} encoder "
                f"layers ({', '.join(sorted(set(config.target_modules)))})")
    return config


def lora_layers(model) -> dict:
    """Module name -> peft LoRA layer, for every adapted Linear layer of the model."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def has_lora(model) -> bool:
    return getattr(model, "lora_config", None) is not None


def split_state_dict(model, state_dict: dict):
    """A state dict of the adapted model -> (the merged plain state dict, the adapter in peft's key format)."""
    merged, adapter = {}, {}
    layers = lora_layers(model)
    for name, module in layers.items():
        base = state_dict[f"{name}.base_layer.weight"]
        lora_a = state_dict[f"{name}.lora_A.{ADAPTER_NAME}.weight"]
        lora_b = state_dict[f"{name}.lora_B.{ADAPTER_NAME}.weight"]
        delta = (lora_b.float() @ lora_a.float()) * module.scaling[ADAPTER_NAME]
        merged[f"{name}.weight"] = (base.float() + (delta.T if module.fan_in_fan_out else delta)).to(base.dtype)
        if f"{name}.base_layer.bias" in state_dict:
            merged[f"{name}.bias"] = state_dict[f"{name}.base_layer.bias"]
        encoder_name = name[len("encoder."):]
        adapter[f"{PEFT_PREFIX}{encoder_name}.lora_A.weight"] = lora_a
        adapter[f"{PEFT_PREFIX}{encoder_name}.lora_B.weight"] = lora_b
    adapted = tuple(f"{name}." for name in layers)
    for key, value in state_dict.items():
        if not key.startswith(adapted):
            merged[key] = value
    return merged, adapter


def save_merged(model, state_dict, output_dir: str, should_save: bool):
    """For `Trainer._save`: write the adapter to `output_dir/lora_adapter/` and return the merged state dict that
    becomes `model.safetensors`. `state_dict` is what the engine gathered (None: the model's own)."""
    from safetensors.torch import save_file

    if state_dict is None:
        state_dict = model.state_dict()
    if not should_save or not state_dict:  # other ranks of a gathered FSDP / DeepSpeed save hold nothing
        return state_dict
    merged, adapter = split_state_dict(model, state_dict)
    folder = os.path.join(output_dir, ADAPTER_FOLDER)
    os.makedirs(folder, exist_ok=True)
    model.lora_config.save_pretrained(folder)
    save_file({key: value.contiguous() for key, value in adapter.items()}, os.path.join(folder, ADAPTER_WEIGHTS),
              metadata={"format": "pt"})
    return merged


def load_merged(model, folder: str):
    """Load a checkpoint written by `save_merged` into the adapted model: heads and other weights from
    `model.safetensors`, the adapter from `lora_adapter/`. The base weights under each adapter stay as built (LoRA
    keeps them frozen); merged weights that do not match them mean the checkpoint was trained from another model."""
    from safetensors.torch import load_file

    adapter_file = os.path.join(folder, ADAPTER_FOLDER, ADAPTER_WEIGHTS)
    if not os.path.isfile(adapter_file):
        raise ModelError(f"{folder}: a LoRA run's checkpoint needs {ADAPTER_FOLDER}/{ADAPTER_WEIGHTS}; it is missing")
    merged = load_file(os.path.join(folder, "model.safetensors"))
    adapter = load_file(adapter_file)
    current = model.state_dict()
    state = dict(current)
    for name in lora_layers(model):
        encoder_name = name[len("encoder."):]
        for part in ("lora_A", "lora_B"):
            state[f"{name}.{part}.{ADAPTER_NAME}.weight"] = adapter[f"{PEFT_PREFIX}{encoder_name}.{part}.weight"]
    expected, _ = split_state_dict(model, state)
    missing = sorted(set(expected) - set(merged))
    if missing:
        raise ModelError(f"{folder}: model.safetensors lacks weights {missing[:5]}")
    for key, value in merged.items():
        if key not in expected:
            raise ModelError(f"{folder}: unexpected weight {key} for this model")
        if key in current:  # outside the adapted layers: heads, embeddings, norms, ...
            state[key] = value
        elif not torch.allclose(expected[key].float(), value.float(), rtol=1e-4, atol=1e-5):
            raise ModelError(f"{folder}: merged weight {key} does not match this run's base model plus the adapter; "
                             "was the checkpoint trained from another model_name_or_path?")
    model.load_state_dict(state, strict=True)


class LoraCheckpointMixin:
    """What `MultiTaskTrainer` adds to `Trainer` for LoRA: checkpoints hold the merged weights plus the adapter, and
    resuming or loading the best model reads them back into the live adapter."""

    def _save(self, output_dir=None, state_dict=None):
        if has_lora(self.model):
            state_dict = save_merged(self.model, state_dict, output_dir or self.args.output_dir, self.args.should_save)
        super()._save(output_dir, state_dict)

    def _loads_merged_lora(self) -> bool:
        """FSDP and DeepSpeed resume from their own files of the live model."""
        return has_lora(self.model) and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._loads_merged_lora():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_merged(self.model if model is None else model, resume_from_checkpoint)

    def _load_best_model(self):
        if not self._loads_merged_lora():
            return super()._load_best_model()
        logger.info(f"loading the best model from {self.state.best_model_checkpoint} (score: {self.state.best_metric})")
        load_merged(self.model, self.state.best_model_checkpoint)
