"""A tag per word: IOB2 / BIOES entities scored by seqeval, or plain tags (POS) scored per word."""

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import datasets
import torch

from ..data.tags import OUTSIDE_TAG, iob1_to_iob2, short_repr, tag_problem
from ..errors import ConfigError, DataError
from ..evaluation import load_metric
from .base import (IGNORE_INDEX, LIST_FEATURES, STRINGS, ConfusionMatrix, Table, Total, _label_feature_problem, class_order,
                   inner_feature, pad_row, score_cells)
from .registry import register_task
from .single_label import SingleLabelClassificationTask

ENTITY_METRICS = ("f1", "precision", "recall", "accuracy")
PLAIN_TAG_METRICS = ("accuracy", "macro_f1")

@register_task
@dataclass(frozen=True, kw_only=True)
class TokenClassificationTask(SingleLabelClassificationTask):
    """One tag per word, predicted at the word's first sub-token: IOB2 (NER, slots) or BIOES tags scored by seqeval
    (entity level), or with `"tag_format": "plain"` labels without prefixes (POS) scored per word."""

    kind: ClassVar[str] = "token_classification"
    hub_task_type: ClassVar[str] = "token-classification"

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
        super().check(where)

    def _fields_to_validate(self) -> dict:
        task = super()._fields_to_validate()
        task.update(crf=self.crf, bio_constraints=self.bio_constraints, tag_format=self.tag_format)
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
            raise DataError(f"{place()}: holds {short_repr(value)}, not a list of tags (one per word)")
        tags = []
        for position, tag in enumerate(value, start=1):
            if tag is None:
                raise DataError(f"{place()}: tag {position} is null; every word needs a tag")
            if (strings_only or isinstance(tag, float)) and not isinstance(tag, str):
                raise DataError(f"{place()}: tag {position} is {short_repr(tag)} ({type(tag).__name__}), not a string")
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
        num_words = sum(len(example[self.name]["gold"]) for example in examples)
        if self.tag_format == "plain":
            # Scored as a classification of each word: per-tag table, accuracy, confusion matrix over tags.
            return [f"{len(examples)} examples, {num_words} words; each word's tag scored as a class.",
                    *super().report_section(result, examples)[1:]]
        mode = "strict mode, IOBES scheme" if self.tag_format == "BIOES" else "default (conlleval) mode"
        per_type = {name: scores for name, scores in result.items() if isinstance(scores, dict)}
        support = sum(scores["number"] for scores in per_type.values())
        rows = [[name, *score_cells(scores), scores["number"]] for name, scores in per_type.items()]
        rows.append([Total("micro avg"), *score_cells(result, "overall_"), support])
        rows.append([Total("macro avg"), *score_cells(result, "macro_"), support])
        return [
            f"{len(examples)} examples, {num_words} words. seqeval entity-level scores, {mode}.",
            Table(["entity type", "precision", "recall", "F1", "support"], rows),
            f"Tag accuracy: {result['overall_accuracy']:.4f}",
        ]

    def flatten(self, result: dict) -> dict:
        if self.tag_format == "plain":
            return {metric: result[metric] for metric in self.metric_names}
        # The seqeval module names its entity-level micro averages `overall_<metric>`.
        return {metric: result["overall_" + metric] for metric in self.metric_names}

    def confusion_matrix(self, examples: list) -> ConfusionMatrix:
        """Over words: `counts[i][j]` words with gold tag `labels[i]` predicted `labels[j]`."""
        pairs = Counter(
            pair for example in examples for pair in zip(example[self.name]["gold"], example[self.name]["pred"])
        )
        labels = class_order(self.labels, [tag for pair in pairs for tag in pair if tag])
        return ConfusionMatrix(labels, [[pairs[(gold, pred)] for pred in labels] for gold in labels])

    def figure(self, examples: list):
        return super().figure(examples) if self.tag_format == "plain" else None
