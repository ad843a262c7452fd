"""The kinds of task hf_mtl trains, one class each (a module per kind): what a task reads, how its gold labels are
checked, resolved and encoded, how its predictions are decoded and scored, and the data of its report section, figure
and model-card entry. Its head, loss and pipeline output live in `hf_mtl.task_kinds` (Hub-safe).

Adding a kind: a head class registered in `task_kinds` and a `Task` subclass registered here (its module imported
below), plus its metric module config if it scores with a new one.

| kind (`type` / `problem_type`) | gold per example | `<task>_labels` | metrics (main first) |
|---|---|---|---|
| `sequence_classification` / `single_label_classification` | a label | class id | accuracy, macro_f1 |
| `sequence_classification` / `multi_label_classification` | a set of labels | multi-hot floats | micro_f1, accuracy (exact set), macro_f1 |
| `sequence_classification` / `regression` | a number | the number | pearson, spearman, mse |
| `token_classification` (`tag_format` `"BIO"`, `"BIOES"`) | one IOB2 / BIOES tag per word | tag id per sub-token | f1, precision, recall, accuracy (seqeval) |
| `token_classification` (`tag_format` `"plain"`) | one tag per word (POS) | tag id per sub-token | accuracy, macro_f1 (over tags) |
| `sentence_similarity` (scored pairs) | a number | the number | spearman, pearson (of the cosine) |
| `sentence_similarity` (positive pairs) | the pair | 1.0 | mrr_at_10, recall_at_1 (over the split's pairs) |
"""

from .base import IGNORE_INDEX, LIST_FEATURES, STRINGS, Task, inner_feature, pad_row
from .multi_label import MultiLabelClassificationTask
from .registry import TASK_CLASSES, parse_task, register_task, tasks_of_config
from .regression import RegressionTask
from .sentence_similarity import SentenceSimilarityTask
from .single_label import SingleLabelClassificationTask
from .token_classification import TokenClassificationTask

__all__ = [
    "IGNORE_INDEX",
    "LIST_FEATURES",
    "STRINGS",
    "MultiLabelClassificationTask",
    "RegressionTask",
    "SentenceSimilarityTask",
    "SingleLabelClassificationTask",
    "TASK_CLASSES",
    "Task",
    "TokenClassificationTask",
    "inner_feature",
    "pad_row",
    "parse_task",
    "register_task",
    "tasks_of_config",
]
