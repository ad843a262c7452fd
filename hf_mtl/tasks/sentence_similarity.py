"""Two texts, encoded separately, scored by the cosine of their embeddings: the embedding itself is trained."""

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..task_kinds import DEFAULT_SIMILARITY_SCALE, SCORED_LOSSES
from .base import NumericGoldTask, PredictedVsGold, Table, Task
from .registry import register_task

POSITIVE_PAIR = 1.0  # the gold of an unscored row: its pair is a positive


@register_task
@dataclass(frozen=True, kw_only=True)
class SentenceSimilarityTask(NumericGoldTask):
    """
    A bi-encoder task. Scored pairs (`label_column`: a number in any range) train with `cosent` (default) or
    `cosine_mse` and are scored by the Spearman (main) and Pearson correlation of the cosine with the gold score.
    Unscored positive pairs (no `label_column`, optionally a hard negative in `text_negative_column`) train with
    `multiple_negatives_ranking` and are scored by retrieval over the split's own pairs: `mrr_at_10` (main) and
    `recall_at_1` of each text's pair among all the split's second texts.
    """

    kind: ClassVar[str] = "sentence_similarity"
    gold_name: ClassVar[str] = "a similarity score"
    hub_task_type: ClassVar[str] = "sentence-similarity"
    needs_label_column: ClassVar[bool] = False
    card_metrics: ClassVar[dict] = {
        "spearman": ("spearmanr", "Spearman correlation (cosine)", None),
        "pearson": ("pearsonr", "Pearson correlation (cosine)", None),
        "mrr_at_10": ("mrr", "MRR@10", {"k": 10}),
        "recall_at_1": ("recall", "Recall@1", {"k": 1}),
    }

    label_column: str | None = None
    text_negative_column: str | None = None
    tokens_negative_column: str | None = None
    hard_negatives: bool = False  # saved: the task trained with hard negatives (a run config names their column)
    loss: str | None = None  # by the data when not set: cosent for scores, multiple_negatives_ranking for pairs
    scale: float = DEFAULT_SIMILARITY_SCALE
    matryoshka_dims: tuple | None = None
    # The train scores' range, mapped onto cosines in [0, 1] by `cosine_mse`.
    target_min: float | None = None
    target_max: float | None = None

    @property
    def scored(self) -> bool:
        """Scored pairs: a score column in a run config, a scored loss in a saved one."""
        return self.label_column is not None or self.loss in SCORED_LOSSES

    @property
    def loss_name(self) -> str:
        return self.loss or (SCORED_LOSSES[0] if self.scored else "multiple_negatives_ranking")

    @property
    def metric_names(self) -> tuple:
        return ("spearman", "pearson") if self.scored else ("mrr_at_10", "recall_at_1")

    @property
    def negative_column(self) -> str | None:
        return self.text_negative_column if self.text_column is not None else self.tokens_negative_column

    @property
    def target_column(self) -> str:
        # Unscored: a row's gold is its pair being there, read from the pair column.
        return self.label_column if self.scored else self.input_columns[2]

    @property
    def target_key(self) -> str:
        if self.scored:
            return "label_column"
        return "text_pair_column" if self.text_column is not None else "tokens_pair_column"

    def labels_summary(self) -> str:
        data = "scored pairs" if self.scored else "positive pairs"
        return f"the cosine of two embeddings ({data}, loss `{self.loss_name}`)"

    def head_config(self) -> dict:
        head = {"name": self.name, "type": self.type, "loss": self.loss_name}
        if self.scale != DEFAULT_SIMILARITY_SCALE:
            head["scale"] = self.scale
        if self.negative_column is not None or self.hard_negatives:
            head["hard_negatives"] = True
        if self.matryoshka_dims:
            head["matryoshka_dims"] = list(self.matryoshka_dims)
        if self.target_min is not None:
            head.update(target_min=self.target_min, target_max=self.target_max)
        return head

    def check(self, where: str) -> None:
        if self.dataset is not None:  # a run config's task block: its columns say what the data holds
            self.check_columns(where)
        super().check(where)

    def check_columns(self, where: str) -> None:
        if self.input_columns[2] is None:
            raise ConfigError(f"{where}.text_pair_column: a sentence_similarity task needs the second text of each "
                              "pair (text_pair_column, or tokens_pair_column for word lists)")
        if self.text_column is None and self.text_negative_column is not None:
            raise ConfigError(f"{where}.text_negative_column: the texts are word lists; use tokens_negative_column")
        if self.loss_name in SCORED_LOSSES and self.label_column is None:
            raise ConfigError(f"{where}.loss: {self.loss_name!r} trains on scores: set label_column, or use "
                              "multiple_negatives_ranking for unscored positive pairs")
        if self.loss_name == "multiple_negatives_ranking" and self.label_column is not None:
            raise ConfigError(f"{where}.loss: multiple_negatives_ranking trains on positive pairs and ignores scores: "
                              "remove label_column, or use cosent / cosine_mse")
        if self.negative_column is not None and self.loss_name != "multiple_negatives_ranking":
            raise ConfigError(f"{where}.{'text' if self.text_column else 'tokens'}_negative_column: hard negatives "
                              "train with loss multiple_negatives_ranking")

    def _fields_to_validate(self) -> dict:
        task = {"name": self.name, "type": self.type, "loss": self.loss_name, "scale": self.scale}
        if self.problem_type is not None:
            task["problem_type"] = self.problem_type
        if self.matryoshka_dims is not None:
            task["matryoshka_dims"] = list(self.matryoshka_dims) if isinstance(
                self.matryoshka_dims, (list, tuple)) else self.matryoshka_dims
        if self.target_min is not None or self.target_max is not None:
            task.update(target_min=self.target_min, target_max=self.target_max)
        if self.negative_column is not None or self.hard_negatives:
            task["hard_negatives"] = True
        return task

    # ---- gold ---------------------------------------------------------------------------------------------------

    def feature_problem(self, feature) -> str | None:
        return super().feature_problem(feature) if self.scored else None  # unscored: the gold is the pair itself

    def normalize_gold(self, value, names, place, num_words=None, tag_scheme="iob2", strings_only=False):
        if not self.scored:
            return POSITIVE_PAIR if value else math.nan
        return self.normalize_number(value, place)

    def resolve(self, golds, trained_head: dict | None = None) -> "Task":
        """`cosine_mse` maps scores onto [0, 1] by the train split's range; a reused head keeps its own."""
        if self.loss_name != "cosine_mse" or self.target_min is not None:
            return self
        if trained_head and "target_min" in trained_head:
            return dataclasses.replace(self, target_min=trained_head["target_min"], target_max=trained_head["target_max"])
        values = [gold for gold in golds or () if self.has_gold(gold)]
        if not values:
            return self
        return dataclasses.replace(self, target_min=float(min(values)), target_max=float(max(values)))

    def label_count_error(self, where: str, dataset_name: str):
        if self.loss_name == "cosine_mse" and self.target_min is not None and self.target_min == self.target_max:
            return DataError(f"{where}: every score of data set {dataset_name!r}'s train split is {self.target_min:g}; "
                             "cosine_mse maps the scores' range onto [0, 1] and needs two different scores")
        return None

    # ---- predictions ---------------------------------------------------------------------------------------------

    def reduce_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Scored: the cosine per row; unscored: the text's and the pair's embeddings, for retrieval over the split."""
        if self.scored:
            return torch.nn.functional.cosine_similarity(logits[:, 0].float(), logits[:, 1].float(), dim=-1)
        return logits[:, :2].float()

    def split_predictions(self, predictions, golds: list):
        """Unscored: each row's rank of its own pair among the second texts of all rows with a pair (1 = first)."""
        if self.scored:
            return predictions
        ranks = np.zeros(len(golds), dtype=np.int64)
        rows = [index for index, gold in enumerate(golds) if self.has_gold(gold)]
        if rows:
            embeddings = np.asarray(predictions, dtype=np.float64)[rows]
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
            scores = embeddings[:, 0] @ embeddings[:, 1].T
            own = np.diag(scores)
            ranks[rows] = 1 + (scores > own[:, None]).sum(axis=1)
        return ranks

    def decode(self, prediction, row: dict):
        return float(prediction) if self.scored else int(prediction)

    def compute(self, pairs: list) -> dict:
        if self.scored:
            return super().compute(pairs)
        ranks = np.asarray([pair["pred"] for pair in pairs], dtype=np.float64)
        return {"mrr_at_10": float(np.where(ranks <= 10, 1.0 / ranks, 0.0).mean()),
                "recall_at_1": float((ranks == 1).mean()), "number": len(ranks)}

    def report_section(self, result: dict, examples: list) -> list:
        if not self.scored:
            return [f"{len(examples)} positive pairs; each text retrieves its pair among the {len(examples)} second "
                    "texts by cosine.",
                    Table(["metric", "value"], [["MRR@10", result["mrr_at_10"]], ["Recall@1", result["recall_at_1"]]])]
        gold = np.asarray([example[self.name]["gold"] for example in examples])
        pred = np.asarray([example[self.name]["pred"] for example in examples])
        return [
            f"{len(examples)} scored pairs; gold {gold.min():.4g} to {gold.max():.4g}, cosine {pred.min():.4g} to "
            f"{pred.max():.4g}.",
            Table(["metric", "value"], [["spearman", result["spearman"]], ["pearson", result["pearson"]]]),
        ]

    def figure(self, examples: list):
        if not self.scored:
            return None
        return PredictedVsGold([example[self.name]["gold"] for example in examples],
                               [example[self.name]["pred"] for example in examples])
