"""hf_mtl multi-task model: one shared encoder (any `AutoModel`), N named sentence/token classification heads.

Self-contained on purpose (torch, transformers and the relative config import only): `save_pretrained` copies
this file next to the weights, so `AutoModel.from_pretrained(..., trust_remote_code=True)` runs without hf_mtl.
"""

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mtl import MultiTaskConfig, encoder_has_pooler

LABELS_SUFFIX = "_labels"


@dataclass
class MultiTaskOutput(ModelOutput):
    """
    Output of [`MultiTaskModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when any `<task>_labels` is given):
            Weighted sum of the per-task losses. First field on purpose: Trainer reads `outputs[0]` as the loss.
        logits (`dict[str, torch.FloatTensor]`):
            Task name -> `[batch, num_labels]` (sentence task) or `[batch, seq, num_labels]` (token task).
        task_losses (`dict[str, torch.FloatTensor]`, *optional*):
            Task name -> its unweighted loss in this batch (0 where the batch has no labels for it); for logging.
    """

    loss: torch.FloatTensor | None = None
    logits: dict | None = None
    task_losses: dict | None = None


class MultiTaskPooling(nn.Module):
    """Pools token states into one sentence vector, like sentence-transformers' `Pooling`: cls, mean, max or pooler."""

    def __init__(self, mode: str = "mean"):
        super().__init__()
        self.mode = mode

    def forward(self, token_states, attention_mask, pooler_output=None):
        if self.mode == "cls":
            return token_states[:, 0]
        if self.mode == "pooler":
            return pooler_output
        mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
        if self.mode == "max":
            # Padding must never win the max, whatever the sign of the real states.
            return token_states.masked_fill(mask == 0, torch.finfo(token_states.dtype).min).max(dim=1).values
        return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def extra_repr(self):
        return f"mode={self.mode!r}"


