"""The kinds of task a model has heads for: one class per kind, registered in `TASK_KINDS`.

A kind's class is its head (an `nn.Module` that owns its loss and decoding) and says, for the config and the
pipeline, what the kind is: the task dict it reads (`task_type`, `problem_type`, `saved_keys`, its labels), the
checks of its saved keys, and what the pipeline returns per input. The training side (data encoding, metrics,
reports) lives beside it in `hf_mtl.tasks`, one class per kind as well.

Hub-safe (torch, numpy and the package's CRF only): `save_pretrained` copies it beside the weights with the model
and config files that import it, so the Hub copy runs where hf_mtl is not installed.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .crf import compact_word_positions, crf_for_task, gather_word_positions

TASK_KINDS = {}  # kind name -> its head class


def register_task_kind(head_class):
    """Class decorator: make `head_class` the kind named by its `kind` attribute (read by config, model, pipeline)."""
    TASK_KINDS[head_class.kind] = head_class
    return head_class


def task_kind(task: dict) -> str:
    """The kind of a task dict: the registered kind of its `type` and `problem_type` (a type's default kind when the
    task names no problem_type). Unknown combinations give the type itself (`validate_task` refuses them)."""
    problem_type = task.get("problem_type")
    for kind in TASK_KINDS.values():
        if kind.task_type == task.get("type") and (problem_type == kind.problem_type or (
                problem_type is None and kind.default_for_type)):
            return kind.kind
    return str(task.get("type"))


def kind_of(task: dict):
    """The head class of a task dict's kind."""
    return TASK_KINDS[task_kind(task)]


def task_types() -> tuple:
    return tuple(dict.fromkeys(kind.task_type for kind in TASK_KINDS.values()))


def problem_types(task_type: str) -> tuple:
    """The `problem_type` values a task of `task_type` may name (transformers' names for sentence tasks)."""
    return tuple(kind.problem_type for kind in TASK_KINDS.values() if kind.task_type == task_type and kind.problem_type)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def check_weights(task: dict, key: str, where: str) -> None:
    weights = task.get(key)
    if weights is None:
        return
    if not isinstance(weights, (list, tuple)) or not all(_is_number(w) and w >= 0 for w in weights) or not any(
        w > 0 for w in weights
    ):
        raise ValueError(f"{where}.{key}: a list of finite numbers >= 0 (one > 0) is required, got {weights!r}")
    labels = task.get("labels")
    if labels is not None and len(weights) != len(labels):
        raise ValueError(f"{where}.{key}: {len(weights)} weights for {len(labels)} labels")


def check_flags(task: dict, keys, where: str) -> None:
    for key in keys:
        if key in task and not isinstance(task[key], bool):
            raise ValueError(f"{where}.{key}: true or false, got {task[key]!r}")


