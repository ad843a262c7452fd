"""The kinds of task hf_mtl trains, one class each: what a task reads, how its gold labels are checked, resolved and
encoded, how its predictions are decoded and scored, and how its report section, plot and model-card entry look.

A task comes from the run config's `tasks` block (or a saved model's `config.tasks`) through [`parse_task`], once,
and is immutable from then on: [`Task.resolve`] returns the task with its labels, class weights and target scale
filled in from the train split. Its head and loss live in `modeling_mtl.py` (self-contained for the Hub copy), its
pipeline output in `pipeline_mtl.py`; everything else a kind needs is here.

| kind (`type` / `problem_type`) | gold per example | `<task>_labels` | metrics (main first) |
|---|---|---|---|
| `sequence_classification` / `single_label_classification` | a label | class id | accuracy, macro_f1 |
| `sequence_classification` / `multi_label_classification` | a set of labels | multi-hot floats | micro_f1, accuracy (exact set), macro_f1 |
| `sequence_classification` / `regression` | a number | the number | pearson, spearman, mse |
| `token_classification` (`tag_format` `"BIO"`, `"BIOES"`) | one IOB2 / BIOES tag per word | tag id per sub-token | f1, precision, recall, accuracy (seqeval) |
| `token_classification` (`tag_format` `"plain"`) | one tag per word (POS) | tag id per sub-token | accuracy, macro_f1 (over tags) |
"""

import dataclasses
import math
import re
from collections import Counter
from dataclasses import dataclass, fields
from typing import ClassVar

import datasets
import numpy as np
import torch

from .configuration_mtl import PROBLEM_TYPES, TAG_FORMATS, TASK_TYPES, task_kind, validate_task
from .errors import ConfigError, DataError

IGNORE_INDEX = -100
OUTSIDE_TAG = "O"
STRINGS = datasets.List(datasets.Value("string"))
LIST_FEATURES = (datasets.List, datasets.Sequence, datasets.LargeList)
BIO_TAG = re.compile(r"^(O|[BI]-\S+)$")
BIOES_TAG = re.compile(r"^(O|[BIES]-\S+)$")


