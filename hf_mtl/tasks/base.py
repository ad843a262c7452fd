"""The base of every task kind on the training side (`Task`), and the data its report section and figure are made
of, which `hf_mtl.reports` and `hf_mtl.plots` render.

A task comes from the run config's `tasks` block (or a saved model's `config.tasks`) through `parse_task`, once, and
is immutable from then on: `Task.resolve` returns the task with its labels, class weights and target scale filled in
from the train split. Its head, loss and pipeline output live in `hf_mtl.task_kinds` (Hub-safe); everything else a
kind needs is its `Task` subclass in this package.
"""

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import datasets
import torch

from ..configuration_mtl import validate_task
from ..data.tags import short_repr
from ..errors import ConfigError, DataError
from ..evaluation import load_metric
from ..task_kinds import TASK_KINDS


IGNORE_INDEX = -100

STRINGS = datasets.List(datasets.Value("string"))

LIST_FEATURES = (datasets.List, datasets.Sequence, datasets.LargeList)

@dataclass(frozen=True, kw_only=True)
class Task:
    """
    One head of a multi-task model and the columns it reads. Fields are the run config's task keys; `labels` (and
    the kind's weights or scale) are `None` until [`Task.resolve`] fills them from the data.
    """

    kind: ClassVar[str]
    needs_label_column: ClassVar[bool] = True  # False: a kind that trains without a gold column (positive pairs)
    negative_column: ClassVar[None] = None  # a hard negative per row, for the kinds that read one
    metric_names: ClassVar[tuple]  # `<task>_<metric>` keys, the main one (averaged into `score`) first
    hub_task_type: ClassVar[str]

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

    # ---- what the kind's head is (`task_kinds`, the one place a kind's facts are written) ----------------------

    @property
    def head_kind(self):
        return TASK_KINDS[self.kind]

    @property
    def takes_labels(self) -> bool:
        """A label list (from the config, a ClassLabel column or the train split)."""
        return self.head_kind.min_labels is not None

    @property
    def labels_per_token(self) -> bool:
        return self.head_kind.reads_tokens

    @property
    def encodes_pair_separately(self) -> bool:
        """A bi-encoder: a pair's texts are two inputs (`input_ids`, `pair_input_ids`)."""
        return self.head_kind.encodes_pair_separately

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
            if key == "label_column" and self.label_column is None and not self.needs_label_column:
                continue
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

    def split_predictions(self, predictions, golds: list):
        """The split's reduced predictions as `decode` reads them per row; a kind scored across rows (retrieval)
        turns them into per-row values here. `golds`: each row's gold (`missing_gold()` where it has none)."""
        return predictions

    def decode(self, prediction, row: dict):
        """One example's reduced prediction as a gold-shaped value (label, label list, number or word tags)."""
        return self.labels[int(prediction)]

    def compute(self, pairs: list) -> dict:
        """The metric module's full output on `{"gold", "pred"}` pairs (per class / entity type included)."""
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
        """The kind's section of a split's report, as data `hf_mtl.reports` renders: paragraphs (str) and `Table`s;
        `result` is `compute`'s output on `examples` (the split's decoded examples with gold for this task)."""
        raise NotImplementedError

    def figure(self, examples: list):
        """The kind's figure of one split's decoded examples (those with gold) as data `hf_mtl.plots` draws (a
        `ConfusionMatrix`, `PerLabelF1` or `PredictedVsGold`), or None."""
        return None

def pad_row(values: list, length: int, value, padding_side: str) -> list:
    """`values` padded with `value` to `length` on the tokenizer's padding side."""
    padding = [value] * (length - len(values))
    return padding + values if padding_side == "left" else values + padding

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


class Total(str):
    """A table's summary row label (micro / macro average), shown emphasised."""


@dataclass
class Table:
    """A table of a report section. Cells: text (str), a score (float) or a count (int)."""

    header: list
    rows: list


@dataclass
class ConfusionMatrix:
    """`counts[i][j]`: examples (or words) with gold `labels[i]` predicted `labels[j]`."""

    labels: list
    counts: list
    file_stem: ClassVar[str] = "confusion_matrix"
    caption: ClassVar[str] = "confusion matrix"


@dataclass
class PerLabelF1:
    labels: list
    f1: list
    support: list
    file_stem: ClassVar[str] = "per_label_f1"
    caption: ClassVar[str] = "F1 per label"


@dataclass
class PredictedVsGold:
    gold: list
    predicted: list
    file_stem: ClassVar[str] = "regression"
    caption: ClassVar[str] = "predicted vs gold"


def class_order(labels, gold_labels) -> list:
    """Row/column order of a classification task's tables: the model's labels, then gold labels it does not know."""
    return list(labels) + sorted(set(gold_labels) - set(labels))


def score_cells(scores: dict, prefix: str = "") -> list:
    return [scores[prefix + key] for key in ("precision", "recall", "f1")]


@dataclass(frozen=True, kw_only=True)
class NumericGoldTask(Task):
    """The base of the kinds whose gold is one number per example (a regression target, a similarity score): NaN
    where an example has none."""

    gold_name: ClassVar[str] = "a number"  # what the gold is, in errors

    @property
    def gold_feature(self):
        return datasets.Value("float64")

    @property
    def label_feature(self):
        return datasets.Value("float32")

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
        return f"holds {feature}, not numbers ({self.gold_name})"

    def normalize_number(self, value, place) -> float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{place()}: {short_repr(value)} is not a number ({self.gold_name})")
        if not math.isfinite(value):
            raise DataError(f"{place()}: {value!r} is not a finite number ({self.gold_name})")
        return float(value)

    def encode_labels(self, gold, word_ids, label_all_tokens: bool):
        return float(gold) if self.has_gold(gold) else math.nan

    def no_labels(self, length: int):
        return math.nan

    def collate_labels(self, values: list, sequence_length: int, padding_side: str) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)
