"""Word-level metrics of hf_mtl.evaluation on hand-made predictions (no model, no training)."""

import numpy as np
import pytest
import torch
from conftest import NER_LABELS, TOPIC_NER_TASKS
from seqeval import metrics as seqeval_metrics
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction
from transformers.trainer_pt_utils import nested_concat, nested_numpify

from hf_mtl.evaluation import (
    build_compute_metrics,
    build_preprocess_logits_for_metrics,
    compute_metrics_from_decoded,
    decode_predictions,
    load_metric,
)
from hf_mtl.tasks import tasks_of_config

TASKS = tasks_of_config(TOPIC_NER_TASKS)

# word_ids: -1 for [CLS]/[SEP]; "Smithson" is two subtokens; example 1 lost "New York" to truncation;
# example 2 has gold labels the model does not know (B-ORG, "politics"); examples 1 and 3 lack one task's gold.
ROWS = [
    {
        "words": ["John", "Smithson", "visited", "Paris"],
        "word_ids": [-1, 0, 1, 1, 2, 3, -1],
        "ner_gold": ["B-PER", "I-PER", "O", "B-LOC"],
        "topic_gold": "sports",
    },
    {
        "words": ["Mary", "flew", "to", "New", "York"],
        "word_ids": [-1, 0, 1, 2, -1],
        "ner_gold": ["B-PER", "O", "O", "B-LOC", "I-LOC"],
        "topic_gold": "",
    },
    {
        "words": ["Acme", "hired", "Bob"],
        "word_ids": [-1, 0, 1, 2, -1],
        "ner_gold": ["B-ORG", "O", "B-PER"],
        "topic_gold": "politics",
    },
    {"words": ["Stocks", "fell"], "word_ids": [-1, 0, 1, -1], "ner_gold": [], "topic_gold": "business"},
]
# Predicted tag ids per subtoken position. Example 0: "##son" says B-LOC and [SEP] says I-LOC, both to be ignored.
NER_IDS = [[0, 1, 2, 3, 0, 3, 4], [0, 1, 0, 0, 0], [0, 0, 0, 3, 0], [0, 1, 1, 0]]
TOPIC_IDS = [1, 2, 0, 0]  # example 1's "tech" has no gold to be scored against

EXPECTED_NER_PRED = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["B-PER", "O", "O", "O", "O"],  # the truncated words count as O
    ["O", "O", "B-LOC"],
]
EXPECTED_TOPIC_PRED = ["sports", "business", "business"]


def padded_predictions():
    """`EvalPrediction.predictions` as Trainer hands them over: token ids padded with -100 along the seq axis."""
    width = max(len(ids) for ids in NER_IDS)
    ner = np.full((len(NER_IDS), width), -100)
    for row, ids in enumerate(NER_IDS):
        ner[row, : len(ids)] = ids
    return {"ner": ner, "topic": np.array(TOPIC_IDS)}


def test_decode_maps_first_subtokens_to_words_and_skips_missing_gold():
    decoded = decode_predictions(TASKS, padded_predictions(), ROWS)
    assert [example["words"] for example in decoded] == [row["words"] for row in ROWS]
    assert [example["ner"]["pred"] for example in decoded[:3]] == EXPECTED_NER_PRED
    assert "ner" not in decoded[3]
    assert "topic" not in decoded[1]
    assert [decoded[i]["topic"] for i in (0, 2, 3)] == [
        {"gold": gold, "pred": pred} for gold, pred in zip(["sports", "politics", "business"], EXPECTED_TOPIC_PRED)
    ]