@dataclass(frozen=True, kw_only=True)
class Task:
    """
    One head of a multi-task model and the columns it reads. Fields are the run config's task keys; `labels` (and
    the kind's weights or scale) are `None` until [`Task.resolve`] fills them from the data.
    """

    kind: ClassVar[str]
    metric_names: ClassVar[tuple]  # `<task>_<metric>` keys, the main one (averaged into `score`) first
    hub_task_type: ClassVar[str]
    labels_per_token: ClassVar[bool] = False

    name: str
    type: str
    dataset: str | None = None
    problem_type: str | None = None
    text_column: str | None = None
    tokens_column: str = "tokens"
    text_pair_column: str | None = None
    tokens_pair_column: str | None = None
    label_column: str = "label"
    tags_column: str = "tags"
    labels: tuple | None = None
    reinit_head: bool = False

    # ---- config ------------------------------------------------------------------------------------------------

    @property
    def main_metric(self) -> str:
        return self.metric_names[0]

    @property
    def needs_word_starts(self) -> bool:
        """Whether the head runs over word positions (`word_start_mask`) and decodes in the model (a CRF)."""
        return False

    @property
    def smooths_labels(self) -> bool:
        """Whether `label_smoothing_factor` applies to this task's loss (softmax cross-entropies only)."""
        return False

    @property
    def target_column(self) -> str:
        return self.label_column

    @property
    def target_key(self) -> str:
        """The config key naming `target_column`, for messages."""
        return "label_column"

    @property
    def input_columns(self) -> tuple:
        """`("text" | "words", column, pair column or None)`: the input this task reads from its data set."""
        if self.text_column is not None:
            return "text", self.text_column, self.text_pair_column
        return "words", self.tokens_column, self.tokens_pair_column

    @property
    def label2id(self) -> dict:
        return {label: index for index, label in enumerate(self.labels or ())}

    def labels_summary(self) -> str:
        """What the task predicts, for the model card."""
        return ", ".join(f"`{label}`" for label in self.labels or ())

    def head_config(self) -> dict:
        """The task as `MultiTaskConfig.tasks` keeps it (what the model, the pipeline and a reload need)."""
        head = {"name": self.name, "type": self.type}
        if self.type == "sequence_classification":
            head["problem_type"] = self.kind
        if self.labels is not None:
            head["labels"] = list(self.labels)
        return head

    def check(self, where: str) -> None:
        """Raise a `ConfigError` naming `<where>.<key>` for the first bad value (saved fields: `validate_task`)."""
        for key in ("tokens_column", "label_column", "tags_column"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"{where}.{key}: a non-empty string is required, got {getattr(self, key)!r}")
        for key in ("text_column", "text_pair_column", "tokens_pair_column"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{where}.{key}: a non-empty string or null is required, got {value!r}")
        if self.text_pair_column is not None and self.text_column is None:
            raise ConfigError(f"{where}.text_pair_column: a text pair needs text_column for its first text")
        if self.tokens_pair_column is not None and self.text_column is not None:
            raise ConfigError(
                f"{where}.tokens_pair_column: the first input is text ({self.text_column!r}); "
                "use text_pair_column for a second text"
            )
        if not isinstance(self.reinit_head, bool):
            raise ConfigError(f"{where}.reinit_head: true or false, got {self.reinit_head!r}")
        try:
            validate_task(self._fields_to_validate(), where, labels_known=False)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def _fields_to_validate(self) -> dict:
        """The saved fields that `validate_task` checks; run-only values (`"balanced"`) are checked by the kind."""
        task = {"name": self.name, "type": self.type, "problem_type": self.problem_type}
        if self.labels is not None:
            task["labels"] = list(self.labels)
        return task

    # ---- data --------------------------------------------------------------------------------------------------

    @property
    def gold_feature(self):
        return datasets.Value("string")

    @property
    def label_feature(self):
        return datasets.Value("int64")

    def has_gold(self, gold) -> bool:
        return bool(gold)

    def missing_gold(self):
        return ""

    def normalize_gold(self, value, names, place, num_words=None, tag_scheme="iob2", strings_only=False):
        """A raw cell as this task's gold (label strings; ints mapped through `names`); `place()` names the row.
        `num_words` (the row's input length) and `tag_scheme` matter to token tasks only; `strings_only`: the column
        mixes kinds of JSON value, so a label that is not a string is an error rather than a class of its own."""
        raise NotImplementedError

    def feature_problem(self, feature) -> str | None:
        """What is wrong with the gold column's type for this kind (never coerced), or None."""
        if isinstance(feature, LIST_FEATURES):
            return ('holds lists of labels, but the task takes one label per example; for several labels per example '
                    'set "problem_type": "multi_label_classification"')
        return _label_feature_problem(feature)

    def label_list_from(self, golds) -> tuple:
        """The labels of a train split's gold values: sorted, distinct."""
        return tuple(sorted({label for gold in golds if self.has_gold(gold) for label in self.gold_labels(gold)}))

    def gold_labels(self, gold) -> list:
        return [gold]

    def unknown_labels(self, golds) -> Counter:
        """Gold labels outside the label list, with how often they occur."""
        known = self.label2id
        return Counter(
            label for gold in golds if self.has_gold(gold) for label in self.gold_labels(gold) if label not in known
        )

    def encode_labels(self, gold, word_ids, label_all_tokens: bool):
        """`<task>_labels` of one row; `gold` is this task's missing value where the row has none."""
        return self.label2id.get(gold, IGNORE_INDEX) if self.has_gold(gold) else IGNORE_INDEX

    def no_labels(self, length: int):
        """`<task>_labels` of a row of another data set."""
        return IGNORE_INDEX

    def collate_labels(self, values: list, sequence_length: int, padding_side: str) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long)

    def resolve(self, golds, trained_head: dict | None = None) -> "Task":
        """The task with everything the data decides filled in (`golds`: the train split's gold values, or None)."""
        labels = self.labels
        if labels is None:
            labels = tuple(trained_head["labels"]) if trained_head and "labels" in trained_head else None
        if labels is None and golds is not None:
            labels = self.label_list_from(golds)
        return dataclasses.replace(self, labels=labels)

    def resolve_weights(self, label_column, trained_head: dict | None) -> "Task":
        """The task with its loss weights computed from the encoded train labels (`label_column`; None without a
        train split), where the kind has any."""
        return self

    def label_count_error(self, where: str, dataset_name: str):
        """None, or the `DataError` for a label list too short to train a head."""
        if self.labels is not None and len(self.labels) < 2:
            return DataError(
                f"{where}: the train split of data set {dataset_name!r} has {len(self.labels)} distinct label(s) "
                f"{list(self.labels)} in column {self.target_column!r}; a head needs at least 2"
            )
        return None

    # ---- predictions and metrics -------------------------------------------------------------------------------

    def reduce_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """What evaluation keeps of a batch's logits (Trainer accumulates this, not the logits)."""
        return logits.argmax(dim=-1)

    def decode(self, prediction, row: dict):
        """One example's reduced prediction as a gold-shaped value (label, label list, number or word tags)."""
        return self.labels[int(prediction)]

    def compute(self, pairs: list) -> dict:
        """The metric module's full output on `{"gold", "pred"}` pairs (per class / entity type included)."""
        from .evaluation import load_metric

        return load_metric(self.kind).compute(
            predictions=[pair["pred"] for pair in pairs], references=[pair["gold"] for pair in pairs]
        )

    def flatten(self, result: dict) -> dict:
        """`{metric: value}` for `metric_names` from `compute`'s output."""
        return {metric: result[metric] for metric in self.metric_names}

    # ---- what a person reads -----------------------------------------------------------------------------------

    # Hub metric id, display name and `args` per metric name, for the model card's model-index.
    card_metrics: ClassVar[dict] = {}

    def report_section(self, result: dict, examples: list) -> list:
        raise NotImplementedError

    def plot(self, examples: list, plots_dir, split_name: str):
        """The kind's plot of one split's decoded examples (those with gold), or None."""
        return None


