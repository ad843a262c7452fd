"""One label per sentence (or pair): softmax, cross-entropy, accuracy and macro F1."""

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..data.tags import short_repr
from ..errors import ConfigError, DataError
from .base import ConfusionMatrix, Table, Task, Total, class_order, score_cells
from .registry import register_task


@register_task
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
            raise DataError(f"{place()}: label {short_repr(value)} ({type(value).__name__}) among string labels")
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value < 0):
            return ""
        if isinstance(value, float) and math.isnan(value):
            return ""
        if isinstance(value, (list, tuple, dict)):
            raise DataError(
                f"{place()}: holds a {type(value).__name__} ({short_repr(value)}), not one label; for several labels per "
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
        per_class = result["per_class"]
        support = sum(scores["number"] for scores in per_class.values())
        rows = [
            [label, *score_cells(per_class[label]), per_class[label]["number"]]
            for label in class_order(self.labels, per_class)
            if label in per_class
        ]
        rows.append([Total("macro avg"), *score_cells(result, "macro_"), support])
        matrix = self.confusion_matrix(examples)
        return [
            f"{len(examples)} examples.",
            Table(["class", "precision", "recall", "F1", "support"], rows),
            f"Accuracy: {result['accuracy']:.4f}",
            "Confusion matrix (rows: gold, columns: predicted):",
            Table(["gold \\ predicted", *matrix.labels], [[gold, *row] for gold, row in zip(matrix.labels, matrix.counts)]),
        ]

    def confusion_matrix(self, examples: list) -> ConfusionMatrix:
        """Over examples: `counts[i][j]` examples with gold `labels[i]` predicted `labels[j]`."""
        pairs = Counter((example[self.name]["gold"], example[self.name]["pred"]) for example in examples)
        labels = class_order(self.labels, [gold for gold, _ in pairs])
        return ConfusionMatrix(labels, [[pairs[(gold, pred)] for pred in labels] for gold in labels])

    def figure(self, examples: list):
        return self.confusion_matrix(examples)
