"""The metrics of hf_mtl's kinds of task as one `evaluate` module, loaded by path so it works offline; the config
name is the kind.

`"token_classification"`: seqeval in its default (conlleval-compatible) mode, as `run_ner.py` and JointBERT score
NER: entity-level micro precision/recall/F1, per-entity-type scores, macro averages and tag accuracy.
`"token_classification_bioes"`: the same scores from seqeval's strict mode with the IOBES scheme (an entity is
`B-X I-X* E-X` or `S-X`; a malformed sequence is no entity).
`"token_classification_plain"`: tags without prefixes (POS), each word scored as a class: tag accuracy, macro
averages and per-tag scores as `"single_label_classification"` gives them; an empty predicted tag (a word with no
prediction) is wrong and of no class.
`"single_label_classification"`: accuracy, macro-averaged precision/recall/F1 and per-class scores.
`"multi_label_classification"`: exact-set accuracy, micro- and macro-averaged precision/recall/F1 over labels and
per-label scores (scikit-learn's definitions on the binarised label sets).
`"regression"`: Pearson and Spearman correlation (scipy), mean squared and mean absolute error.
`"sentence_similarity"`: the same as `"regression"`, of the cosine of a pair's embeddings against its gold score.
Averages run over the labels present in the references or predictions, like scikit-learn's defaults.
"""

from collections import Counter

import datasets
import evaluate
import numpy as np
from scipy import stats
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
from seqeval.metrics import v1 as seqeval_strict
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support
from seqeval.scheme import IOBES, Entities

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: per example a label (single-label), a list of labels (multi-label), a number (regression) or a list
        of word tags (token classification: IOB2, BIOES or plain tags).
    references: gold values shaped like `predictions`. Labels the model does not know are errors.
Returns:
    `"token_classification"`: `overall_precision`, `overall_recall`, `overall_f1`, `overall_accuracy`,
    `macro_precision`, `macro_recall`, `macro_f1`, and per entity type `{"precision", "recall", "f1", "number"}`;
    `"token_classification_bioes"` the same keys.
    `"token_classification_plain"`: the keys of `"single_label_classification"` over words (`accuracy`: tag accuracy).
    `"single_label_classification"`: `accuracy`, `macro_precision`, `macro_recall`, `macro_f1`, and `per_class`:
    label -> `{"precision", "recall", "f1", "number"}`.
    `"multi_label_classification"`: `accuracy` (exact set), `micro_precision`, `micro_recall`, `micro_f1`,
    `macro_precision`, `macro_recall`, `macro_f1`, and `per_label` (`number`: gold examples with the label).
    `"regression"`: `pearson`, `spearman` (0.0 where undefined: fewer than 2 examples or a constant side), `mse`,
    `mae`; `"sentence_similarity"` the same keys.
Examples:
    >>> metric = evaluate.load("hf_mtl/metrics/multitask_metrics", "token_classification")
    >>> metric.compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]])["overall_f1"]
    1.0
