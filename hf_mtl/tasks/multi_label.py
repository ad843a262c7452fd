"""Any number of labels per sentence (or pair): a sigmoid per label, a threshold, micro F1."""

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import datasets
import numpy as np
import torch

from ..data.tags import short_repr
from ..errors import ConfigError, DataError
from ..task_kinds import MultiLabelClassificationHead
from .base import (IGNORE_INDEX, LIST_FEATURES, STRINGS, PerLabelF1, Table, Task, Total, _label_feature_problem, class_order,
                   inner_feature, score_cells)
from .registry import register_task


@register_task
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
                    f"{place()}: holds the string {short_repr(value)}, not a list of labels; set label_separator "
                    '(e.g. "#") to split it, or give a list'
                )
            value = [part for part in value.split(self.label_separator)]
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{place()}: holds {short_repr(value)}, neither a list of labels nor a string to split")
        labels = []
        for item in value:
            if strings_only and not isinstance(item, str):
                raise DataError(f"{place()}: label {short_repr(item)} ({type(item).__name__}) among string labels")
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
        """Ids of the labels the head's rule chooses (`MultiLabelClassificationHead.chosen_labels`), best first."""
        return MultiLabelClassificationHead.chosen_labels(
            {"threshold": self.threshold, "always_top_label": self.always_top_label}, probabilities)

    def decode(self, prediction, row: dict):
        return sorted(self.labels[index] for index in self.predicted_label_ids(prediction))

    def report_section(self, result: dict, examples: list) -> list:
        per_label = result["per_label"]
        rows = [
            [label, *score_cells(per_label[label]), per_label[label]["number"]]
            for label in class_order(self.labels, per_label)
            if label in per_label
        ]
        support = sum(scores["number"] for scores in per_label.values())
        rows.append([Total("micro avg"), *score_cells(result, "micro_"), support])
        rows.append([Total("macro avg"), *score_cells(result, "macro_"), support])
        sizes = Counter(len(example[self.name]["pred"]) for example in examples)
        return [
            f"{len(examples)} examples; threshold {self.threshold}"
            + (", the best label when none clears it." if self.always_top_label else "."),
            Table(["label", "precision", "recall", "F1", "support (gold)"], rows),
            f"Exact-set accuracy: {result['accuracy']:.4f}",
            "Predicted labels per example: " + ", ".join(f"{size}: {count}" for size, count in sorted(sizes.items())),
        ]

    def figure(self, examples: list):
        per_label = self.compute([example[self.name] for example in examples])["per_label"]
        labels = [label for label in class_order(self.labels, per_label) if label in per_label]
        return PerLabelF1(labels, [per_label[label]["f1"] for label in labels],
                          [per_label[label]["number"] for label in labels])
