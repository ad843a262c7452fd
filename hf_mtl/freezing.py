"""Which parameters train: the encoder's layer stack, freezing, learning-rate groups per depth, gradual unfreezing."""

import logging

from torch import nn
from transformers import TrainerCallback

from .errors import ConfigError

logger = logging.getLogger(__name__)

# The keys of `unfreeze_schedule`: how many layers start frozen, and one interval between releases.
UNFREEZE_KEYS = ("start_frozen_layers", "unfreeze_every_steps", "unfreeze_every_epochs")


def unfreeze_interval_key(schedule: dict) -> str:
    """The one interval an `unfreeze_schedule` gives (`unfreeze_every_steps` or `unfreeze_every_epochs`)."""
    given = [key for key in UNFREEZE_KEYS[1:] if schedule.get(key) is not None]
    if len(given) != 1:
        raise ConfigError("unfreeze_schedule: give exactly one of unfreeze_every_steps and unfreeze_every_epochs")
    return given[0]


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer layers (BERT/RoBERTa/DeBERTa-v2 `encoder.layer`, DistilBERT `transformer.layer`,
    ALBERT's layer groups `encoder.albert_layer_groups`, whose weights every layer of a group shares)."""
    config = encoder.config
    num_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    if getattr(config, "num_hidden_groups", None):  # ALBERT: its layers reuse the weights of a few layer groups
        num_layers = config.num_hidden_groups
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise ConfigError(f"cannot find the {num_layers} transformer layers of the {type(encoder).__name__} encoder")


def parameter_depths(model) -> dict:
    """Parameter name -> depth: 0 = embeddings, 1..L = transformer layers, L = anything else of the encoder, None = heads."""
    layers = encoder_layers(model.encoder)
    layer_of = {id(parameter): index + 1 for index, layer in enumerate(layers) for parameter in layer.parameters()}
    embedding_ids = {id(parameter) for parameter in model.encoder.embeddings.parameters()}
    depths = {}
    for name, parameter in model.named_parameters():
        if not name.startswith("encoder."):
            depths[name] = None
        elif id(parameter) in embedding_ids:
            depths[name] = 0
        else:
            depths[name] = layer_of.get(id(parameter), len(layers))
    return depths


def apply_freezing(model, *, freeze_encoder=False, freeze_embeddings=False, freeze_layers=0, freeze_heads=()):
    """Set `requires_grad=False` on the frozen parts, before Trainer wraps the model (so DDP never sees a toggle)."""
    unknown = sorted(set(freeze_heads) - set(model.heads))
    if unknown:
        raise ConfigError(f"freeze_heads: no task named {unknown}; tasks are {list(model.heads)}")
    without_weights = [name for name in freeze_heads if not any(True for _ in model.heads[name].parameters())]
    if without_weights:
        raise ConfigError(f"freeze_heads: the heads of {without_weights} have no weights of their own (a bi-encoder "
                          "task trains the encoder itself: freeze the encoder or its layers instead)")
    num_layers = len(encoder_layers(model.encoder))
    if freeze_layers < 0 or freeze_layers > num_layers:
        raise ConfigError(f"freeze_layers: {freeze_layers} is outside 0..{num_layers} (the encoder has {num_layers} layers)")
    for name, depth in parameter_depths(model).items():
        parameter = model.get_parameter(name)
        if depth is None:
            head = name.split(".")[1] if name.startswith("heads.") else None
            frozen = head in freeze_heads
        else:
            frozen = freeze_encoder or (freeze_embeddings and depth == 0) or (freeze_layers > 0 and depth <= freeze_layers)
        if frozen:
            parameter.requires_grad_(False)


def parameter_summary(model) -> list:
    """Lines 'part: trainable / frozen' for embeddings, each encoder layer, the rest of the encoder and each head."""
    parts = {}
    depths = parameter_depths(model)
    num_layers = len(encoder_layers(model.encoder))
    for name, parameter in model.named_parameters():
        depth = depths[name]
        if depth is None:
            part = f"head {name.split('.')[1]}" if name.startswith("heads.") else name
        elif depth == 0:
            part = "embeddings"
        elif depth <= num_layers and ".layer." in name:
            part = f"layer {depth - 1}"
        else:
            part = "encoder (other)"
        trainable, frozen = parts.get(part, (0, 0))
        count = parameter.numel()
        parts[part] = (trainable + count, frozen) if parameter.requires_grad else (trainable, frozen + count)
    total_trainable = sum(trainable for trainable, _ in parts.values())
    total_frozen = sum(frozen for _, frozen in parts.values())
    lines = [f"  {part:<18} trainable {trainable:>11,}  frozen {frozen:>11,}" for part, (trainable, frozen) in parts.items()]
    lines.append(f"  {'total':<18} trainable {total_trainable:>11,}  frozen {total_frozen:>11,}")
    return lines


def optimizer_parameter_groups(
    model, *, learning_rate, weight_decay, decay_parameter_names, encoder_learning_rate=None, head_learning_rate=None,
    layerwise_lr_decay=None,
):
    """
    One group per (depth, decay) pair so each carries its own learning rate: layer l of L gets lr·γ^(L−l), the
    embeddings lr·γ^L, heads `head_learning_rate`. Biases, norm weights and task log-variances get no weight decay.
    Each group records its depth ("depth": None for heads) for gradual unfreezing. Frozen parameters are left out.
    """
    encoder_lr = encoder_learning_rate if encoder_learning_rate is not None else learning_rate
    head_lr = head_learning_rate if head_learning_rate is not None else learning_rate
    num_layers = len(encoder_layers(model.encoder))
    gamma = layerwise_lr_decay if layerwise_lr_decay is not None else 1.0
    groups = {}
    for name, depth in parameter_depths(model).items():
        parameter = model.get_parameter(name)
        if not parameter.requires_grad:
            continue
        decay = name in decay_parameter_names and name != "task_log_variances"
        if depth is None:
            lr = head_lr
        else:
            lr = encoder_lr * gamma ** (num_layers - min(depth, num_layers))
        group = groups.setdefault(
            (depth, decay), {"params": [], "lr": lr, "weight_decay": weight_decay if decay else 0.0, "depth": depth}
        )
        group["params"].append(parameter)
    return list(groups.values())


class GradualUnfreezingCallback(TrainerCallback):
    """
    ULMFiT-style unfreezing, DDP-safe: every parameter is in the optimizer from the start and nothing toggles
    `requires_grad`; the learning rate of a still-frozen depth is held at 0 before each optimizer step. The lowest
    `start_frozen_layers` layers and the embeddings start frozen; one layer is released every `unfreeze_every_steps`
    steps (or `unfreeze_every_epochs` epochs), top layers first, the embeddings with the last layer.
    """

    def __init__(self, start_frozen_layers: int, unfreeze_every_steps: int = None, unfreeze_every_epochs: float = None):
        intervals = {"unfreeze_every_steps": unfreeze_every_steps, "unfreeze_every_epochs": unfreeze_every_epochs}
        unfreeze_interval_key(intervals)
        self.start_frozen_layers = start_frozen_layers
        self.every_steps = unfreeze_every_steps
        self.every_epochs = unfreeze_every_epochs

    def frozen_below(self, state) -> int:
        """Depths 0..frozen_below-1 are frozen now (depth 0 = embeddings, depth l = layer l-1)."""
        if self.every_steps is not None:
            released = state.global_step // self.every_steps
        else:
            released = int((state.epoch or 0.0) // self.every_epochs)
        frozen_layers = max(self.start_frozen_layers - released, 0)
        return frozen_layers + 1 if frozen_layers > 0 else 0

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        frozen_below = self.frozen_below(state)
        for group in optimizer.param_groups:
            if group.get("depth") is not None and group["depth"] < frozen_below:
                group["lr"] = 0.0