def softened_kl(logits, teacher_logits, temperature: float):
    """KL(teacher || student) of the temperature-softened softmaxes, times T^2 (Hinton et al. 2015: the gradients
    keep their scale as T grows), over the last axis."""
    student = F.log_softmax(logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="none").sum(dim=-1) * temperature**2


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class TaskHead(nn.Module):
    """
    Dropout + linear layer over the pooled sentence vector (sentence tasks) or every token state (token tasks); each
    kind of task adds its loss and what "no label" looks like. `loss` is exactly 0 when no row has a label, so a
    task of another data set in a mixed batch adds nothing.

    The class attributes and class methods describe the kind for the config and the pipeline.
    """

    kind = None  # the kind's name (`task_kind`)
    task_type = "sequence_classification"  # the task dict's "type"
    problem_type = None  # the task dict's "problem_type" (transformers' name) that selects the kind
    default_for_type = False  # the kind of a task of `task_type` that names no problem_type
    saved_keys = ()  # what a saved task dict may hold besides name, type, problem_type and labels
    min_labels = 2  # None: the kind takes no labels
    reads_tokens = False  # token states (a tag per word) instead of the pooled sentence vector
    encodes_pair_separately = False  # a bi-encoder: the two texts of a pair are two inputs, not one

    @classmethod
    def num_outputs(cls, task: dict) -> int:
        return len(task["labels"])

    @classmethod
    def check_task(cls, task: dict, where: str) -> None:
        """Raise a `ValueError` naming `<where>.<key>` for the first of the kind's saved keys that is wrong."""

    @classmethod
    def pipeline_output(cls, task: dict, logits):
        """What the pipeline returns for one input from the head's logits of it (a numpy array)."""
        raise NotImplementedError

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, self.num_outputs(task))

    def forward(self, token_states, pooled, towers=None):
        features = self.dropout(token_states if self.reads_tokens else pooled)
        # The last layer in the weights' own dtype (float32) whatever the autocast context: bf16 autocast would round
        # every logit and regression score to 8 bits of mantissa (3.0282 -> 3.03125); it is one small matrix
        # product. Called as a module, so engines that gather parameters in forward hooks (ZeRO-3) still see them.
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.classifier(features.to(self.classifier.weight.dtype))

    def labelled_rows(self, labels):
        """`[batch]` bool: which rows carry a label for this task (-100 = none)."""
        return labels != -100

    def loss(self, logits, labels, **kwargs):
        raise NotImplementedError

    def unlabelled_loss(self, logits):
        """Exactly 0, with every parameter of the head in the graph (a zero gradient), for a batch without labels."""
        return logits.sum() * 0.0

    def decode(self, logits, word_start_mask=None):
        """The head's predictions as `forward(...).predictions` gives them in evaluation: None (the logits say all)."""
        return None

    def distillation_terms(self, logits, teacher_logits, temperature: float, labels=None, word_start_mask=None):
        """`(losses, scored)`: the distillation loss of every unit the head scores (a row; a word for token heads)
        against a teacher's logits of the same shape, and which units count (bool, the same shape)."""
        raise NotImplementedError

    def distillation_loss(self, logits, teacher_logits, labels, gold_loss, alpha: float, temperature: float,
                          word_start_mask=None):
        """
        The task's loss with a teacher, per scored unit (a row; a word for token heads): `(1 - alpha) * gold +
        alpha * distillation term` on units with a gold label, the term alone on the others, averaged over the
        units. `gold_loss` (the head's `loss`, a mean over the gold units) stands for the gold part, scaled by the
        gold units' share of the units. Exactly 0 (head in the graph) when nothing is scored.
        """
        losses, scored = self.distillation_terms(logits, teacher_logits.to(logits.device), temperature, labels,
                                                 word_start_mask)
        if not scored.any():
            return self.unlabelled_loss(logits)
        gold = self.gold_units(labels.to(logits.device)) & scored if labels is not None else \
            torch.zeros_like(scored)
        weights = torch.where(gold, alpha, 1.0).to(losses.dtype)
        share = gold.sum() / scored.sum()
        return (1 - alpha) * gold_loss * share + (losses * weights)[scored].sum() / scored.sum()

    def gold_units(self, labels):
        """Which of the units the distillation terms are computed on (rows; tokens for token heads) have gold."""
        return self.labelled_rows(labels)


@register_task_kind
class SingleLabelClassificationHead(TaskHead):
    """One class per sentence: class-weighted cross-entropy, averaged over the labelled rows (by their weights)."""

    kind = problem_type = "single_label_classification"
    default_for_type = True
    saved_keys = ("class_weights",)

    @classmethod
    def check_task(cls, task: dict, where: str) -> None:
        check_weights(task, "class_weights", where)

    @classmethod
    def pipeline_output(cls, task: dict, logits) -> dict:
        probabilities = softmax(logits)
        best = int(probabilities.argmax())
        return {"label": task["labels"][best], "score": float(probabilities[best])}

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__(task, hidden_size, dropout)
        # A plain list read from the config, not a buffer: the config stays the one source of truth, and
        # from_pretrained leaves non-persistent buffers uninitialised.
        self.class_weights = task.get("class_weights")

    def loss(self, logits, labels, label_smoothing=0.0, **kwargs):
        num_labels = logits.shape[-1]
        flat_logits = logits.reshape(-1, num_labels).float()
        flat_labels = labels.reshape(-1).to(flat_logits.device)
        weights = None if self.class_weights is None else flat_logits.new_tensor(self.class_weights)
        per_item = F.cross_entropy(flat_logits, flat_labels, weight=weights, ignore_index=-100, reduction="none",
                                   label_smoothing=label_smoothing)
        kept = flat_labels != -100
        if weights is not None:
            denominator = weights[flat_labels.clamp(min=0)].mul(kept).sum()
        else:
            denominator = kept.sum().to(per_item.dtype)
        return per_item.sum() / denominator.clamp(min=1e-9)

    def distillation_terms(self, logits, teacher_logits, temperature, labels=None, word_start_mask=None):
        kl = softened_kl(logits, teacher_logits, temperature)
        return kl, torch.ones_like(kl, dtype=torch.bool)


