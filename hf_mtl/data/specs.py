"""The `tasks` and `datasets` blocks of a run config, checked field by field before any file is read."""

from ..errors import ConfigError
from ..tasks import Task, parse_task

FORMATS = ("jointbert", "conll", "json", "csv", "tsv", "parquet", "hub")
TAG_SCHEMES = ("iob1", "iob2")
DATASET_KEYS = ("path", "format", "name", "splits", "data_files", "tag_scheme", "column_names")
# A task's config keys of its input columns, by the input's kind (the first item of `Task.input_columns`).
INPUT_COLUMN_KEYS = {
    "text": ("text_column", "text_pair_column"),
    "words": ("tokens_column", "tokens_pair_column"),
}


def input_column_keys(input_kind: str) -> tuple:
    """`(key of the input column, key of the pair's second column)` of an input kind, "text" or "words"."""
    return INPUT_COLUMN_KEYS[input_kind]


def parse_tasks(tasks: list, dataset_names) -> list:
    """The `tasks` block as [`Task`]s: at least one task, each valid for its kind, unique names, declared data sets.
    Items that are `Task`s already (the preflight's) are kept as they are, and checked against each other."""
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError("tasks: a non-empty list of tasks is required")
    parsed = []
    for index, task in enumerate(tasks):
        where = f"tasks[{index}]"
        task = task if isinstance(task, Task) else parse_task(task, where)
        if task.name in [other.name for other in parsed]:
            raise ConfigError(f"{where}.name: task name {task.name!r} is used twice")
        if task.dataset not in dataset_names:
            declared = ", ".join(sorted(dataset_names)) or "none"
            raise ConfigError(f"{where}.dataset: {task.dataset!r} is not declared in datasets (declared: {declared})")
        parsed.append(task)
    return parsed


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
