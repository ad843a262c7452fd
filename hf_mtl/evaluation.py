"""Word-level evaluation of multi-task predictions for `Trainer`: logits -> ids -> word-level labels -> scores.

Wiring, for every split evaluated (the closure reads that split's `word_ids`, `words` and `<task>_gold` columns):

```python
trainer = Trainer(..., compute_metrics=build_compute_metrics(tasks, eval_dataset),
                  preprocess_logits_for_metrics=preprocess_logits_for_metrics)
trainer.compute_metrics = build_compute_metrics(tasks, test_dataset)  # before trainer.predict(test_dataset)
```
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import evaluate

SEQUENCE_CLASSIFICATION = "sequence_classification"
TOKEN_CLASSIFICATION = "token_classification"
OUTSIDE_TAG = "O"
GOLD_SUFFIX = "_gold"
# `<task>_<metric>` keys per task type, and the main one that `score` averages (`metric_for_best_model="score"`).
TASK_METRICS = {
    SEQUENCE_CLASSIFICATION: ("accuracy", "macro_f1"),
    TOKEN_CLASSIFICATION: ("precision", "recall", "f1", "accuracy"),
}
MAIN_METRIC = {SEQUENCE_CLASSIFICATION: "accuracy", TOKEN_CLASSIFICATION: "f1"}
METRIC_MODULE_PATH = Path(__file__).resolve().parent / "metrics" / "multitask_seqeval"


@dataclass(frozen=True)
class TaskSpec:
    """What evaluation needs of a task: its name, type and id -> label list."""

    name: str
    type: str
    labels: tuple


def as_task_specs(tasks) -> list:
    """Normalises task objects (`.name`, `.type`, `.labels`) or plain dicts with those keys to [`TaskSpec`]s."""
    specs = []
    for task in tasks:
        get = task.get if isinstance(task, Mapping) else lambda key, task=task: getattr(task, key)
        if get("type") not in MAIN_METRIC:
            raise ValueError(f"task {get('name')!r}: type {get('type')!r} is not one of {list(MAIN_METRIC)}")
        specs.append(TaskSpec(name=get("name"), type=get("type"), labels=tuple(get("labels"))))
    return specs


@lru_cache(maxsize=None)
def load_metric(task_type: str) -> evaluate.EvaluationModule:
    """The package's `evaluate` module for one task type, loaded by path (works offline).

    `keep_in_memory` avoids cache files that concurrent DDP processes would otherwise contend for.
    """
    return evaluate.load(str(METRIC_MODULE_PATH), config_name=task_type, keep_in_memory=True)


def preprocess_logits_for_metrics(logits, labels):
    """Task name -> argmax ids (`[batch]` or `[batch, seq]`), so evaluation never accumulates full logits."""
    if not isinstance(logits, Mapping):
        # Trainer passes a tuple when the model returns more than one non-loss output; the logits dict comes first.
        logits = next(output for output in logits if isinstance(output, Mapping))
    return {name: task_logits.argmax(dim=-1) for name, task_logits in logits.items()}


def word_level_tags(predicted_ids, word_ids, num_words: int, labels) -> list:
    """One tag per word: the prediction at the word's first subtoken; words with no subtoken (truncated) are `O`."""
    tags = [OUTSIDE_TAG] * num_words
    tagged = set()
    for position, word in enumerate(word_ids):
        if word is None or word < 0 or word >= num_words or word in tagged:
            continue
        tagged.add(word)
        tags[word] = labels[int(predicted_ids[position])]
    return tags


def _gold_rows(dataset, tasks) -> list:
    """The rows of `dataset` as dicts with only the columns evaluation reads (`dataset` may be a list of dicts)."""
    if hasattr(dataset, "select_columns"):
        gold_columns = [task.name + GOLD_SUFFIX for task in tasks if task.name + GOLD_SUFFIX in dataset.column_names]
        dataset = dataset.select_columns(["words", "word_ids"] + gold_columns)
    return list(dataset)


