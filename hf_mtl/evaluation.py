"""Word-level evaluation of multi-task predictions for `Trainer`: logits -> reduced predictions -> gold-shaped
values -> scores, each step done by the task's kind (`hf_mtl.tasks`).

Wiring, for every split evaluated (the closure reads that split's `word_ids`, `words` and `<task>_gold` columns):

```python
trainer = Trainer(..., compute_metrics=build_compute_metrics(tasks, eval_dataset),
                  preprocess_logits_for_metrics=build_preprocess_logits_for_metrics(tasks))
trainer.compute_metrics = build_compute_metrics(tasks, test_dataset)  # before trainer.predict(test_dataset)
```
"""

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import evaluate

GOLD_SUFFIX = "_gold"
METRIC_MODULE_PATH = Path(__file__).resolve().parent / "metrics" / "multitask_metrics"


@lru_cache(maxsize=None)
def load_metric(kind: str) -> evaluate.EvaluationModule:
    """The package's `evaluate` module for one kind of task (or a token task's tag format, e.g.
    `"token_classification_plain"`), loaded by path (works offline).

    `keep_in_memory` avoids cache files that concurrent DDP processes would otherwise contend for.
    """
    return evaluate.load(str(METRIC_MODULE_PATH), config_name=kind, keep_in_memory=True)


def build_preprocess_logits_for_metrics(tasks):
    """`preprocess_logits_for_metrics` for `Trainer`: task name -> what its kind keeps of the logits (argmax ids,
    label probabilities, the predicted number; a CRF head's Viterbi tags from the model's `predictions`), so
    evaluation never accumulates full logits."""
    by_name = {task.name: task for task in tasks}

    def preprocess_logits_for_metrics(outputs, labels):
        logits, predictions = outputs, {}
        if not isinstance(outputs, Mapping):
            # Trainer passes a tuple when the model returns more than one non-loss output: logits, then predictions.
            mappings = [output for output in outputs if isinstance(output, Mapping)]
            logits, predictions = mappings[0], (mappings[1] if len(mappings) > 1 else {})
        return {
            name: predictions[name] if by_name[name].needs_word_starts and name in predictions
            else by_name[name].reduce_logits(task_logits)
            for name, task_logits in logits.items()
        }

    return preprocess_logits_for_metrics


def _gold_rows(dataset, tasks) -> list:
    """The rows of `dataset` as dicts with only the columns evaluation reads (`dataset` may be a list of dicts)."""
    if hasattr(dataset, "select_columns"):
        columns = ["words", "word_ids", "words_pair"] + [task.name + GOLD_SUFFIX for task in tasks]
        dataset = dataset.select_columns([column for column in columns if column in dataset.column_names])
    return list(dataset)


def decode_predictions(tasks, predictions: Mapping, dataset) -> list:
    """
    One dict per example of `dataset`: `{"words": [...], "<task>": {"gold": ..., "pred": ...}}` (and `"words_pair"`
    for a sentence pair) with gold-shaped values (a label, a sorted label list, a number, word-level tags); a task
    is left out where the example has no gold for it.

    `predictions` is `EvalPrediction.predictions`: task name -> reduced predictions, in the order of `dataset`.
    """
    rows = dataset if isinstance(dataset, list) else _gold_rows(dataset, tasks)
    for task in tasks:
        if len(predictions[task.name]) != len(rows):
            raise ValueError(
                f"{len(predictions[task.name])} predictions for task {task.name!r} but {len(rows)} examples: build "
                "compute_metrics / decode_predictions with the data set that was evaluated"
            )
    golds = {task.name: [row.get(task.name + GOLD_SUFFIX, task.missing_gold()) for row in rows] for task in tasks}
    predictions = {task.name: task.split_predictions(predictions[task.name], golds[task.name]) for task in tasks}
    decoded = []
    for index, row in enumerate(rows):
        example = {"words": list(row["words"])}
        if row.get("words_pair"):
            example["words_pair"] = list(row["words_pair"])
        for task in tasks:
            gold = golds[task.name][index]
            if task.has_gold(gold):
                example[task.name] = {"gold": gold, "pred": task.decode(predictions[task.name][index], row)}
        decoded.append(example)
    return decoded


def compute_task_results(tasks, decoded: list) -> dict:
    """Task name -> the metric module's full output (per class / entity type included) on the examples with gold."""
    results = {}
    for task in tasks:
        pairs = [example[task.name] for example in decoded if task.name in example]
        if pairs:
            results[task.name] = task.compute(pairs)
    return results


def flatten_task_results(tasks, results: dict) -> dict:
    """The Trainer metrics: `<task>_<metric>` per scored task plus `score`, the mean of each task's main metric."""
    scored = [task for task in tasks if task.name in results]
    metrics = {}
    for task in scored:
        for metric, value in task.flatten(results[task.name]).items():
            metrics[f"{task.name}_{metric}"] = value
    if scored:
        metrics["score"] = sum(metrics[f"{task.name}_{task.main_metric}"] for task in scored) / len(scored)
    return metrics


def compute_metrics_from_decoded(tasks, decoded: list) -> dict:
    """The same dict `build_compute_metrics` returns, from already decoded predictions (reports use this)."""
    return flatten_task_results(tasks, compute_task_results(tasks, decoded))


def build_compute_metrics(tasks, dataset):
    """`compute_metrics` for `Trainer`, scoring `EvalPrediction.predictions` against the gold columns of `dataset`."""
    rows = _gold_rows(dataset, tasks)  # read once: compute_metrics runs at every evaluation

    def compute_metrics(eval_prediction):
        return compute_metrics_from_decoded(tasks, decode_predictions(tasks, eval_prediction.predictions, rows))

    return compute_metrics


def unseen_gold_labels(tasks, decoded: list) -> dict:
    """Task name -> {gold label or tag the model does not know: count} (tasks without any are left out)."""
    unseen = {}
    for task in tasks:
        counts = task.unknown_labels([example[task.name]["gold"] for example in decoded if task.name in example])
        if counts:
            unseen[task.name] = dict(sorted(counts.items()))
    return unseen


__all__ = [
    "build_compute_metrics",
    "build_preprocess_logits_for_metrics",
    "compute_metrics_from_decoded",
    "compute_task_results",
    "decode_predictions",
    "load_metric",
    "unseen_gold_labels",
]
