"""The `tasks` and `datasets` blocks of a run config, checked field by field before any file is read."""

import math
from dataclasses import dataclass, fields, replace

from ..configuration_mtl import TASK_TYPES
from ..errors import ConfigError

FORMATS = ("jointbert", "conll", "json", "csv", "parquet", "hub")
TAG_SCHEMES = ("iob1", "iob2")
DATASET_KEYS = ("path", "format", "name", "splits", "data_files", "tag_scheme", "column_names")


@dataclass
class TaskSpec:
    """One head of the run: what it predicts and which columns of which data set it reads."""

    name: str
    type: str
    dataset: str
    text_column: str | None = None
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    label_column: str = "label"
    labels: list[str] | None = None
    class_weights: None | str | list[float] = None
    reinit_head: bool = False
    crf: bool = False

    @property
    def is_token_task(self) -> bool:
        return self.type == "token_classification"

    @property
    def input_column(self) -> tuple[str, str]:
        """(`"words"` or `"text"`, column name): the input this task reads from its data set."""
        if not self.is_token_task and self.text_column is not None:
            return "text", self.text_column
        return "words", self.tokens_column

    @property
    def target_column(self) -> str:
        return self.tags_column if self.is_token_task else self.label_column

    @classmethod
    def from_dict(cls, task: dict, index: int) -> "TaskSpec":
        where = f"tasks[{index}]"
        if not isinstance(task, dict):
            raise ConfigError(f"{where}: expected an object with name, type and dataset, got {task!r}")
        known = [f.name for f in fields(cls)]
        for key in task:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(known)})")
        for key in ("name", "type", "dataset"):
            if not isinstance(task.get(key), str) or not task[key]:
                raise ConfigError(f"{where}.{key}: a non-empty string is required, got {task.get(key)!r}")
        spec = cls(**task)
        spec.check(where)
        return spec

    def check(self, where: str):
        """Raise a `ConfigError` naming `<where>.<key>` for the first bad value."""
        if not self.name.isidentifier():
            raise ConfigError(f"{where}.name: {self.name!r} must be a Python identifier (it names `<name>_labels`)")
        reserved = reserved_name_reason(self.name)
        if reserved:
            raise ConfigError(f"{where}.name: {self.name!r} is reserved ({reserved}); rename the task")
        if self.type not in TASK_TYPES:
            raise ConfigError(f"{where}.type: {self.type!r} is not one of {', '.join(TASK_TYPES)}")
        for key in ("tokens_column", "tags_column", "label_column"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"{where}.{key}: a non-empty string is required, got {getattr(self, key)!r}")
        if self.text_column is not None and (not isinstance(self.text_column, str) or not self.text_column):
            raise ConfigError(f"{where}.text_column: a non-empty string or null is required, got {self.text_column!r}")
        if self.labels is not None:
            if not isinstance(self.labels, (list, tuple)) or not all(isinstance(label, str) for label in self.labels):
                raise ConfigError(f"{where}.labels: a list of strings is required, got {self.labels!r}")
            if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
                raise ConfigError(f"{where}.labels: at least 2 distinct labels are required, got {self.labels!r}")
            self.labels = list(self.labels)
        weights = self.class_weights
        if weights is not None and weights != "balanced":
            if not isinstance(weights, (list, tuple)) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights
            ) or not any(w > 0 for w in weights):
                raise ConfigError(
                    f'{where}.class_weights: null, "balanced" or a list of finite numbers >= 0 (one > 0), got {weights!r}'
                )
            if self.labels is not None and len(weights) != len(self.labels):
                raise ConfigError(f"{where}.class_weights: {len(weights)} weights for {len(self.labels)} labels")
        for key in ("reinit_head", "crf"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{where}.{key}: true or false, got {getattr(self, key)!r}")
        if self.crf and not self.is_token_task:
            raise ConfigError(f"{where}.crf: only token_classification tasks can use a CRF")


def reserved_name_reason(name: str) -> str | None:
    """Why a task cannot be called `name` (it would collide later, at prediction or model building), or None."""
    from torch import nn

    from ..pipeline_mtl import RESERVED_KEYS

    if name in RESERVED_KEYS:
        keys = ", ".join(repr(key) for key in RESERVED_KEYS)
        return f"the pipeline, `hf-mtl predict` and test_predictions.jsonl put {keys} beside the task names"
    if hasattr(nn.ModuleDict(), name):
        return "an attribute of the torch nn.ModuleDict that holds the heads"
    return None


def parse_task_specs(tasks: list, dataset_names) -> list[TaskSpec]:
    """Check the `tasks` block as a whole: at least one task, unique names, declared data sets."""
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError("tasks: a non-empty list of tasks is required")
    specs = []
    for index, task in enumerate(tasks):
        where = f"tasks[{index}]"
        if isinstance(task, TaskSpec):
            spec = replace(task)
            spec.check(where)
        else:
            spec = TaskSpec.from_dict(task, index)
        if spec.name in [other.name for other in specs]:
            raise ConfigError(f"{where}.name: task name {spec.name!r} is used twice")
        if spec.dataset not in dataset_names:
            declared = ", ".join(sorted(dataset_names)) or "none"
            raise ConfigError(f"{where}.dataset: {spec.dataset!r} is not declared in datasets (declared: {declared})")
        specs.append(spec)
    return specs


def check_dataset_spec(name: str, spec: dict):
    """Raise a `ConfigError` naming `datasets.<name>.<key>` for every way one data set entry can be wrong."""
    where = f"datasets.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected an object with path and/or data_files, got {spec!r}")
    for key in spec:
        if key not in DATASET_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(DATASET_KEYS)})")
    if spec.get("format") is not None and spec["format"] not in FORMATS:
        raise ConfigError(f"{where}.format: unknown format {spec['format']!r} (known: {', '.join(FORMATS)})")
    if spec.get("tag_scheme", "iob2") not in TAG_SCHEMES:
        raise ConfigError(f"{where}.tag_scheme: {spec['tag_scheme']!r} is not one of {', '.join(TAG_SCHEMES)}")
    if not spec.get("path") and not spec.get("data_files"):
        raise ConfigError(f"{where}: give a path (folder, file or Hub id) or data_files")
    if spec.get("splits") is not None and spec.get("data_files") is not None:
        raise ConfigError(f"{where}.splits: give either splits or data_files, not both")
    for key in ("splits", "data_files"):
        value = spec.get(key)
        if value is not None and not isinstance(value, (str, list, dict)):
            raise ConfigError(f"{where}.{key}: a file name, a list of them or split -> file(s), got {value!r}")
    columns = spec.get("column_names")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise ConfigError(f"{where}.column_names: a list of strings is required, got {columns!r}")


def check_dataset_specs(datasets: dict):
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError("datasets: a non-empty object (data set name -> {path, format, ...}) is required")
    for name, spec in datasets.items():
        check_dataset_spec(name, spec)