@dataclass(frozen=True, kw_only=True)
class SingleLabelClassificationTask(Task):
    """One label per sentence (or sentence pair): softmax + cross-entropy."""

    kind: ClassVar[str] = "single_label_classification"
    metric_names: ClassVar[tuple] = ("accuracy", "macro_f1")
    hub_task_type: ClassVar[str] = "text-classification"
    card_metrics: ClassVar[dict] = {
        "accuracy": ("accuracy", "Accuracy", None), "macro_f1": ("f1", "Macro F1", {"average": "macro"}),
    }

    class_weights: str | tuple | None = None  # "balanced" (resolved from train counts) or one weight per label

    @property
    def smooths_labels(self) -> bool:
        return True

    def head_config(self) -> dict:
        head = super().head_config()
        if self.class_weights is not None:
            head["class_weights"] = list(self.class_weights)
        return head

    def check(self, where: str) -> None:
        weights = self.class_weights
        if weights is not None and weights != "balanced" and not isinstance(weights, (list, tuple)):
            raise ConfigError(f'{where}.class_weights: null, "balanced" or a list of non-negative numbers, got {weights!r}')
        super().check(where)

    def _fields_to_validate(self) -> dict:
        task = super()._fields_to_validate()
        if self.class_weights not in (None, "balanced"):
            task["class_weights"] = list(self.class_weights)
        return task

    def normalize_gold(self, value, names, place, num_words=None, tag_scheme="iob2", strings_only=False):
        if strings_only and value is not None and not isinstance(value, (str, list, dict)):
            raise DataError(f"{place()}: label {_short(value)} ({type(value).__name__}) among string labels")
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value < 0):
            return ""
        if isinstance(value, float) and math.isnan(value):
            return ""
        if isinstance(value, (list, tuple, dict)):
            raise DataError(
                f"{place()}: holds a {type(value).__name__} ({_short(value)}), not one label; for several labels per "
                'example set "problem_type": "multi_label_classification"'
            )
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise DataError(f"{place()}: {value!r} is not a class label (a string or an integer class id)")
        if isinstance(value, (int, float)) and names is not None:
            if int(value) >= len(names):
                raise DataError(f"{place()}: label id {int(value)} but only {len(names)} label names")
            return names[int(value)]
        return str(int(value) if isinstance(value, float) else value).strip()

    def class_counts(self, label_column) -> list:
        """Train label ids as the loss sees them (per labelled sub-token for a token task)."""
        ids = np.concatenate([np.asarray(row, dtype=np.int64).reshape(-1) for row in label_column]) if len(
            label_column
        ) else np.zeros(0, dtype=np.int64)
        return np.bincount(ids[ids >= 0], minlength=len(self.labels)).tolist()

    def resolve_weights(self, label_column, trained_head: dict | None) -> "Task":
        """`class_weights: "balanced"` as sklearn's n / (k · n_c) from the encoded train labels (a class never seen
        gets 1); without a train split, the trained head's weights."""
        if self.class_weights != "balanced":
            return self
        if label_column is None:
            return dataclasses.replace(self, class_weights=(trained_head or {}).get("class_weights"))
        counts = np.asarray(self.class_counts(label_column), dtype=np.float64)
        total, classes = counts.sum(), len(counts)
        weights = tuple(float(total / (classes * count)) if count > 0 else 1.0 for count in counts)
        return dataclasses.replace(self, class_weights=weights)

    def report_section(self, result: dict, examples: list) -> list:
        from .reports import class_order, markdown_number, markdown_scores, markdown_table, text_cell

        per_class = result["per_class"]
        support = sum(scores["number"] for scores in per_class.values())
        rows = [
            [text_cell(label), *markdown_scores(per_class[label]), str(per_class[label]["number"])]
            for label in class_order(self.labels, per_class)
            if label in per_class
        ]
        rows.append(["**macro avg**", *markdown_scores(result, "macro_"), str(support)])
        labels, counts = self.confusion_matrix(examples)
        return [
            f"{len(examples)} examples.",
            "",
            *markdown_table(["class", "precision", "recall", "F1", "support"], rows),
            "",
            f"Accuracy: {markdown_number(result['accuracy'])}",
            "",
            "Confusion matrix (rows: gold, columns: predicted):",
            "",
            *markdown_table(
                ["gold \\ predicted", *map(text_cell, labels)],
                [[text_cell(gold), *map(str, row)] for gold, row in zip(labels, counts)],
            ),
        ]

    def confusion_matrix(self, examples: list) -> tuple:
        """`(labels, counts)`: `counts[i][j]` examples with gold `labels[i]` predicted `labels[j]`."""
        from .reports import class_order

        pairs = Counter((example[self.name]["gold"], example[self.name]["pred"]) for example in examples)
        labels = class_order(self.labels, [gold for gold, _ in pairs])
        return labels, [[pairs[(gold, pred)] for pred in labels] for gold in labels]

    def plot(self, examples: list, plots_dir, split_name: str):
        from .plots import plot_confusion_matrix

        labels, counts = self.confusion_matrix(examples)
        title = f"{self.name}: confusion matrix ({split_name})"
        return plot_confusion_matrix(labels, counts, plots_dir / f"confusion_matrix_{self.name}.png", title)