@register_task_kind
class TokenClassificationHead(SingleLabelClassificationHead):
    """
    One tag per word, predicted at its first sub-token (-100 on sub-tokens that carry no word label): the same
    weighted cross-entropy per token, or with `crf` a linear-chain CRF over the words' emission scores (the logits
    at each word's first sub-token, compacted per row), trained by its negative log-likelihood per word and decoded
    by Viterbi. `bio_constraints` (on by default) forbids the paths its `tag_format` cannot take: `I-X` except after
    `B-X` / `I-X` (BIO; BIOES also `E-X`, and nothing but `I-X`/`E-X` after `B-X`/`I-X`); plain tags have none.

    Word positions come from `word_start_mask` (1 at every word's first sub-token, as the collator gives it), or
    without one from the labels (their non-ignored positions: first-sub-token labelling).
    """

    kind = task_type = "token_classification"
    problem_type = "single_label_classification"  # per token
    saved_keys = ("class_weights", "crf", "bio_constraints", "tag_format")
    reads_tokens = True
    tag_formats = ("BIO", "BIOES", "plain")  # IOB2 (the default), BIOES, or plain labels without prefixes (POS)

    @classmethod
    def check_task(cls, task: dict, where: str) -> None:
        super().check_task(task, where)
        check_flags(task, ("crf", "bio_constraints"), where)
        if "tag_format" in task and task["tag_format"] not in cls.tag_formats:
            raise ValueError(f"{where}.tag_format: {task['tag_format']!r} is not one of "
                             f"{', '.join(map(repr, cls.tag_formats))}")

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__(task, hidden_size, dropout)
        self.crf = crf_for_task(task) if task.get("crf") else None

    def labelled_rows(self, labels):
        return (labels != -100).any(dim=-1)

    def loss(self, logits, labels, word_start_mask=None, label_smoothing=0.0, **kwargs):
        if self.crf is None:
            return super().loss(logits, labels, label_smoothing=label_smoothing)
        labels = labels.to(logits.device)
        starts = (labels != -100) if word_start_mask is None else word_start_mask.to(logits.device).bool()
        index, mask = compact_word_positions(starts)
        tags = gather_word_positions(labels, index)
        # A row is scored when every word has a known tag (no label for this task, or a tag outside the label list
        # in evaluation data, leaves the row out).
        scored = mask.any(dim=-1) & ((tags != -100) | ~mask).all(dim=-1)
        if not scored.any():
            return self.unlabelled_loss(logits)
        emissions = gather_word_positions(logits[scored], index[scored])
        log_likelihood = self.crf.log_likelihood(emissions, tags[scored].clamp(min=0), mask[scored])
        return -log_likelihood.sum() / mask[scored].sum()

    def unlabelled_loss(self, logits):
        loss = super().unlabelled_loss(logits)
        # The CRF's scores stay in the graph too, so DDP sees a gradient (zero) for every parameter.
        return loss if self.crf is None else loss + sum(parameter.sum() for parameter in self.crf.parameters()) * 0.0

    def gold_units(self, labels):
        return labels != -100

    def distillation_terms(self, logits, teacher_logits, temperature, labels=None, word_start_mask=None):
        """Per word: the KL at each word's first sub-token (for a CRF, of its emission scores), the words of
        `word_start_mask` (without one, the positions the labels do not ignore)."""
        if word_start_mask is not None:
            scored = word_start_mask.to(logits.device).bool()
        elif labels is not None:
            scored = labels.to(logits.device) != -100
        else:
            raise ValueError("distilling a token head needs word_start_mask (or labels) to know its word positions")
        return softened_kl(logits, teacher_logits, temperature), scored

    def decode(self, logits, word_start_mask=None):
        """With a CRF, predicted tag ids `[batch, seq]`: Viterbi over the word positions of `word_start_mask` (-100
        elsewhere); else None (the argmax of the logits)."""
        if self.crf is None or word_start_mask is None:
            return None
        return self.crf.decode_word_starts(logits, word_start_mask)


