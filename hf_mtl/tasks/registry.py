"""The training-side class of each task kind (`TASK_CLASSES`), and task blocks parsed into them."""

from dataclasses import fields

from ..configuration_mtl import check_task_kind
from ..errors import ConfigError
from ..task_kinds import task_kind
from .base import Task

TASK_CLASSES = {}  # kind name (`task_kinds.task_kind`) -> its `Task` class


def register_task(task_class):
    """Class decorator: the `Task` class of the kind named by its `kind` (a kind registered in `task_kinds`)."""
    TASK_CLASSES[task_class.kind] = task_class
    return task_class


def parse_task(task, where: str, require_dataset: bool = True) -> Task:
    """
    A task block of a run config, or a task dict of a saved `MultiTaskConfig`, as its kind's [`Task`]; a
    `ConfigError` naming `<where>.<key>` for the first bad value.
    """
    if isinstance(task, Task):
        task.check(where)
        return task
    if not isinstance(task, dict):
        raise ConfigError(f"{where}: expected an object with name, type and dataset, got {task!r}")
    required = ("name", "type", "dataset") if require_dataset else ("name", "type")
    for key in required:
        if not isinstance(task.get(key), str) or not task[key]:
            raise ConfigError(f"{where}.{key}: a non-empty string is required, got {task.get(key)!r}")
    try:
        check_task_kind(task, where)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    task_class = TASK_CLASSES[task_kind(task)]
    known = [field.name for field in fields(task_class)]
    for key in task:
        if key not in known:
            if key == "crf":
                raise ConfigError(f"{where}.crf: only token_classification tasks can use a CRF")
            raise ConfigError(f"{where}.{key}: unknown key for a {task_class.kind} task (known: {', '.join(known)})")
    values = dict(task)
    for key in ("labels", "class_weights", "pos_weight"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    parsed = task_class(**values)
    parsed.check(where)
    return parsed

def tasks_of_config(config) -> list:
    """The tasks of a saved model's `MultiTaskConfig` (or of its `tasks` list) as [`Task`]s."""
    task_dicts = getattr(config, "tasks", config)
    return [parse_task(task, f"config.tasks[{index}]", require_dataset=False) for index, task in enumerate(task_dicts)]