@dataclass(frozen=True, kw_only=True)
class MultiLabelClassificationTask(Task):
    """Any number of labels per sentence (or pair): one sigmoid per label, binary cross-entropy, a threshold."""

    kind: ClassVar[str] = "multi_label_classification"
    metric_names: ClassVar[tuple] = ("micro_f1", "accuracy", "macro_f1")
    hub_task_type: ClassVar[str] = "text-classification"
    card_metrics: ClassVar[dict] = {
        "accuracy": ("accuracy", "Exact-set accuracy", None),
        "micro_f1": ("f1", "Micro F1", {"average": "micro"}),
        "macro_f1": ("f1", "Macro F1", {"average": "macro"}),
    }

    label_separator: str | None = None  # splits a string cell ("a#b") into labels
    allow_empty_labels: bool = False  # an empty label set is a valid gold ("none of them")
    pos_weight: str | tuple | None = None  # "balanced" (negatives / positives per label) or one weight per label
    threshold: float = 0.5
    always_top_label: bool = False  # predict the best label even when none clears the threshold

    @property
    def gold_feature(self):
        return STRINGS

    @property
    def label_feature(self):
        return datasets.List(datasets.Value("float32"))

    def head_config(self) -> dict:
        head = super().head_config()
        head["threshold"] = self.threshold
        if self.pos_weight is not None:
            head["pos_weight"] = list(self.pos_weight)
        if self.always_top_label:
            head["always_top_label"] = True
        return head

    def check(self, where: str) -> None:
        if self.label_separator is not None and (not isinstance(self.label_separator, str) or not self.label_separator):
            raise ConfigError(f"{where}.label_separator: a non-empty string is required, got {self.label_separator!r}")
        if not isinstance(self.allow_empty_labels, bool):
            raise ConfigError(f"{where}.allow_empty_labels: true or false, got {self.allow_empty_labels!r}")
        if self.pos_weight is not None and self.pos_weight != "balanced" and not isinstance(self.pos_weight, (list, tuple)):
            raise ConfigError(f'{where}.pos_weight: null, "balanced" or a list of non-negative numbers, got {self.pos_weight!r}')
        super().check(where)

    def _fields_to_validate(self) -> dict:
        task = super()._fields_to_validate()
        task.update(threshold=self.threshold, always_top_label=self.always_top_label)
        if self.pos_weight not in (None, "balanced"):
            task["pos_weight"] = list(self.pos_weight)
        return task

    def has_gold(self, gold) -> bool:
        return gold is not None

    def missing_gold(self):
        return None

    def gold_labels(self, gold) -> list:
        return list(gold)

    def feature_problem(self, feature) -> str | None:
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            return None  # labels joined by label_separator
        return _label_feature_problem(inner_feature(feature)) if isinstance(feature, LIST_FEATURES) else (
            _label_feature_problem(feature) or (None if isinstance(feature, datasets.Json) else
                                                f"holds {feature}, neither lists of labels nor strings to split")
        )

    def normalize_gold(self, value, names, place, num_words=None, tag_scheme="iob2", strings_only=False):
        if value is None:
            return None
        if isinstance(value, str):
            if self.label_separator is None:
                raise DataError(
                    f"{place()}: holds the string {_short(value)}, not a list of labels; set label_separator "
                    '(e.g. "#") to split it, or give a list'
                )
            value = [part for part in value.split(self.label_separator)]
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{place()}: holds {_short(value)}, neither a list of labels nor a string to split")
        labels = []
        for item in value:
            if strings_only and not isinstance(item, str):
                raise DataError(f"{place()}: label {_short(item)} ({type(item).__name__}) among string labels")
            if isinstance(item, int) and not isinstance(item, bool) and names is not None:
                if not 0 <= item < len(names):
                    raise DataError(f"{place()}: label id {item} but only {len(names)} label names")
                item = names[item]
            elif not isinstance(item, (str, int)) or isinstance(item, bool):
                raise DataError(f"{place()}: {item!r} in the label list is not a label")
            item = str(item).strip()
            if item and item not in labels:
                labels.append(item)
        if not labels and not self.allow_empty_labels:
            raise DataError(
                f"{place()}: an empty label list; every example needs at least one label (or set "
                "allow_empty_labels: true where none applies)"
            )
        return sorted(labels)

    def encode_labels(self, gold, word_ids, label_all_tokens: bool):
        if gold is None:
            return self.no_labels(0)
        return [1.0 if label in gold else 0.0 for label in self.labels]

    def no_labels(self, length: int):
        return [float(IGNORE_INDEX)] * len(self.labels)

    def collate_labels(self, values: list, sequence_length: int, padding_side: str) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)

    def resolve_weights(self, label_column, trained_head: dict | None) -> "Task":
        """`pos_weight: "balanced"`: negatives / positives of each label in train (1 for a label never seen)."""
        if self.pos_weight != "balanced":
            return self
        if label_column is None:
            return dataclasses.replace(self, pos_weight=(trained_head or {}).get("pos_weight"))
        targets = np.asarray([row for row in label_column if row[0] != IGNORE_INDEX], dtype=np.float64)
        positives = targets.sum(axis=0)
        negatives = len(targets) - positives
        weights = tuple(float(neg / pos) if pos > 0 else 1.0 for neg, pos in zip(negatives, positives))
        return dataclasses.replace(self, pos_weight=weights)

    def reduce_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def predicted_label_ids(self, probabilities) -> list:
        """Ids of the labels at or over the threshold, best first (the best one alone if `always_top_label`)."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        order = np.argsort(-probabilities, kind="stable")
        chosen = [int(index) for index in order if probabilities[index] >= self.threshold]
        return chosen or ([int(order[0])] if self.always_top_label else [])

    def decode(self, prediction, row: dict):
        return sorted(self.labels[index] for index in self.predicted_label_ids(prediction))

    def report_section(self, result: dict, examples: list) -> list:
        from .reports import class_order, markdown_number, markdown_scores, markdown_table, text_cell

        per_label = result["per_label"]
        rows = [
            [text_cell(label), *markdown_scores(per_label[label]), str(per_label[label]["number"])]
            for label in class_order(self.labels, per_label)
            if label in per_label
        ]
        support = sum(scores["number"] for scores in per_label.values())
        rows.append(["**micro avg**", *markdown_scores(result, "micro_"), str(support)])
        rows.append(["**macro avg**", *markdown_scores(result, "macro_"), str(support)])
        sizes = Counter(len(example[self.name]["pred"]) for example in examples)
        return [
            f"{len(examples)} examples; threshold {self.threshold}"
            + (", the best label when none clears it." if self.always_top_label else "."),
            "",
            *markdown_table(["label", "precision", "recall", "F1", "support (gold)"], rows),
            "",
            f"Exact-set accuracy: {markdown_number(result['accuracy'])}",
            "",
            "Predicted labels per example: " + ", ".join(f"{size}: {count}" for size, count in sorted(sizes.items())),
        ]

    def plot(self, examples: list, plots_dir, split_name: str):
        from .plots import plot_per_label_f1

        per_label = self.compute([example[self.name] for example in examples])["per_label"]
        labels = [label for label in class_order_of(self.labels, per_label)]
        return plot_per_label_f1(
            labels, [per_label[label]["f1"] for label in labels], [per_label[label]["number"] for label in labels],
            plots_dir / f"per_label_f1_{self.name}.png", f"{self.name}: F1 per label ({split_name})",
        )


@dataclass(frozen=True, kw_only=True)
class RegressionTask(Task):
    """One number per sentence (or pair), e.g. a similarity score: mean squared error on standardised targets."""

    kind: ClassVar[str] = "regression"
    metric_names: ClassVar[tuple] = ("pearson", "spearman", "mse")
    hub_task_type: ClassVar[str] = "text-classification"
    card_metrics: ClassVar[dict] = {
        "pearson": ("pearsonr", "Pearson correlation", None),
        "spearman": ("spearmanr", "Spearman correlation", None),
        "mse": ("mse", "Mean squared error", None),
    }

    # The train targets' mean and standard deviation: the head predicts (y - mean) / std, reports y.
    target_mean: float | None = None
    target_std: float | None = None

    @property
    def gold_feature(self):
        return datasets.Value("float64")

    @property
    def label_feature(self):
        return datasets.Value("float32")

    def labels_summary(self) -> str:
        scale = f" (train mean {self.target_mean:.4g}, sd {self.target_std:.4g})" if self.target_mean is not None else ""
        return "a number" + scale

    def head_config(self) -> dict:
        head = super().head_config()
        if self.target_mean is not None:
            head.update(target_mean=self.target_mean, target_std=self.target_std)
        return head

    def check(self, where: str) -> None:
        if self.labels is not None:
            raise ConfigError(f"{where}.labels: a regression task predicts one number and takes no labels")
        super().check(where)

    def _fields_to_validate(self) -> dict:
        task = super()._fields_to_validate()
        if self.target_mean is not None or self.target_std is not None:
            task.update(target_mean=self.target_mean, target_std=self.target_std)
        return task

    def has_gold(self, gold) -> bool:
        return gold is not None and not math.isnan(gold)

    def missing_gold(self):
        return math.nan

    def label_list_from(self, golds):
        return None

    def unknown_labels(self, golds) -> Counter:
        return Counter()

    def feature_problem(self, feature) -> str | None:
        numeric = isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "float", "double"))
        if numeric or isinstance(feature, datasets.Json):
            return None
        return f"holds {feature}, not numbers (a regression target)"

    def normalize_gold(self, value, names, place, num_words=None, tag_scheme="iob2", strings_only=False):
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{place()}: {_short(value)} is not a number (a regression target)")
        if not math.isfinite(value):
            raise DataError(f"{place()}: {value!r} is not a finite number (a regression target)")
        return float(value)

    def encode_labels(self, gold, word_ids, label_all_tokens: bool):
        return float(gold) if self.has_gold(gold) else math.nan

    def no_labels(self, length: int):
        return math.nan

    def collate_labels(self, values: list, sequence_length: int, padding_side: str) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)

    def resolve(self, golds, trained_head: dict | None = None) -> "Task":
        """Targets are standardised by the train split's mean and standard deviation; a reused head keeps its own."""
        if self.target_mean is not None:
            return self
        if trained_head and "target_mean" in trained_head:
            return dataclasses.replace(self, target_mean=trained_head["target_mean"], target_std=trained_head["target_std"])
        values = np.asarray([gold for gold in golds if self.has_gold(gold)], dtype=np.float64) if golds is not None else []
        if len(values) == 0:
            return self
        std = float(values.std())
        return dataclasses.replace(self, target_mean=float(values.mean()), target_std=std if std > 0 else 1.0)

    def label_count_error(self, where: str, dataset_name: str):
        return None

    def reduce_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().reshape(logits.shape[0])

    def decode(self, prediction, row: dict):
        return float(prediction)

    def report_section(self, result: dict, examples: list) -> list:
        from .reports import markdown_number, markdown_table

        gold = np.asarray([example[self.name]["gold"] for example in examples])
        pred = np.asarray([example[self.name]["pred"] for example in examples])
        rows = [[name, markdown_number(result[name])] for name in ("pearson", "spearman", "mse")]
        rows.append(["mae", markdown_number(result["mae"])])
        return [
            f"{len(examples)} examples; gold {gold.min():.4g} to {gold.max():.4g} (mean {gold.mean():.4g}), "
            f"predicted {pred.min():.4g} to {pred.max():.4g} (mean {pred.mean():.4g}).",
            "",
            *markdown_table(["metric", "value"], rows),
        ]

    def plot(self, examples: list, plots_dir, split_name: str):
        from .plots import plot_regression

        gold = [example[self.name]["gold"] for example in examples]
        pred = [example[self.name]["pred"] for example in examples]
        return plot_regression(gold, pred, plots_dir / f"regression_{self.name}.png", f"{self.name}: predicted vs gold ({split_name})")


