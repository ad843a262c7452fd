"""Per-split outputs a person reads: the Markdown report (`eval_report.md`, `test_report.md`) and `*_predictions.jsonl`.

Both take the output of [`~hf_mtl.evaluation.decode_predictions`]; the report's numbers come from the same metric
module and code path as the Trainer metrics, so they equal `<split>_results.json`.
"""

import json
from pathlib import Path

from .evaluation import (
    TOKEN_CLASSIFICATION,
    as_task_specs,
    class_order,
    compute_task_results,
    confusion_matrix,
    flatten_task_results,
    unseen_gold_labels,
)


def write_predictions_jsonl(path, decoded: list) -> Path:
    """One JSON line per example: `{"words": [...], "<task>": {"gold": ..., "pred": ...}}`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for example in decoded:
            file.write(json.dumps(example, ensure_ascii=False) + "\n")
    return path


def write_report(path, split_name: str, tasks, decoded: list, unseen_labels: dict | None = None) -> Path:
    """
    Writes the Markdown report of one split and returns its path.

    Args:
        split_name: `"eval"` or `"test"`; prefixes the metric keys as Trainer does (`eval_ner_f1`).
        tasks: task objects or dicts with `name`, `type`, `labels`.
        decoded: the output of `decode_predictions` on this split.
        unseen_labels: task name -> {label: count} of gold labels unseen in training; defaults to the gold labels
            of `decoded` that are not in the task's label list.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(split_name, tasks, decoded, unseen_labels), encoding="utf-8")
    return path


def render_report(split_name: str, tasks, decoded: list, unseen_labels: dict | None = None) -> str:
    tasks = as_task_specs(tasks)
    results = compute_task_results(tasks, decoded)
    metrics = flatten_task_results(tasks, results)
    if unseen_labels is None:
        unseen_labels = unseen_gold_labels(tasks, decoded)

    lines = [
        f"# Evaluation report: {split_name}",
        "",
        f"{len(decoded)} examples. Scores are fractions in [0, 1], computed at word level (a word's prediction is "
        "the one at its first subtoken; words lost to truncation count as predicted `O`). Each task is scored only "
        "on the examples that have its gold labels.",
        "",
        "## Summary",
        "",
        *_table(["metric", "value"], [[f"`{split_name}_{key}`", _number(value)] for key, value in metrics.items()]),
    ]
    for task in tasks:
        examples = [example for example in decoded if task.name in example]
        lines += ["", f"## Task `{task.name}` ({task.type})", ""]
        if not examples:
            lines.append("No example of this split has gold labels for this task.")
        elif task.type == TOKEN_CLASSIFICATION:
            lines += _token_task_section(results[task.name], examples, task.name)
        else:
            lines += _sentence_task_section(task, results[task.name], examples, decoded)
        lines += ["", "### Labels unseen in training", ""]
        task_unseen = unseen_labels.get(task.name, {})
        if task_unseen:
            lines += _table(["label", "count"], [[_cell(label), str(count)] for label, count in task_unseen.items()])
        else:
            lines.append("None.")
    return "\n".join(lines) + "\n"


def _token_task_section(result: dict, examples: list, task_name: str) -> list:
    per_type = {name: scores for name, scores in result.items() if isinstance(scores, dict)}
    support = sum(scores["number"] for scores in per_type.values())
    rows = [[_cell(name), *_scores(scores), str(scores["number"])] for name, scores in per_type.items()]
    rows.append(["**micro avg**", *_scores(result, "overall_"), str(support)])
    rows.append(["**macro avg**", *_scores(result, "macro_"), str(support)])
    num_words = sum(len(example[task_name]["gold"]) for example in examples)
    return [
        f"{len(examples)} examples, {num_words} words. seqeval entity-level scores, default (conlleval) mode.",
        "",
        *_table(["entity type", "precision", "recall", "F1", "support"], rows),
        "",
        f"Tag accuracy: {_number(result['overall_accuracy'])}",
    ]


def _sentence_task_section(task, result: dict, examples: list, decoded: list) -> list:
    per_class = result["per_class"]
    support = sum(scores["number"] for scores in per_class.values())
    rows = [
        [_cell(label), *_scores(per_class[label]), str(per_class[label]["number"])]
        for label in class_order(task, per_class)
        if label in per_class
    ]
    rows.append(["**macro avg**", *_scores(result, "macro_"), str(support)])
    labels, counts = confusion_matrix(task, decoded)
    return [
        f"{len(examples)} examples.",
        "",
        *_table(["class", "precision", "recall", "F1", "support"], rows),
        "",
        f"Accuracy: {_number(result['accuracy'])}",
        "",
        "Confusion matrix (rows: gold, columns: predicted):",
        "",
        *_table(["gold \\ predicted", *map(_cell, labels)], [[_cell(gold), *map(str, row)] for gold, row in zip(labels, counts)]),
    ]


def _scores(scores: dict, prefix: str = "") -> list:
    return [_number(scores[prefix + key]) for key in ("precision", "recall", "f1")]


def _number(value: float) -> str:
    return f"{value:.4f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _table(header: list, rows: list) -> list:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


__all__ = ["render_report", "write_predictions_jsonl", "write_report"]