def test_metric_values_at_word_level():
    decoded = decode_predictions(TASKS, padded_predictions(), ROWS)
    metrics = compute_metrics_from_decoded(TASKS, decoded)
    # Gold entities: PER, LOC | PER, LOC | ORG, PER = 6; predicted: PER, LOC | PER | LOC = 4; correct: 3.
    assert metrics["ner_precision"] == pytest.approx(3 / 4)
    assert metrics["ner_recall"] == pytest.approx(3 / 6)
    assert metrics["ner_f1"] == pytest.approx(0.6)
    assert metrics["ner_accuracy"] == pytest.approx(8 / 12)
    assert metrics["topic_accuracy"] == pytest.approx(2 / 3)
    # Classes sports (F1 1), politics (unseen: F1 0), business (P 1/2, R 1: F1 2/3).
    assert metrics["topic_macro_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert metrics["score"] == pytest.approx((2 / 3 + 0.6) / 2)
    assert set(metrics) == {
        "ner_precision", "ner_recall", "ner_f1", "ner_accuracy", "topic_accuracy", "topic_macro_f1", "score"
    }  # fmt: skip
    assert all(0.0 <= value <= 1.0 for value in metrics.values())


def test_metric_values_equal_seqeval_and_sklearn_directly():
    decoded = decode_predictions(TASKS, padded_predictions(), ROWS)
    metrics = compute_metrics_from_decoded(TASKS, decoded)
    gold = [example["ner"]["gold"] for example in decoded if "ner" in example]
    pred = [example["ner"]["pred"] for example in decoded if "ner" in example]
    assert metrics["ner_precision"] == pytest.approx(seqeval_metrics.precision_score(gold, pred))
    assert metrics["ner_recall"] == pytest.approx(seqeval_metrics.recall_score(gold, pred))
    assert metrics["ner_f1"] == pytest.approx(seqeval_metrics.f1_score(gold, pred))
    assert metrics["ner_accuracy"] == pytest.approx(seqeval_metrics.accuracy_score(gold, pred))
    per_type = load_metric("token_classification").compute(predictions=pred, references=gold)
    report = seqeval_metrics.classification_report(gold, pred, output_dict=True, zero_division=0)
    for entity_type in ("LOC", "ORG", "PER"):
        assert per_type[entity_type]["f1"] == pytest.approx(report[entity_type]["f1-score"])
        assert per_type[entity_type]["number"] == report[entity_type]["support"]
    assert per_type["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])

    topic_gold = [example["topic"]["gold"] for example in decoded if "topic" in example]
    topic_pred = [example["topic"]["pred"] for example in decoded if "topic" in example]
    assert metrics["topic_accuracy"] == pytest.approx(accuracy_score(topic_gold, topic_pred))
    assert metrics["topic_macro_f1"] == pytest.approx(f1_score(topic_gold, topic_pred, average="macro"))


def test_compute_metrics_through_trainer_batching(tmp_path):
    """Logits of two batches -> preprocess_logits_for_metrics -> Trainer's -100 padded concat -> compute_metrics."""
    import datasets

    def batch_logits(examples):
        width = max(len(NER_IDS[i]) for i in examples)
        ner_ids = torch.tensor([NER_IDS[i] + [0] * (width - len(NER_IDS[i])) for i in examples])
        return {
            "ner": torch.nn.functional.one_hot(ner_ids, len(NER_LABELS)).float(),
            "topic": torch.nn.functional.one_hot(torch.tensor([TOPIC_IDS[i] for i in examples]), 3).float(),
        }

    preprocess_logits_for_metrics = build_preprocess_logits_for_metrics(TASKS)
    first = preprocess_logits_for_metrics(batch_logits([0, 1]), labels=None)
    # The tuple form Trainer passes when the model returns another output after the logits dict.
    second = preprocess_logits_for_metrics((batch_logits([2, 3]), {"ner": torch.zeros(())}), labels=None)
    assert first["ner"].shape == (2, 7) and first["topic"].shape == (2,)
    predictions = nested_numpify(nested_concat(first, second, padding_index=-100))
    assert predictions["ner"].shape == (4, 7) and (predictions["ner"][2:, 5:] == -100).all()

    dataset = datasets.Dataset.from_list([dict(row, extra_column=1) for row in ROWS])
    compute_metrics = build_compute_metrics(TASKS, dataset)
    metrics = compute_metrics(EvalPrediction(predictions=predictions, label_ids=None))
    assert metrics == pytest.approx(compute_metrics_from_decoded(TASKS, decode_predictions(TASKS, padded_predictions(), ROWS)))


def test_tasks_without_any_gold():
    rows = [dict(row, ner_gold=[]) for row in ROWS]
    metrics = compute_metrics_from_decoded(TASKS, decode_predictions(TASKS, padded_predictions(), rows))
    assert set(metrics) == {"topic_accuracy", "topic_macro_f1", "score"}
    assert metrics["score"] == metrics["topic_accuracy"]


def test_all_o_predictions_score_zero_without_warnings(recwarn):
    rows = [{"words": ["a", "b"], "word_ids": [-1, 0, 1, -1], "ner_gold": ["O", "O"], "topic_gold": ""}]
    predictions = {"ner": np.array([[0, 0, 0, 0]]), "topic": np.array([0])}
    metrics = compute_metrics_from_decoded(TASKS, decode_predictions(TASKS, predictions, rows))
    assert metrics == {"ner_precision": 0.0, "ner_recall": 0.0, "ner_f1": 0.0, "ner_accuracy": 1.0, "score": 0.0}
    assert not [warning for warning in recwarn if "seqeval" in str(warning.filename) or "numpy" in str(warning.filename)]


def test_prediction_count_mismatch_names_the_problem():
    with pytest.raises(ValueError, match="3 predictions for task 'topic' but 4 examples"):
        decode_predictions(TASKS, {name: array[:3] for name, array in padded_predictions().items()}, ROWS)