@dataclass(frozen=True, kw_only=True)
class TokenClassificationTask(SingleLabelClassificationTask):
    """One tag per word, predicted at the word's first sub-token: IOB2 (NER, slots) or BIOES tags scored by seqeval
    (entity level), or with `"tag_format": "plain"` labels without prefixes (POS) scored per word."""

    kind: ClassVar[str] = "token_classification"
    hub_task_type: ClassVar[str] = "token-classification"
    labels_per_token: ClassVar[bool] = True

    crf: bool = False
    bio_constraints: bool = True
    tag_format: str = "BIO"

    @property
    def metric_names(self) -> tuple:
        return PLAIN_TAG_METRICS if self.tag_format == "plain" else ENTITY_METRICS

    @property
    def card_metrics(self) -> dict:
        if self.tag_format == "plain":
            return {
                "accuracy": ("accuracy", "Tag accuracy", None),
                "macro_f1": ("f1", "Macro F1 over tags", {"average": "macro"}),
            }
        mode = " strict IOBES" if self.tag_format == "BIOES" else ""
        return {
            "precision": ("precision", f"Entity precision (seqeval{mode})", None),
            "recall": ("recall", f"Entity recall (seqeval{mode})", None),
            "f1": ("f1", f"Entity F1 (seqeval{mode})", None),
            "accuracy": ("accuracy", "Tag accuracy", None),
        }

    @property
    def metric_config(self) -> str:
        """The config of the metric module scoring this task's tags."""
        configs = {"BIO": self.kind, "BIOES": "token_classification_bioes", "plain": "token_classification_plain"}
        return configs[self.tag_format]

    @property
    def fill_tag(self) -> str:
        """The tag of a word with no prediction (lost to truncation): outside any entity, or no tag at all."""
        return "" if self.tag_format == "plain" else OUTSIDE_TAG

    @property
    def needs_word_starts(self) -> bool:
        return self.crf

    @property
    def smooths_labels(self) -> bool:
        return not self.crf  # a CRF's likelihood is over whole tag paths

    @property
    def target_column(self) -> str:
        return self.tags_column

    @property
    def target_key(self) -> str:
        return "tags_column"

    @property
    def input_columns(self) -> tuple:
        return "words", self.tokens_column, None

    @property
    def gold_feature(self):
        return STRINGS

    @property
    def label_feature(self):
        return datasets.List(datasets.Value("int64"))

    def head_config(self) -> dict:
        head = super().head_config()
        if self.tag_format != "BIO":
            head["tag_format"] = self.tag_format  # BIO heads are saved as before
        if self.crf:
            # Plain tags have no transitions to forbid; BIOES's are built from `tag_format` by the CRF.
            head.update(crf=True, bio_constraints=self.bio_constraints and self.tag_format != "plain")
        return head

    def check(self, where: str) -> None:
        for key in ("text_column", "text_pair_column", "tokens_pair_column"):
            if getattr(self, key) is not None:
                raise ConfigError(f"{where}.{key}: a token task reads one list of words per example (tokens_column)")
        for key in ("crf", "bio_constraints"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{where}.{key}: true or false, got {getattr(self, key)!r}")
        if self.tag_format not in TAG_FORMATS:
            choices = ", ".join(map(repr, TAG_FORMATS))
            raise ConfigError(f"{where}.tag_format: {self.tag_format!r} is not one of {choices}")
        super().check(where)

    def _fields_to_validate(self) -> dict:
        task = super()._fields_to_validate()
        if self.tag_format != "BIO":
            task["tag_format"] = self.tag_format
        return task

    def gold_labels(self, gold) -> list:
        return list(gold)

    def label_list_from(self, golds) -> tuple:
        tags = {tag for gold in golds for tag in gold}
        if self.tag_format == "plain":
            return tuple(sorted(tags))
        return (OUTSIDE_TAG, *sorted(tags - {OUTSIDE_TAG}))

    def missing_gold(self):
        return []

    def feature_problem(self, feature) -> str | None:
        if isinstance(feature, datasets.Json):
            return None  # checked value by value
        if not isinstance(feature, LIST_FEATURES):
            return f"holds {feature}, not one tag per word (a list of tags)"
        return _label_feature_problem(inner_feature(feature))

    def normalize_gold(self, value, names, place, num_words=None, tag_scheme="iob2", strings_only=False):
        if value is None:
            return []
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise DataError(f"{place()}: holds {_short(value)}, not a list of tags (one per word)")
        tags = []
        for position, tag in enumerate(value, start=1):
            if tag is None:
                raise DataError(f"{place()}: tag {position} is null; every word needs a tag")
            if (strings_only or isinstance(tag, float)) and not isinstance(tag, str):
                raise DataError(f"{place()}: tag {position} is {_short(tag)} ({type(tag).__name__}), not a string")
            if isinstance(tag, int) and not isinstance(tag, bool) and names is not None:
                if not 0 <= tag < len(names):
                    raise DataError(f"{place()}: label id {tag} but only {len(names)} label names")
                tag = names[tag]
            tag = tag.strip() if isinstance(tag, str) else tag
            problem = tag_problem(tag, self.tag_format)
            if problem:
                raise DataError(f"{place()}: {problem}")
            tags.append(tag)
        if tags and num_words is not None and len(tags) != num_words:
            raise DataError(f"{place()}: {num_words} words but {len(tags)} tags")
        return iob1_to_iob2(tags) if tag_scheme == "iob1" and self.tag_format == "BIO" else tags

    def encode_labels(self, gold, word_ids, label_all_tokens: bool):
        """A word's tag id on its first sub-token and -100 on the rest, or with `label_all_tokens` on every sub-token
        with `B-x` turned into `I-x` on continuations (as transformers' `run_ner.py` does)."""
        if not gold:
            return self.no_labels(len(word_ids))
        ids, labels, previous = self.label2id, [], None
        for word_id in word_ids:
            if word_id is None:
                labels.append(IGNORE_INDEX)
            elif word_id != previous:
                labels.append(ids.get(gold[word_id], IGNORE_INDEX))
            elif label_all_tokens and gold[word_id] in ids:
                tag = gold[word_id]
                inside = self.tag_format != "plain" and tag.startswith("B-")
                labels.append(ids.get("I-" + tag[2:], ids[tag]) if inside else ids[tag])
            else:
                labels.append(IGNORE_INDEX)
            previous = word_id
        return labels

    def no_labels(self, length: int):
        return [IGNORE_INDEX] * length

    def collate_labels(self, values: list, sequence_length: int, padding_side: str) -> torch.Tensor:
        padded = [pad_row(list(labels), sequence_length, IGNORE_INDEX, padding_side) for labels in values]
        return torch.tensor(padded, dtype=torch.long)

    def compute(self, pairs: list) -> dict:
        from .evaluation import load_metric

        return load_metric(self.metric_config).compute(
            predictions=[pair["pred"] for pair in pairs], references=[pair["gold"] for pair in pairs]
        )

    def decode(self, prediction, row: dict):
        """One tag per word: the prediction at the word's first sub-token; words with no sub-token (lost to
        truncation) are `O` (plain tags: `""`, a wrong tag of no class)."""
        num_words = len(row[self.name + "_gold"])
        tags, tagged = [self.fill_tag] * num_words, set()
        for position, word in enumerate(row["word_ids"]):
            if word is None or word < 0 or word >= num_words or word in tagged:
                continue
            tagged.add(word)
            tags[word] = self.labels[int(prediction[position])]
        return tags

    def report_section(self, result: dict, examples: list) -> list:
        from .reports import markdown_number, markdown_scores, markdown_table, text_cell

        num_words = sum(len(example[self.name]["gold"]) for example in examples)
        if self.tag_format == "plain":
            # Scored as a classification of each word: per-tag table, accuracy, confusion matrix over tags.
            return [f"{len(examples)} examples, {num_words} words; each word's tag scored as a class.",
                    *super().report_section(result, examples)[1:]]
        mode = "strict mode, IOBES scheme" if self.tag_format == "BIOES" else "default (conlleval) mode"
        per_type = {name: scores for name, scores in result.items() if isinstance(scores, dict)}
        support = sum(scores["number"] for scores in per_type.values())
        rows = [[text_cell(name), *markdown_scores(scores), str(scores["number"])] for name, scores in per_type.items()]
        rows.append(["**micro avg**", *markdown_scores(result, "overall_"), str(support)])
        rows.append(["**macro avg**", *markdown_scores(result, "macro_"), str(support)])
        return [
            f"{len(examples)} examples, {num_words} words. seqeval entity-level scores, {mode}.",
            "",
            *markdown_table(["entity type", "precision", "recall", "F1", "support"], rows),
            "",
            f"Tag accuracy: {markdown_number(result['overall_accuracy'])}",
        ]

    def flatten(self, result: dict) -> dict:
        if self.tag_format == "plain":
            return {metric: result[metric] for metric in self.metric_names}
        # The seqeval module names its entity-level micro averages `overall_<metric>`.
        return {metric: result["overall_" + metric] for metric in self.metric_names}

    def confusion_matrix(self, examples: list) -> tuple:
        """`(tags, counts)` over words: `counts[i][j]` words with gold `tags[i]` predicted `tags[j]`."""
        from .reports import class_order

        pairs = Counter(
            pair for example in examples for pair in zip(example[self.name]["gold"], example[self.name]["pred"])
        )
        labels = class_order(self.labels, [tag for pair in pairs for tag in pair if tag])
        return labels, [[pairs[(gold, pred)] for pred in labels] for gold in labels]

    def plot(self, examples: list, plots_dir, split_name: str):
        return super().plot(examples, plots_dir, split_name) if self.tag_format == "plain" else None


ENTITY_METRICS = ("f1", "precision", "recall", "accuracy")
PLAIN_TAG_METRICS = ("accuracy", "macro_f1")

TASK_CLASSES = {
    task_class.kind: task_class
    for task_class in (SingleLabelClassificationTask, MultiLabelClassificationTask, RegressionTask, TokenClassificationTask)
}


def pad_row(values: list, length: int, value, padding_side: str) -> list:
    """`values` padded with `value` to `length` on the tokenizer's padding side."""
    padding = [value] * (length - len(values))
    return padding + values if padding_side == "left" else values + padding


def bad_tag_message(tag) -> str:
    return f"tag {tag!r} is not O, B-<type> or I-<type>"


def is_bio_tag(tag) -> bool:
    return isinstance(tag, str) and BIO_TAG.match(tag) is not None


def tag_problem(tag, tag_format: str = "BIO") -> str | None:
    """What is wrong with one tag under a task's `tag_format`, with the format that fits it where one does; or None."""
    if not isinstance(tag, str) or not tag or any(char.isspace() for char in tag):
        return f"{_short(tag)} is not a tag (a non-empty string without spaces)"
    if tag_format == "plain" or (BIO_TAG if tag_format == "BIO" else BIOES_TAG).match(tag):
        return None
    shape = "O, B-<type> or I-<type>" if tag_format == "BIO" else "O, B-<type>, I-<type>, E-<type> or S-<type>"
    message = f"tag {tag!r} is not {shape} (tag_format {tag_format!r})"
    if BIOES_TAG.match(tag):
        return message + '; for BIOES tags (E-, S-) set the task\'s "tag_format": "BIOES"'
    return message + '; for tags without B-/I- prefixes (POS tags) set the task\'s "tag_format": "plain"'


def iob1_to_iob2(tags: list) -> list:
    """IOB1 starts an entity with I- unless it directly follows one of the same type; IOB2 always starts with B-."""
    converted, previous = [], OUTSIDE_TAG
    for tag in tags:
        if tag.startswith("I-") and (previous == OUTSIDE_TAG or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted


def class_order_of(labels, present) -> list:
    from .reports import class_order

    return [label for label in class_order(labels, present) if label in present]


def inner_feature(feature):
    """The feature of a list column's items, or the feature itself."""
    return getattr(feature, "feature", feature)


def _label_feature_problem(feature) -> str | None:
    """The problem of a column (or list item) type meant to hold class labels: strings or integer ids."""
    if isinstance(feature, (dict, LIST_FEATURES)):
        return f"holds {feature}, not labels"
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("float", "double", "decimal")):
        return (f"holds {feature.dtype} numbers, not class labels (strings or integer ids); a column of ids with empty "
                "cells is read as floats: fill them, or use -1 for no label")
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_task(task, where: str, require_dataset: bool = True) -> Task:
    """
    A task block of a run config, or a task dict of a saved `MultiTaskConfig`, as its kind's [`Task`]; a
    `ConfigError` naming `<where>.<key>` for the first bad value.
    """
    if isinstance(task, Task):
        task.check(where)
        return task
    if not isinstance(task, dict):
        raise ConfigError(f"{where}: expected an object with name, type and dataset, got {task!r}")
    required = ("name", "type", "dataset") if require_dataset else ("name", "type")
    for key in required:
        if not isinstance(task.get(key), str) or not task[key]:
            raise ConfigError(f"{where}.{key}: a non-empty string is required, got {task.get(key)!r}")
    if task["type"] not in TASK_TYPES:
        raise ConfigError(f"{where}.type: {task['type']!r} is not one of {', '.join(TASK_TYPES)}")
    problem_type = task.get("problem_type")
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise ConfigError(f"{where}.problem_type: {problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
    if task["type"] == "token_classification" and problem_type not in (None, "single_label_classification"):
        raise ConfigError(f"{where}.problem_type: a token_classification task is single-label per token")
    task_class = TASK_CLASSES[task_kind(task)]
    known = [field.name for field in fields(task_class)]
    for key in task:
        if key not in known:
            if key == "crf":
                raise ConfigError(f"{where}.crf: only token_classification tasks can use a CRF")
            raise ConfigError(f"{where}.{key}: unknown key for a {task_class.kind} task (known: {', '.join(known)})")
    values = dict(task)
    for key in ("labels", "class_weights", "pos_weight"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    parsed = task_class(**values)
    parsed.check(where)
    return parsed


def tasks_of_config(config) -> list:
    """The tasks of a saved model's `MultiTaskConfig` (or of its `tasks` list) as [`Task`]s."""
    task_dicts = getattr(config, "tasks", config)
    return [parse_task(task, f"config.tasks[{index}]", require_dataset=False) for index, task in enumerate(task_dicts)]


__all__ = [
    "MultiLabelClassificationTask",
    "RegressionTask",
    "SingleLabelClassificationTask",
    "TAG_FORMATS",
    "TASK_CLASSES",
    "Task",
    "TokenClassificationTask",
    "iob1_to_iob2",
    "parse_task",
    "tag_problem",
    "tasks_of_config",
]
