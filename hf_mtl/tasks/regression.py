"""A number per sentence (or pair): standardised targets, MSE, Pearson and Spearman."""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .base import NumericGoldTask, PredictedVsGold, Table, Task
from .registry import register_task


@register_task
@dataclass(frozen=True, kw_only=True)
class RegressionTask(NumericGoldTask):
    """One number per sentence (or pair), e.g. a similarity score: mean squared error on standardised targets."""

    kind: ClassVar[str] = "regression"
    gold_name: ClassVar[str] = "a regression target"
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

    def labels_summary(self) -> str:
        scale = f" (train mean {self.target_mean:.4g}, sd {self.target_std:.4g})" if self.target_mean is not None else ""
        return "a number" + scale

    def head_config(self) -> dict:
        head = super().head_config()
        if self.target_mean is not None:
            head.update(target_mean=self.target_mean, target_std=self.target_std)
        return head

    def _fields_to_validate(self) -> dict:
        task = super()._fields_to_validate()
        if self.target_mean is not None or self.target_std is not None:
            task.update(target_mean=self.target_mean, target_std=self.target_std)
        return task

    def normalize_gold(self, value, names, place, num_words=None, tag_scheme="iob2", strings_only=False):
        return self.normalize_number(value, place)

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
        gold = np.asarray([example[self.name]["gold"] for example in examples])
        pred = np.asarray([example[self.name]["pred"] for example in examples])
        return [
            f"{len(examples)} examples; gold {gold.min():.4g} to {gold.max():.4g} (mean {gold.mean():.4g}), "
            f"predicted {pred.min():.4g} to {pred.max():.4g} (mean {pred.mean():.4g}).",
            Table(["metric", "value"], [[name, result[name]] for name in ("pearson", "spearman", "mse", "mae")]),
        ]

    def figure(self, examples: list):
        return PredictedVsGold([example[self.name]["gold"] for example in examples],
                               [example[self.name]["pred"] for example in examples])