class ClassificationHead(nn.Module):
    """Dropout + linear layer, applied to a pooled sentence vector or to every token state."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, states):
        return self.classifier(self.dropout(states))


class MultiTaskPreTrainedModel(PreTrainedModel):
    config: MultiTaskConfig
    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        # The encoder initialises itself (it is a PreTrainedModel); this covers our heads and loss parameters.
        std = getattr(self.config.encoder, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MultiTaskModel) and module.task_log_variances is not None:
            init.zeros_(module.task_log_variances)


class MultiTaskModel(MultiTaskPreTrainedModel):
    """
    A shared encoder with one head per task of `config.tasks`. `forward` returns every head's logits and, given
    `<task>_labels`, the weighted sum of per-task cross-entropies, so stock `transformers.Trainer` trains it.
    """

    # `forward(**labels)` must not make Trainer rescale the loss by `num_items_in_batch`.
    accepts_loss_kwargs = False

    def __init__(self, config: MultiTaskConfig):
        super().__init__(config)
        encoder_kwargs = {"dtype": torch.get_default_dtype()}
        if encoder_has_pooler(config.encoder):
            # An unused pooler never gets a gradient, which trips DDP with activation checkpointing.
            encoder_kwargs["add_pooling_layer"] = config.pooling == "pooler"
        if config._attn_implementation is not None:
            encoder_kwargs["attn_implementation"] = config._attn_implementation
        self.encoder = AutoModel.from_config(config.encoder, **encoder_kwargs)
        self._no_split_modules = self.encoder._no_split_modules
        self._encoder_inputs = set(inspect.signature(self.encoder.forward).parameters)

        hidden_size = config.encoder.hidden_size if hasattr(config.encoder, "hidden_size") else config.encoder.dim
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = next(
                (getattr(config.encoder, key) for key in ("hidden_dropout_prob", "dropout") if hasattr(config.encoder, key)),
                0.1,
            )
        self.pooling = MultiTaskPooling(config.pooling)
        self.heads = nn.ModuleDict(
            {task["name"]: ClassificationHead(hidden_size, len(task["labels"]), dropout) for task in config.tasks}
        )
        for task in config.tasks:
            if task.get("class_weights") is not None:
                # Rebuilt from the config at every load: the config stays the one source of truth.
                weights = torch.tensor(task["class_weights"], dtype=torch.float32)
                self.register_buffer(f"{task['name']}_class_weights", weights, persistent=False)
        self.task_log_variances = (
            nn.Parameter(torch.zeros(len(config.tasks))) if config.loss_weighting == "uncertainty" else None
        )
        self.post_init()

    @classmethod
    def from_encoder(cls, encoder_name_or_path: str, tasks: list, pooling: str = "mean", **kwargs):
        """
        New multi-task model on a pretrained encoder (local folder or Hub id) with freshly initialised heads.

        `kwargs` go to `MultiTaskConfig` (e.g. `loss_weights`, `normalize_embeddings`) except the loading options
        `attn_implementation`, `revision`, `token`, `cache_dir` and `local_files_only`, which go to `AutoModel`.
        """
        load_keys = ("attn_implementation", "revision", "token", "cache_dir", "local_files_only")
        load_kwargs = {key: kwargs.pop(key) for key in load_keys if key in kwargs}
        pretrained = AutoModel.from_pretrained(encoder_name_or_path, dtype=torch.get_default_dtype(), **load_kwargs)
        config = MultiTaskConfig(encoder=pretrained.config.to_dict(), tasks=tasks, pooling=pooling, **kwargs)
        if "attn_implementation" in load_kwargs:
            config._attn_implementation = load_kwargs["attn_implementation"]
        model = cls(config)
        state = pretrained.state_dict()
        if not hasattr(model.encoder, "pooler") or model.encoder.pooler is None:
            state = {key: value for key, value in state.items() if not key.startswith("pooler.")}
        model.encoder.load_state_dict(state, strict=True)
        model.config.encoder._name_or_path = str(encoder_name_or_path)
        model.name_or_path = str(encoder_name_or_path)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, strict about the folder matching itself: a weight the model needs that the
        checkpoint lacks (a task added to or renamed in `config.json`), a head of another shape (labels edited) or a
        head the config does not declare raises a `ValueError` naming them, instead of loading random heads; a damaged
        weights file raises an `OSError` naming the folder. `ignore_mismatched_sizes=True` still allows other shapes.
        """
        return_info = kwargs.pop("output_loading_info", False)
        allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, ignore_mismatched_sizes=True,
                **kwargs,
            )
        except Exception as error:  # safetensors' error type, which this self-contained file does not import
            if type(error).__name__ != "SafetensorError":
                raise
            raise OSError(f"{pretrained_model_name_or_path}: a weights file is damaged ({error})") from error
        problems = []
        if info["missing_keys"]:
            problems.append(f"weights missing from the checkpoint: {sorted(info['missing_keys'])[:6]}")
        unexpected_heads = sorted(key for key in info["unexpected_keys"] if key.startswith("heads."))
        if unexpected_heads:
            problems.append(f"heads in the checkpoint that config.json does not declare: {unexpected_heads[:6]}")
        if info["mismatched_keys"] and not allow_mismatch:
            shapes = [f"{key} {list(saved)} in the checkpoint, {list(expected)} in config.json"
                      for key, saved, expected in sorted(info["mismatched_keys"])[:4]]
            problems.append(f"weights of another shape: {shapes}")
        if problems:
            tasks = [task["name"] for task in model.config.tasks]
            raise ValueError(
                f"{pretrained_model_name_or_path}: config.json (tasks {tasks}) does not match the weights: "
                + "; ".join(problems)
            )
        return (model, info) if return_info else model

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.encoder.set_input_embeddings(value)

    def _encode(self, input_ids, attention_mask, token_type_ids, inputs_embeds):
        if attention_mask is None:
            shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            attention_mask = torch.ones(shape, dtype=torch.long, device=device)
        encoder_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
        if token_type_ids is not None and "token_type_ids" in self._encoder_inputs:
            encoder_inputs["token_type_ids"] = token_type_ids
        outputs = self.encoder(**encoder_inputs)
        pooled = self.pooling(outputs.last_hidden_state, attention_mask, getattr(outputs, "pooler_output", None))
        return outputs.last_hidden_state, pooled

    def embed(self, input_ids=None, attention_mask=None, token_type_ids=None, normalize=None, inputs_embeds=None):
        """Pooled sentence embeddings `[batch, hidden]`; L2-normalised if `normalize` (default: the config's)."""
        _, pooled = self._encode(input_ids, attention_mask, token_type_ids, inputs_embeds)
        normalize = self.config.normalize_embeddings if normalize is None else normalize
        return F.normalize(pooled, p=2, dim=-1) if normalize else pooled

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, **labels):
        r"""
        labels (`<task name>_labels`, *optional*):
            Per task: `[batch]` class ids for a sentence task, `[batch, seq]` tag ids for a token task; -100 ignores.
            A task whose labels are absent, or all -100, adds exactly 0 to the loss.
        """
        unknown = [key for key in labels if not key.endswith(LABELS_SUFFIX) or key[: -len(LABELS_SUFFIX)] not in self.heads]
        if unknown:
            raise TypeError(
                f"MultiTaskModel.forward() got unexpected keyword arguments {unknown}; "
                f"label arguments are {[name + LABELS_SUFFIX for name in self.heads]}"
            )
        token_states, pooled = self._encode(input_ids, attention_mask, token_type_ids, inputs_embeds)

        logits, task_losses, loss = {}, {}, None
        for index, task in enumerate(self.config.tasks):
            name = task["name"]
            is_token_task = task["type"] == "token_classification"
            # Every head runs in every batch, so DDP never sees a parameter without a gradient.
            logits[name] = self.heads[name](token_states if is_token_task else pooled)
            task_labels = labels.get(name + LABELS_SUFFIX)
            if task_labels is None:
                if not labels:
                    continue
                # Keeps this head in the graph (a zero gradient) when other tasks are labelled.
                task_loss = logits[name].sum() * 0.0
            else:
                task_loss = self._task_loss(name, logits[name], task_labels)
            task_losses[name] = task_loss.detach()
            if self.task_log_variances is not None:
                # Kendall et al. 2018: exp(-s) L + s/2, with s = log(sigma^2) learned; absent tasks add nothing.
                log_variance = self.task_log_variances[index]
                has_labels = task_labels is not None and bool((task_labels != -100).any())
                weighted = torch.exp(-log_variance) * task_loss + (0.5 * log_variance if has_labels else 0.0 * log_variance)
            else:
                weighted = self.config.loss_weights.get(name, 1.0) * task_loss
            loss = weighted if loss is None else loss + weighted

        return MultiTaskOutput(loss=loss, logits=logits, task_losses=task_losses or None)

    def _task_loss(self, name, task_logits, task_labels):
        """Mean cross-entropy over the labels that are not -100 (class-weighted if configured); exactly 0 if none."""
        num_labels = task_logits.shape[-1]
        flat_logits = task_logits.reshape(-1, num_labels).float()
        flat_labels = task_labels.reshape(-1).to(flat_logits.device)
        class_weights = getattr(self, f"{name}_class_weights", None)
        per_item = F.cross_entropy(flat_logits, flat_labels, weight=class_weights, ignore_index=-100, reduction="none")
        kept = flat_labels != -100
        if class_weights is not None:
            denominator = class_weights[flat_labels.clamp(min=0)].mul(kept).sum()
        else:
            denominator = kept.sum().to(per_item.dtype)
        return per_item.sum() / denominator.clamp(min=1e-9)


__all__ = ["MultiTaskModel", "MultiTaskOutput", "MultiTaskPooling", "MultiTaskPreTrainedModel"]
