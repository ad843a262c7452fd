"""Word-level metrics of hf_mtl tasks as an `evaluate` module, loaded by path so it works offline.

Config `"token_classification"`: seqeval in its default (conlleval-compatible) mode, as `run_ner.py` and
JointBERT score NER: entity-level micro precision/recall/F1, per-entity-type scores, macro averages and tag
accuracy. Config `"sequence_classification"`: accuracy, macro-averaged precision/recall/F1 and per-class scores.
Averages run over the labels present in the references or predictions, like scikit-learn's defaults.
"""

from collections import Counter

import datasets
import evaluate
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (`"sequence_classification"`) or lists of IOB2 tags, one list per example.
    references: gold labels or tag lists, shaped like `predictions`. Labels the model does not know are errors.
Returns:
    `"token_classification"`: `overall_precision`, `overall_recall`, `overall_f1`, `overall_accuracy`,
    `macro_precision`, `macro_recall`, `macro_f1`, and per entity type `{"precision", "recall", "f1", "number"}`.
    `"sequence_classification"`: `accuracy`, `macro_precision`, `macro_recall`, `macro_f1`, and `per_class`:
    label -> `{"precision", "recall", "f1", "number"}`.
Examples:
    >>> metric = evaluate.load("hf_mtl/metrics/multitask_seqeval", "token_classification")
    >>> metric.compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]])["overall_f1"]
    1.0
"""

CONFIGS = ("sequence_classification", "token_classification")


def _scores(precision, recall, f1, number):
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "number": int(number)}


def _f1(precision, recall):
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


class MultitaskSeqeval(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"config_name must be one of {list(CONFIGS)}, got {self.config_name!r}")
        label = datasets.Value("string")
        if self.config_name == "token_classification":
            label = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label, "references": label}),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references):
        if self.config_name == "token_classification":
            return self._compute_seqeval(predictions, references)
        return self._compute_classification(predictions, references)

    def _compute_seqeval(self, predictions, references):
        results = {}
        entity_types = sorted({entity[0] for entity in get_entities(references) + get_entities(predictions)})
        if entity_types:
            per_type = precision_recall_fscore_support(references, predictions, average=None, zero_division=0)
            results.update({name: _scores(*row) for name, *row in zip(entity_types, *per_type)})
            macro = precision_recall_fscore_support(references, predictions, average="macro", zero_division=0)
        else:
            # seqeval averages an empty array (nan + warning) when neither side has an entity.
            macro = (0.0, 0.0, 0.0, 0)
        results.update(
            {
                "overall_precision": float(precision_score(references, predictions, zero_division=0)),
                "overall_recall": float(recall_score(references, predictions, zero_division=0)),
                "overall_f1": float(f1_score(references, predictions, zero_division=0)),
                "overall_accuracy": float(accuracy_score(references, predictions)),
                "macro_precision": float(macro[0]),
                "macro_recall": float(macro[1]),
                "macro_f1": float(macro[2]),
            }
        )
        return results

    def _compute_classification(self, predictions, references):
        gold_counts, pred_counts = Counter(references), Counter(predictions)
        correct_counts = Counter(gold for gold, pred in zip(references, predictions) if gold == pred)
        per_class = {}
        for label in sorted(gold_counts.keys() | pred_counts.keys()):
            correct = correct_counts[label]
            precision = correct / pred_counts[label] if pred_counts[label] else 0.0
            recall = correct / gold_counts[label] if gold_counts[label] else 0.0
            per_class[label] = _scores(precision, recall, _f1(precision, recall), gold_counts[label])
        classes = per_class.values()
        return {
            "accuracy": sum(correct_counts.values()) / len(references) if references else 0.0,
            "macro_precision": sum(c["precision"] for c in classes) / len(per_class) if per_class else 0.0,
            "macro_recall": sum(c["recall"] for c in classes) / len(per_class) if per_class else 0.0,
            "macro_f1": sum(c["f1"] for c in classes) / len(per_class) if per_class else 0.0,
            "per_class": per_class,
        }