"""

LABEL = datasets.Value("string")
LABELS = datasets.Sequence(datasets.Value("string"))
# Config name (a task kind, or a token task's tag format) -> (the feature of a prediction and a reference, the method
# that scores them).
CONFIGS = {
    "single_label_classification": (LABEL, "_compute_classification"),
    "multi_label_classification": (LABELS, "_compute_multi_label"),
    "regression": (datasets.Value("float64"), "_compute_regression"),
    "sentence_similarity": (datasets.Value("float64"), "_compute_regression"),  # the cosine against the gold score
    "token_classification": (LABELS, "_compute_seqeval"),
    "token_classification_bioes": (LABELS, "_compute_seqeval_bioes"),
    "token_classification_plain": (LABELS, "_compute_plain_tags"),
}
NO_TAG = ""  # the plain-tag prediction of a word the model gave no tag


def _scores(precision, recall, f1, number):
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "number": int(number)}


def _f1(precision, recall):
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else 0.0


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else 0.0


class MultitaskMetrics(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"config_name must be one of {list(CONFIGS)}, got {self.config_name!r}")
        label = CONFIGS[self.config_name][0]
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label, "references": label}),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references):
        return getattr(self, CONFIGS[self.config_name][1])(predictions, references)

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

    def _compute_seqeval_bioes(self, predictions, references):
        results = {}
        strict = {"scheme": IOBES, "zero_division": 0}
        entity_types = sorted(
            Entities(references, IOBES).unique_tags | Entities(predictions, IOBES).unique_tags
        )
        if entity_types:
            per_type = seqeval_strict.precision_recall_fscore_support(references, predictions, average=None, **strict)
            results.update({name: _scores(*row) for name, *row in zip(entity_types, *per_type)})
            macro = seqeval_strict.precision_recall_fscore_support(references, predictions, average="macro", **strict)
        else:
            macro = (0.0, 0.0, 0.0, 0)
        micro = seqeval_strict.precision_recall_fscore_support(references, predictions, average="micro", **strict)
        results.update(
            {
                "overall_precision": float(micro[0]) if entity_types else 0.0,
                "overall_recall": float(micro[1]) if entity_types else 0.0,
                "overall_f1": float(micro[2]) if entity_types else 0.0,
                "overall_accuracy": float(accuracy_score(references, predictions)),
                "macro_precision": float(macro[0]),
                "macro_recall": float(macro[1]),
                "macro_f1": float(macro[2]),
            }
        )
        return results

    def _compute_plain_tags(self, predictions, references):
        gold = [tag for tags in references for tag in tags]
        pred = [tag for tags in predictions for tag in tags]
        return self._compute_classification(pred, gold)

    def _compute_classification(self, predictions, references):
        gold_counts, pred_counts = Counter(references), Counter(predictions)
        correct_counts = Counter(gold for gold, pred in zip(references, predictions) if gold == pred)
        per_class = {}
        for label in sorted((gold_counts.keys() | pred_counts.keys()) - {NO_TAG}):
            precision = _ratio(correct_counts[label], pred_counts[label])
            recall = _ratio(correct_counts[label], gold_counts[label])
            per_class[label] = _scores(precision, recall, _f1(precision, recall), gold_counts[label])
        return {
            "accuracy": _ratio(sum(correct_counts.values()), len(references)),
            "macro_precision": _mean(c["precision"] for c in per_class.values()),
            "macro_recall": _mean(c["recall"] for c in per_class.values()),
            "macro_f1": _mean(c["f1"] for c in per_class.values()),
            "per_class": per_class,
        }

    def _compute_multi_label(self, predictions, references):
        gold_sets, pred_sets = [set(labels) for labels in references], [set(labels) for labels in predictions]
        gold_counts = Counter(label for labels in gold_sets for label in labels)
        pred_counts = Counter(label for labels in pred_sets for label in labels)
        correct_counts = Counter(label for gold, pred in zip(gold_sets, pred_sets) for label in gold & pred)
        per_label = {}
        for label in sorted(gold_counts.keys() | pred_counts.keys()):
            precision = _ratio(correct_counts[label], pred_counts[label])
            recall = _ratio(correct_counts[label], gold_counts[label])
            per_label[label] = _scores(precision, recall, _f1(precision, recall), gold_counts[label])
        micro_precision = _ratio(sum(correct_counts.values()), sum(pred_counts.values()))
        micro_recall = _ratio(sum(correct_counts.values()), sum(gold_counts.values()))
        return {
            "accuracy": _ratio(sum(gold == pred for gold, pred in zip(gold_sets, pred_sets)), len(gold_sets)),
            "micro_precision": micro_precision,
            "micro_recall": micro_recall,
            "micro_f1": _f1(micro_precision, micro_recall),
            "macro_precision": _mean(c["precision"] for c in per_label.values()),
            "macro_recall": _mean(c["recall"] for c in per_label.values()),
            "macro_f1": _mean(c["f1"] for c in per_label.values()),
            "per_label": per_label,
        }

    def _compute_regression(self, predictions, references):
        pred, gold = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
        defined = len(gold) >= 2 and np.ptp(gold) > 0 and np.ptp(pred) > 0
        return {
            "pearson": float(stats.pearsonr(pred, gold)[0]) if defined else 0.0,
            "spearman": float(stats.spearmanr(pred, gold)[0]) if defined else 0.0,
            "mse": float(np.mean((pred - gold) ** 2)) if len(gold) else 0.0,
            "mae": float(np.mean(np.abs(pred - gold))) if len(gold) else 0.0,
        }
