"""hf_mtl multi-task model: one shared encoder (any `AutoModel`), N named task heads of four kinds.

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

from .configuration_mtl import MultiTaskConfig, encoder_has_pooler, task_kind, task_num_outputs

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


class TaskHead(nn.Module):
    """
    Dropout + linear layer over the pooled sentence vector (sentence tasks) or every token state (token tasks); each
    kind of task adds its loss and what "no label" looks like. `loss` is exactly 0 when no row has a label, so a
    task of another data set in a mixed batch adds nothing.
    """

    reads_tokens = False

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, task_num_outputs(task))

    def forward(self, token_states, pooled):
        return self.classifier(self.dropout(token_states if self.reads_tokens else pooled))

    def labelled_rows(self, labels):
        """`[batch]` bool: which rows carry a label for this task (-100 = none)."""
        return labels != -100

    def loss(self, logits, labels, **kwargs):
        raise NotImplementedError


class SingleLabelClassificationHead(TaskHead):
    """One class per sentence: class-weighted cross-entropy, averaged over the labelled rows (by their weights)."""

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__(task, hidden_size, dropout)
        # A plain list read from the config, not a buffer: the config stays the one source of truth, and
        # from_pretrained leaves non-persistent buffers uninitialised.
        self.class_weights = task.get("class_weights")

    def loss(self, logits, labels, **kwargs):
        num_labels = logits.shape[-1]
        flat_logits = logits.reshape(-1, num_labels).float()
        flat_labels = labels.reshape(-1).to(flat_logits.device)
        weights = None if self.class_weights is None else flat_logits.new_tensor(self.class_weights)
        per_item = F.cross_entropy(flat_logits, flat_labels, weight=weights, ignore_index=-100, reduction="none")
        kept = flat_labels != -100
        if weights is not None:
            denominator = weights[flat_labels.clamp(min=0)].mul(kept).sum()
        else:
            denominator = kept.sum().to(per_item.dtype)
        return per_item.sum() / denominator.clamp(min=1e-9)


class TokenClassificationHead(SingleLabelClassificationHead):
    """One class per token (-100 on sub-tokens that carry no word label): the same weighted cross-entropy."""

    reads_tokens = True

    def labelled_rows(self, labels):
        return (labels != -100).any(dim=-1)


class MultiLabelClassificationHead(TaskHead):
    """
    Any number of labels per sentence: one sigmoid per label, binary cross-entropy (optionally `pos_weight` per
    label) averaged over the labelled rows and labels. Labels are multi-hot floats; a row of -100 has no label.
    """

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__(task, hidden_size, dropout)
        self.pos_weight = task.get("pos_weight")

    def labelled_rows(self, labels):
        return labels[..., 0] != -100

    def loss(self, logits, labels, **kwargs):
        kept = self.labelled_rows(labels)
        if not kept.any():
            return logits.sum() * 0.0
        predicted = logits[kept].float()
        pos_weight = None if self.pos_weight is None else predicted.new_tensor(self.pos_weight)
        targets = labels[kept].float().to(predicted.device)
        return F.binary_cross_entropy_with_logits(predicted, targets, pos_weight=pos_weight)


class RegressionHead(TaskHead):
    """
    One number per sentence, in the data's own units: the linear layer predicts the target standardised with the
    train split's mean and standard deviation (kept in the config), and the loss is the mean squared error on that
    standardised scale. NaN marks a row without a target.
    """

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__(task, hidden_size, dropout)
        self.target_mean = float(task.get("target_mean", 0.0))
        self.target_std = float(task.get("target_std", 1.0))

    def forward(self, token_states, pooled):
        return super().forward(token_states, pooled) * self.target_std + self.target_mean

    def labelled_rows(self, labels):
        return ~torch.isnan(labels.reshape(labels.shape[0], -1)[:, 0])

    def loss(self, logits, labels, **kwargs):
        kept = self.labelled_rows(labels)
        if not kept.any():
            return logits.sum() * 0.0
        predicted = logits.reshape(-1)[kept].float()
        targets = labels.reshape(-1)[kept].float().to(predicted.device)
        return F.mse_loss((predicted - targets) / self.target_std, torch.zeros_like(predicted))


# One head class per kind of task (`configuration_mtl.task_kind`).
TASK_HEADS = {
    "single_label_classification": SingleLabelClassificationHead,
    "multi_label_classification": MultiLabelClassificationHead,
    "regression": RegressionHead,
    "token_classification": TokenClassificationHead,
}


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
            {task["name"]: TASK_HEADS[task_kind(task)](task, hidden_size, dropout) for task in config.tasks}
        )
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
            Per task: `[batch]` class ids (single-label), `[batch, num_labels]` multi-hot floats (multi-label),
            `[batch]` floats (regression) or `[batch, seq]` tag ids (token task). -100 (a row of -100 for
            multi-label, NaN for regression) marks "no label"; a task whose labels are absent, or all missing, adds
            exactly 0 to the loss.
        """
        unknown = [key for key in labels if not key.endswith(LABELS_SUFFIX) or key[: -len(LABELS_SUFFIX)] not in self.heads]
        if unknown:
            raise TypeError(
                f"MultiTaskModel.forward() got unexpected keyword arguments {unknown}; "
                f"label arguments are {[name + LABELS_SUFFIX for name in self.heads]}"
            )
        token_states, pooled = self._encode(input_ids, attention_mask, token_type_ids, inputs_embeds)

        logits, task_losses, loss = {}, {}, None
        for index, (name, head) in enumerate(self.heads.items()):
            # Every head runs in every batch, so DDP never sees a parameter without a gradient.
            logits[name] = head(token_states, pooled)
            task_labels = labels.get(name + LABELS_SUFFIX)
            if task_labels is None:
                if not labels:
                    continue
                # Keeps this head in the graph (a zero gradient) when other tasks are labelled.
                task_loss, has_labels = logits[name].sum() * 0.0, False
            else:
                task_loss = head.loss(logits[name], task_labels)
                has_labels = bool(head.labelled_rows(task_labels).any())
            task_losses[name] = task_loss.detach()
            if self.task_log_variances is not None:
                # Kendall et al. 2018: exp(-s) L + s/2, with s = log(sigma^2) learned; absent tasks add nothing.
                log_variance = self.task_log_variances[index]
                weighted = torch.exp(-log_variance) * task_loss + (0.5 * log_variance if has_labels else 0.0 * log_variance)
            else:
                weighted = self.config.loss_weights.get(name, 1.0) * task_loss
            loss = weighted if loss is None else loss + weighted

        return MultiTaskOutput(loss=loss, logits=logits, task_losses=task_losses or None)


__all__ = ["MultiTaskModel", "MultiTaskOutput", "MultiTaskPooling", "MultiTaskPreTrainedModel", "TASK_HEADS"]
