"""Per-split outputs a person reads: the Markdown report (`eval_report.md`, `test_report.md`) and `*_predictions.jsonl`.

Both take the output of [`~hf_mtl.evaluation.decode_predictions`]; the report's numbers come from the same metric
module and code path as the Trainer metrics, so they equal `<split>_results.json`.
"""

import json
from pathlib import Path

from .evaluation import compute_task_results, flatten_task_results, unseen_gold_labels
from .tasks.base import Table, Total


def write_predictions_jsonl(path, decoded: list) -> Path:
    """One JSON line per example: `{"words": [...], "<task>": {"gold": ..., "pred": ...}}` (`"words_pair"` too for a
    sentence pair)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for example in decoded:
            file.write(json.dumps(example, ensure_ascii=False) + "\n")
    return path


def write_report(path, split_name: str, tasks, decoded: list, unseen_labels: dict | None = None,
                 start_metrics: dict | None = None) -> Path:
    """
    Writes the Markdown report of one split and returns its path.

    Args:
        split_name: `"eval"` or `"test"`; prefixes the metric keys as Trainer does (`eval_ner_f1`).
        tasks: the run's `hf_mtl.tasks.Task`s.
        decoded: the output of `decode_predictions` on this split.
        unseen_labels: task name -> {label: count} of gold labels unseen in training; defaults to the gold labels
            of `decoded` that are not in the task's label list.
        start_metrics: the scores of the model the run started from, on this split, before training
            (`<split>_<task>_<metric>`, as `hf_mtl.train.start_scores` returns them): a "Drift from the starting
            model" section compares them with this split's scores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(split_name, tasks, decoded, unseen_labels, start_metrics), encoding="utf-8")
    return path


def render_report(split_name: str, tasks, decoded: list, unseen_labels: dict | None = None,
                  start_metrics: dict | None = None) -> str:
    results = compute_task_results(tasks, decoded)
    metrics = flatten_task_results(tasks, results)
    if unseen_labels is None:
        unseen_labels = unseen_gold_labels(tasks, decoded)

    lines = [
        f"# Evaluation report: {split_name}",
        "",
        f"{len(decoded)} examples. Scores are fractions in [0, 1] (mean squared errors in the target's squared "
        "units), computed at word level for token tasks (a word's prediction is the one at its first subtoken; "
        "words lost to truncation count as predicted `O`). Each task is scored only on the examples that have its "
        "gold labels.",
        "",
        "## Summary",
        "",
        *markdown_table(["metric", "value"], [[f"`{split_name}_{key}`", markdown_number(value)] for key, value in metrics.items()]),
    ]
    end_metrics = {f"{split_name}_{key}": value for key, value in metrics.items()}
    drift = drift_rows(tasks, split_name, start_metrics or {}, end_metrics)
    if drift:
        lines += [
            "", f"## {DRIFT_TITLE}", "",
            "The tasks the starting model (`model_name_or_path`) already had, scored on this split before training "
            "(`start_results.json`) and after; change = end - start (for `mse` lower is better).", "",
            *drift_table(drift),
        ]
    for task in tasks:
        examples = [example for example in decoded if task.name in example]
        lines += ["", f"## Task `{task.name}` ({task.kind})", ""]
        if not examples:
            lines.append("No example of this split has gold labels for this task.")
        else:
            lines += markdown_blocks(task.report_section(results[task.name], examples))
        if task.labels is None:
            continue
        lines += ["", "### Labels unseen in training", ""]
        task_unseen = unseen_labels.get(task.name, {})
        if task_unseen:
            lines += markdown_table(["label", "count"], [[text_cell(label), str(count)] for label, count in task_unseen.items()])
        else:
            lines.append("None.")
    return "\n".join(lines) + "\n"


DRIFT_TITLE = "Drift from the starting model"


def drift_rows(tasks, split_name: str, start_metrics: dict, end_metrics: dict) -> list:
    """`[task, metric, start, end, change]` for each metric of each task scored both at the start and at the end
    (both dicts keyed `<split>_<task>_<metric>`), main metric first."""
    rows = []
    for task in tasks:
        for metric in task.metric_names:
            key = f"{split_name}_{task.name}_{metric}"
            if start_metrics.get(key) is not None and end_metrics.get(key) is not None:
                start, end = float(start_metrics[key]), float(end_metrics[key])
                name = metric + (" (main)" if metric == task.main_metric else "")
                rows.append([task.name, name, start, end, end - start])
    return rows


def drift_table(rows: list) -> list:
    """Markdown lines of `drift_rows`: scores to 4 decimals, the change signed."""
    return markdown_table(
        ["task", "metric", "start", "end", "change"],
        [[f"`{text_cell(task)}`", metric, markdown_number(start), markdown_number(end), f"{change:+.4f}"]
         for task, metric, start, end, change in rows],
    )


def markdown_blocks(blocks: list) -> list:
    """A task's report section (paragraphs and `Table`s) as Markdown lines, a blank line between blocks."""
    lines = []
    for block in blocks:
        if lines:
            lines.append("")
        if isinstance(block, Table):
            lines += markdown_table([text_cell(cell) for cell in block.header], [list(map(markdown_cell, row)) for row in block.rows])
        else:
            lines.append(block)
    return lines


def markdown_cell(value) -> str:
    if isinstance(value, Total):
        return f"**{value}**"
    if isinstance(value, float):
        return markdown_number(value)
    return text_cell(value)


def markdown_number(value: float) -> str:
    return f"{value:.4f}"


def text_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(header: list, rows: list) -> list:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


__all__ = ["drift_rows", "drift_table", "render_report", "write_predictions_jsonl", "write_report"]