def decode_predictions(tasks, predictions: Mapping, dataset) -> list:
    """
    One dict per example of `dataset`: `{"words": [...], "<task>": {"gold": ..., "pred": ...}}` with label strings for
    sentence tasks and word-level tag lists for token tasks; a task is left out where the example has no gold for it.

    `predictions` is `EvalPrediction.predictions`: task name -> argmax ids, in the order of `dataset`.
    """
    tasks = as_task_specs(tasks)
    rows = dataset if isinstance(dataset, list) else _gold_rows(dataset, tasks)
    for task in tasks:
        if len(predictions[task.name]) != len(rows):
            raise ValueError(
                f"{len(predictions[task.name])} predictions for task {task.name!r} but {len(rows)} examples: build "
                "compute_metrics / decode_predictions with the data set that was evaluated"
            )
    decoded = []
    for index, row in enumerate(rows):
        example = {"words": list(row["words"])}
        for task in tasks:
            gold = row.get(task.name + GOLD_SUFFIX)
            if not gold:  # "" or [] (or a missing column): this example has no label for the task
                continue
            predicted = predictions[task.name][index]
            if task.type == TOKEN_CLASSIFICATION:
                gold = list(gold)
                predicted = word_level_tags(predicted, row["word_ids"], len(gold), task.labels)
            else:
                predicted = task.labels[int(predicted)]
            example[task.name] = {"gold": gold, "pred": predicted}
        decoded.append(example)
    return decoded


def compute_task_results(tasks, decoded: list) -> dict:
    """Task name -> the metric module's full output (per entity type / per class included) on the examples with gold."""
    results = {}
    for task in as_task_specs(tasks):
        pairs = [example[task.name] for example in decoded if task.name in example]
        if pairs:
            results[task.name] = load_metric(task.type).compute(
                predictions=[pair["pred"] for pair in pairs], references=[pair["gold"] for pair in pairs]
            )
    return results


def flatten_task_results(tasks, results: dict) -> dict:
    """The Trainer metrics: `<task>_<metric>` per scored task plus `score`, the mean of each task's main metric."""
    scored = [task for task in as_task_specs(tasks) if task.name in results]
    metrics = {}
    for task in scored:
        # The seqeval module names its entity-level micro averages `overall_<metric>`.
        prefix = "overall_" if task.type == TOKEN_CLASSIFICATION else ""
        for metric in TASK_METRICS[task.type]:
            metrics[f"{task.name}_{metric}"] = results[task.name][prefix + metric]
    if scored:
        metrics["score"] = sum(metrics[f"{task.name}_{MAIN_METRIC[task.type]}"] for task in scored) / len(scored)
    return metrics


def compute_metrics_from_decoded(tasks, decoded: list) -> dict:
    """The same dict `build_compute_metrics` returns, from already decoded predictions (reports use this)."""
    return flatten_task_results(tasks, compute_task_results(tasks, decoded))


def build_compute_metrics(tasks, dataset):
    """`compute_metrics` for `Trainer`, scoring `EvalPrediction.predictions` against the gold columns of `dataset`."""
    tasks = as_task_specs(tasks)
    rows = _gold_rows(dataset, tasks)  # read once: compute_metrics runs at every evaluation

    def compute_metrics(eval_prediction):
        return compute_metrics_from_decoded(tasks, decode_predictions(tasks, eval_prediction.predictions, rows))

    return compute_metrics


def class_order(task: TaskSpec, gold_labels) -> list:
    """Row/column order of a sentence task's tables: the model's labels, then gold labels it does not know."""
    return list(task.labels) + sorted(set(gold_labels) - set(task.labels))


def confusion_matrix(task: TaskSpec, decoded: list) -> tuple:
    """`(labels, counts)` of a sentence task: `counts[i][j]` examples with gold `labels[i]` predicted `labels[j]`."""
    pairs = Counter((example[task.name]["gold"], example[task.name]["pred"]) for example in decoded if task.name in example)
    labels = class_order(task, [gold for gold, _ in pairs])
    return labels, [[pairs[(gold, pred)] for pred in labels] for gold in labels]


def unseen_gold_labels(tasks, decoded: list) -> dict:
    """Task name -> {gold label or tag the model does not know: count} (tasks without any are left out)."""
    unseen = {}
    for task in as_task_specs(tasks):
        known = set(task.labels)
        counts = Counter()
        for example in decoded:
            if task.name in example:
                gold = example[task.name]["gold"]
                counts.update(label for label in ([gold] if isinstance(gold, str) else gold) if label not in known)
        if counts:
            unseen[task.name] = dict(sorted(counts.items()))
    return unseen


__all__ = [
    "build_compute_metrics",
    "compute_metrics_from_decoded",
    "compute_task_results",
    "confusion_matrix",
    "decode_predictions",
    "preprocess_logits_for_metrics",
    "unseen_gold_labels",
]