@register_task_kind
class MultiLabelClassificationHead(TaskHead):
    """
    Any number of labels per sentence: one sigmoid per label, binary cross-entropy (optionally `pos_weight` per
    label) averaged over the labelled rows and labels. Labels are multi-hot floats; a row of -100 has no label.
    """

    kind = problem_type = "multi_label_classification"
    saved_keys = ("pos_weight", "threshold", "always_top_label")
    min_labels = 1

    @classmethod
    def check_task(cls, task: dict, where: str) -> None:
        check_weights(task, "pos_weight", where)
        threshold = task.get("threshold")
        if threshold is not None and not (_is_number(threshold) and 0 < threshold < 1):
            raise ValueError(f"{where}.threshold: a number between 0 and 1 is required, got {threshold!r}")
        check_flags(task, ("always_top_label",), where)

    @staticmethod
    def chosen_labels(task: dict, probabilities) -> list:
        """Ids of the labels whose sigmoid is at or over the task's threshold, best first (the best one alone if none
        is and the task has `always_top_label`): the one rule of evaluation and the pipeline."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        order = np.argsort(-probabilities, kind="stable")
        chosen = [int(index) for index in order if probabilities[index] >= task.get("threshold", 0.5)]
        return chosen or ([int(order[0])] if task.get("always_top_label") else [])

    @classmethod
    def pipeline_output(cls, task: dict, logits) -> list:
        probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        return [{"label": task["labels"][index], "score": float(probabilities[index])}
                for index in cls.chosen_labels(task, probabilities)]

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__(task, hidden_size, dropout)
        self.pos_weight = task.get("pos_weight")

    def labelled_rows(self, labels):
        return labels[..., 0] != -100

    def loss(self, logits, labels, **kwargs):
        kept = self.labelled_rows(labels)
        if not kept.any():
            return self.unlabelled_loss(logits)
        predicted = logits[kept].float()
        pos_weight = None if self.pos_weight is None else predicted.new_tensor(self.pos_weight)
        targets = labels[kept].float().to(predicted.device)
        return F.binary_cross_entropy_with_logits(predicted, targets, pos_weight=pos_weight)

    def distillation_terms(self, logits, teacher_logits, temperature, labels=None, word_start_mask=None):
        """Per row: the binary cross-entropy against the teacher's sigmoids, averaged over the labels (no
        temperature: each sigmoid is its own two-class distribution)."""
        losses = F.binary_cross_entropy_with_logits(logits.float(), torch.sigmoid(teacher_logits.float()),
                                                    reduction="none").mean(dim=-1)
        return losses, torch.ones_like(losses, dtype=torch.bool)


@register_task_kind
class RegressionHead(TaskHead):
    """
    One number per sentence, in the data's own units: the linear layer predicts the target standardised with the
    train split's mean and standard deviation (kept in the config), and the loss is the mean squared error on that
    standardised scale. NaN marks a row without a target.
    """

    kind = problem_type = "regression"
    saved_keys = ("target_mean", "target_std")
    min_labels = None

    @classmethod
    def num_outputs(cls, task: dict) -> int:
        return 1

    @classmethod
    def check_task(cls, task: dict, where: str) -> None:
        if "target_mean" in task or "target_std" in task:
            mean, std = task.get("target_mean"), task.get("target_std")
            if not (_is_number(mean) and _is_number(std) and std > 0):
                raise ValueError(f"{where}.target_std: target_mean and a positive target_std are required, got "
                                 f"{mean!r}, {std!r}")

    @classmethod
    def pipeline_output(cls, task: dict, logits) -> dict:
        return {"score": float(logits[0])}

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        super().__init__(task, hidden_size, dropout)
        self.target_mean = float(task.get("target_mean", 0.0))
        self.target_std = float(task.get("target_std", 1.0))

    def forward(self, token_states, pooled, towers=None):
        return super().forward(token_states, pooled) * self.target_std + self.target_mean

    def labelled_rows(self, labels):
        return ~torch.isnan(labels.reshape(labels.shape[0], -1)[:, 0])

    def loss(self, logits, labels, **kwargs):
        kept = self.labelled_rows(labels)
        if not kept.any():
            return self.unlabelled_loss(logits)
        predicted = logits.reshape(-1)[kept].float()
        targets = labels.reshape(-1)[kept].float().to(predicted.device)
        return F.mse_loss((predicted - targets) / self.target_std, torch.zeros_like(predicted))

    def distillation_terms(self, logits, teacher_logits, temperature, labels=None, word_start_mask=None):
        """Per row: the squared difference to the teacher's score, on the standardised scale the gold loss uses."""
        losses = ((logits.float() - teacher_logits.float()).reshape(len(logits), -1)[:, 0] / self.target_std) ** 2
        return losses, torch.ones_like(losses, dtype=torch.bool)


