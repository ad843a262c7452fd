"""Reports, predictions JSON Lines and plots from hand-made decoded predictions and a fake Trainer log history."""

import json
import re

import pytest
from conftest import TOPIC_NER_TASKS, confusion_counts, plotted_lines, record_saved_figures
from seqeval.metrics import classification_report

from hf_mtl.evaluation import compute_metrics_from_decoded
from hf_mtl.plots import write_plots
from hf_mtl.reports import write_predictions_jsonl, write_report
from hf_mtl.tasks import tasks_of_config

TASKS = tasks_of_config(TOPIC_NER_TASKS)
DECODED = [
    {
        "words": ["John", "Smith", "visited", "Paris"],
        "ner": {"gold": ["B-PER", "I-PER", "O", "B-LOC"], "pred": ["B-PER", "I-PER", "O", "B-LOC"]},
        "topic": {"gold": "sports", "pred": "sports"},
    },
    {"words": ["Mary", "flew", "to", "Rome"], "ner": {"gold": ["B-PER", "O", "O", "B-LOC"], "pred": ["B-PER", "O", "O", "O"]}},
    {
        "words": ["Acme", "hired", "Bob", "Lee"],
        "ner": {"gold": ["B-ORG", "O", "B-PER", "I-PER"], "pred": ["O", "O", "B-LOC", "I-LOC"]},
        "topic": {"gold": "politics", "pred": "business"},
    },
    {"words": ["Stocks", "fell"], "topic": {"gold": "business", "pred": "business"}},
    {"words": ["Chips", "sold"], "topic": {"gold": "tech", "pred": "business"}},
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def table_row(report: str, first_cell: str) -> list:
    """The cells after `first_cell` of the first Markdown table row that starts with it."""
    match = re.search(rf"^\| {re.escape(first_cell)} \| (.*) \|$", report, flags=re.MULTILINE)
    assert match, f"no row {first_cell!r} in the report"
    return [cell.strip() for cell in match.group(1).split(" | ")]


@pytest.fixture
def report(tmp_path):
    path = write_report(tmp_path / "eval_report.md", "eval", TASKS, DECODED)
    return path.read_text(encoding="utf-8")


def test_report_summary_holds_the_metrics(report):
    metrics = compute_metrics_from_decoded(TASKS, DECODED)
    assert report.startswith("# Evaluation report: eval")
    for key, value in metrics.items():
        assert table_row(report, f"`eval_{key}`") == [f"{value:.4f}"]


def test_report_token_table_equals_seqeval(report):
    gold = [example["ner"]["gold"] for example in DECODED if "ner" in example]
    pred = [example["ner"]["pred"] for example in DECODED if "ner" in example]
    expected = classification_report(gold, pred, output_dict=True, zero_division=0)
    ner_section = report.split("## Task `ner`")[1].split("## Task `topic`")[0]
    for row_name, key in [("LOC", "LOC"), ("ORG", "ORG"), ("PER", "PER"), ("**micro avg**", "micro avg"), ("**macro avg**", "macro avg")]:
        scores = expected[key]
        assert table_row(ner_section, row_name) == [
            f"{scores['precision']:.4f}", f"{scores['recall']:.4f}", f"{scores['f1-score']:.4f}", str(scores["support"])
        ]  # fmt: skip
    metrics = compute_metrics_from_decoded(TASKS, DECODED)
    assert f"Tag accuracy: {metrics['ner_accuracy']:.4f}" in ner_section


def test_report_sentence_table_and_confusion_matrix(report):
    topic_section = report.split("## Task `topic`")[1]
    # business: predicted 3 times, right once (gold 1) -> P 1/3, R 1, F1 1/2.
    assert table_row(topic_section, "business") == ["0.3333", "1.0000", "0.5000", "1"]
    assert table_row(topic_section, "politics") == ["0.0000", "0.0000", "0.0000", "1"]
    assert table_row(topic_section, "**macro avg**")[2] == f"{(0.5 + 1 + 0 + 0) / 4:.4f}"
    assert "Accuracy: 0.5000" in topic_section
    # Rows gold, columns predicted; the model's labels first, then the unseen gold label.
    assert "| gold \\ predicted | business | sports | tech | politics |" in topic_section
    matrix = topic_section.split("Confusion matrix")[1]
    assert table_row(matrix, "business") == ["1", "0", "0", "0"]
    assert table_row(matrix, "sports") == ["0", "1", "0", "0"]
    assert table_row(matrix, "tech") == ["1", "0", "0", "0"]
    assert table_row(matrix, "politics") == ["1", "0", "0", "0"]


def test_report_lists_unseen_labels_with_counts(report, tmp_path):
    ner_section = report.split("## Task `ner`")[1].split("## Task `topic`")[0]
    assert table_row(ner_section.split("Labels unseen in training")[1], "B-ORG") == ["1"]
    assert table_row(report.split("## Task `topic`")[1].split("Labels unseen in training")[1], "politics") == ["1"]
    given = write_report(tmp_path / "t.md", "test", TASKS, DECODED, unseen_labels={"topic": {"politics": 7}}).read_text()
    # Given counts (e.g. from the data layer) replace the ones derived from the gold labels.
    assert "| politics | 7 |" in given and "| B-ORG | 1 |" not in given


def test_predictions_jsonl_round_trip(tmp_path):
    path = write_predictions_jsonl(tmp_path / "out" / "test_predictions.jsonl", DECODED)
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == DECODED


def fake_log_history(num_logs=4, with_eval=True):
    history = []
    for step in range(1, num_logs + 1):
        history.append({"loss": 2.0 / step, "loss_ner": 1.5 / step, "loss_topic": 0.5 / step, "learning_rate": 1e-5, "epoch": step / 2, "step": step * 10})
        if with_eval and step % 2 == 0:
            history.append({"eval_loss": 1.0 / step, "eval_ner_f1": 0.2 * step, "eval_ner_precision": 0.1 * step, "eval_topic_accuracy": 0.2 * step,
                            "eval_topic_macro_f1": 0.1 * step, "eval_score": 0.2 * step, "eval_runtime": 1.0, "epoch": step / 2, "step": step * 10})  # fmt: skip
    history.append({"train_runtime": 3.0, "train_loss": 1.0, "epoch": num_logs / 2, "step": num_logs * 10})
    return history


@pytest.fixture
def drawn(monkeypatch) -> dict:
    return record_saved_figures(monkeypatch)


def test_plots_from_trainer_state_draw_the_logged_values(tmp_path, drawn):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": fake_log_history()}))
    paths = write_plots(tmp_path, tasks=TASKS, decoded=DECODED, split_name="test")
    assert sorted(path.name for path in paths) == ["confusion_matrix_topic.png", "eval_metrics.png", "training_loss.png"]
    assert all(path.parent == tmp_path / "plots" and path.read_bytes()[:8] == PNG_MAGIC for path in paths)

    loss = plotted_lines(drawn["training_loss.png"])
    steps = [10.0, 20.0, 30.0, 40.0]
    assert loss["total"] == (steps, pytest.approx([2.0 / step for step in range(1, 5)]))
    assert loss["ner"] == (steps, pytest.approx([1.5 / step for step in range(1, 5)]))
    assert loss["topic"] == (steps, pytest.approx([0.5 / step for step in range(1, 5)]))
    assert loss["eval (total)"] == ([20.0, 40.0], [0.5, 0.25])
    metrics = plotted_lines(drawn["eval_metrics.png"])
    assert set(metrics) == {"ner_f1", "ner_precision", "topic_accuracy", "topic_macro_f1", "score"}
    assert metrics["score"] == ([20.0, 40.0], pytest.approx([0.4, 0.8]))

    matrix = drawn["confusion_matrix_topic.png"]
    assert "test" in matrix.axes[0].get_title()
    # "politics", a gold label the task does not know, gets its own row: its example is counted, not dropped.
    assert confusion_counts(matrix) == {
        ("sports", "sports"): 1, ("politics", "business"): 1, ("business", "business"): 1, ("tech", "business"): 1
    }


def test_plots_follow_their_input(tmp_path, drawn):
    paths = write_plots(tmp_path, log_history=fake_log_history(num_logs=1, with_eval=False))
    assert [path.name for path in paths] == ["training_loss.png"]
    assert plotted_lines(drawn["training_loss.png"]) == {
        "total": ([10.0], [2.0]), "ner": ([10.0], [1.5]), "topic": ([10.0], [0.5])
    }
    assert write_plots(tmp_path / "empty") == []