SCORED_LOSSES = ("cosent", "cosine_mse")  # train on a score per pair
SIMILARITY_LOSSES = (*SCORED_LOSSES, "multiple_negatives_ranking")
DEFAULT_SIMILARITY_SCALE = 20.0
TOWERS = ("pair", "negative")  # the inputs a bi-encoder row encodes beside its text: `<tower>_input_ids`, ...


@register_task_kind
class SentenceSimilarityHead(TaskHead):
    """
    A bi-encoder: each text of a pair is encoded separately by the shared encoder and pooled as `embed()` pools; the
    score is their cosine. No parameters of its own: training moves the embedding itself.

    `forward` returns the row's embeddings `[batch, towers, hidden]` in float32 (the text, then the `pair` and
    `negative` towers the batch has); `loss` by the task's `loss`:
    - `cosent` (scored pairs, the default): CoSENT's rank loss on the cosines (scale 20), any score range;
    - `cosine_mse`: MSE between the cosine and the score mapped onto [0, 1] by the train split's range
      (`target_min`, `target_max`);
    - `multiple_negatives_ranking` (positive pairs, label 1.0): in-batch negatives (and the rows' hard negatives),
      cross-entropy over the scaled cosines (scale 20).
    With `matryoshka_dims` the loss is the mean over the full and each truncated embedding. NaN = no pair in the row.
    """

    kind = task_type = "sentence_similarity"
    encodes_pair_separately = True
    saved_keys = ("loss", "scale", "matryoshka_dims", "target_min", "target_max", "hard_negatives")
    min_labels = None
    default_for_type = True

    @classmethod
    def num_outputs(cls, task: dict) -> int:
        return 0

    @classmethod
    def check_task(cls, task: dict, where: str) -> None:
        check_flags(task, ("hard_negatives",), where)
        loss = task.get("loss", SCORED_LOSSES[0])
        if loss not in SIMILARITY_LOSSES:
            raise ValueError(f"{where}.loss: {loss!r} is not one of {', '.join(SIMILARITY_LOSSES)}")
        scale = task.get("scale", DEFAULT_SIMILARITY_SCALE)
        if not (_is_number(scale) and scale > 0):
            raise ValueError(f"{where}.scale: a positive number is required, got {scale!r}")
        dims = task.get("matryoshka_dims")
        if dims is not None and (not isinstance(dims, (list, tuple)) or not dims or not all(
                isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 for dim in dims)):
            raise ValueError(f"{where}.matryoshka_dims: a list of positive integers is required, got {dims!r}")
        if "target_min" in task or "target_max" in task:
            low, high = task.get("target_min"), task.get("target_max")
            if not (_is_number(low) and _is_number(high) and high > low):
                raise ValueError(f"{where}.target_max: target_min < target_max are required, got {low!r}, {high!r}")

    @classmethod
    def pipeline_output(cls, task: dict, logits) -> dict:
        """The cosine of the text's and the pair's embeddings (`logits`: `[2, hidden]`)."""
        first, second = np.asarray(logits[0], dtype=np.float64), np.asarray(logits[1], dtype=np.float64)
        norm = max(np.linalg.norm(first) * np.linalg.norm(second), 1e-12)
        return {"score": float(first @ second / norm)}

    def __init__(self, task: dict, hidden_size: int, dropout: float):
        nn.Module.__init__(self)
        self.loss_name = task.get("loss", SCORED_LOSSES[0])
        self.scale = float(task.get("scale", DEFAULT_SIMILARITY_SCALE))
        too_large = [dim for dim in task.get("matryoshka_dims") or () if dim >= hidden_size]
        if too_large:
            raise ValueError(f"task {task['name']!r}: matryoshka_dims {too_large} are not below the embedding size "
                             f"{hidden_size}")
        self.dims = [None, *(task.get("matryoshka_dims") or ())]
        # Only a task that reads hard negatives scores them: another task's rows carry an empty negative tower.
        self.hard_negatives = bool(task.get("hard_negatives"))
        self.target_min, self.target_max = task.get("target_min"), task.get("target_max")

    def forward(self, token_states, pooled, towers=None):
        towers = towers or {}
        names = [name for name in TOWERS if towers.get(name) is not None and (name != "negative" or self.hard_negatives)]
        return torch.stack([pooled.float(), *(towers[name].float() for name in names)], dim=1)

    def labelled_rows(self, labels):
        return ~torch.isnan(labels.reshape(labels.shape[0], -1)[:, 0])

    def loss(self, logits, labels, **kwargs):
        kept = self.labelled_rows(labels)
        if not kept.any() or logits.shape[1] < 2:
            return self.unlabelled_loss(logits)
        embeddings, targets = logits[kept], labels.reshape(-1)[kept].float().to(logits.device)
        return sum(self.loss_at(embeddings[..., :dim], targets) for dim in self.dims) / len(self.dims)

    def distillation_terms(self, logits, teacher_logits, temperature, labels=None, word_start_mask=None):
        """Per row: the mean squared difference between the student's and the teacher's embedding of the row's own
        text (sentence-transformers' MSE distillation), on every row: rows of other data sets have a text too."""
        student, teacher = logits[:, 0].float(), teacher_logits[:, 0].float()
        if student.shape != teacher.shape:
            raise ValueError(f"the teacher's embeddings have {teacher.shape[-1]} dimensions, the student's "
                             f"{student.shape[-1]}")
        losses = (student - teacher).pow(2).mean(dim=-1)
        return losses, torch.ones_like(losses, dtype=torch.bool)

    def loss_at(self, embeddings, targets):
        if self.loss_name == "multiple_negatives_ranking":
            candidates = F.normalize(embeddings[:, 1:].transpose(0, 1).reshape(-1, embeddings.shape[-1]), dim=-1)
            scores = F.normalize(embeddings[:, 0], dim=-1) @ candidates.T * self.scale
            return F.cross_entropy(scores, torch.arange(len(scores), device=scores.device))
        cosines = F.cosine_similarity(embeddings[:, 0], embeddings[:, 1], dim=-1)
        if self.loss_name == "cosine_mse":
            return F.mse_loss(cosines, (targets - self.target_min) / (self.target_max - self.target_min))
        # CoSENT: log(1 + sum over pairs (i, j) with target_i < target_j of exp(scale * (cos_i - cos_j))).
        differences = (cosines[:, None] - cosines[None, :]) * self.scale
        differences = differences.masked_fill(~(targets[:, None] < targets[None, :]), float("-inf"))
        return torch.logsumexp(torch.cat([differences.new_zeros(1), differences.reshape(-1)]), dim=0)
