"""The run's preflight: every setting of a run config checked before anything is read or written.

Two passes, both raising one `ConfigError` that names the config file or the key:

- `check_config_values(values, parser, config_path)` on the JSON as written: each value has the type of its field
  (an integer, a number, true/false, a list of strings, one of an enumeration, ...). The JSON values reach argparse as
  defaults, which argparse neither type-checks (unless they are strings) nor compares with `choices`.
- `check_run_settings(...)` on the parsed arguments: the ranges of every number hf_mtl and the Trainer rely on
  (positive finite learning rates, batch sizes and accumulation steps of at least 1, probabilities in [0, 1), ...),
  the structured keys (`loss_weights`, `unfreeze_schedule`, `metric_for_best_model`), the `datasets` and `tasks` blocks.
  It returns the parsed tasks, which the run resolves and trains (`prepare_datasets`); `train.preflight` then checks
  the output folder (`atomic_files.StagedOutput.check`).
"""

import math
import types
import typing
from enum import Enum

from .configuration_mtl import SETTING_CHOICES, check_setting_choices
from .data.prepare import check_run_arguments
from .data.sampling import check_sampling_settings
from .data.specs import check_dataset_specs, parse_tasks
from .errors import ConfigError
from .freezing import UNFREEZE_KEYS, unfreeze_interval_key

# (dataclass, attribute, rule); a rule is (kind, low, low_inclusive, high, high_inclusive), None = no bound there.
# `None` values are always allowed where the field is optional (its type check already ran).
POSITIVE = ("number", 0, False, None, None)
AT_LEAST_ONE = ("integer", 1, True, None, None)
NON_NEGATIVE = ("number", 0, True, None, None)
PROBABILITY = ("number", 0, True, 1, False)
NUMERIC_RULES = {
    "model": {"classifier_dropout": PROBABILITY},
    "data": {
        "pad_to_multiple_of": AT_LEAST_ONE,
        "preprocessing_num_workers": AT_LEAST_ONE,
        "max_train_samples": AT_LEAST_ONE,
        "max_eval_samples": AT_LEAST_ONE,
    },
    "training": {
        "learning_rate": POSITIVE,
        "encoder_learning_rate": POSITIVE,
        "head_learning_rate": POSITIVE,
        "layerwise_lr_decay": ("number", 0, False, 1, True),
        "freeze_layers": ("integer", 0, True, None, None),
        "num_train_epochs": POSITIVE,  # (only where max_steps does not set the length: see check_run_settings)
        "per_device_train_batch_size": AT_LEAST_ONE,
        "per_device_eval_batch_size": AT_LEAST_ONE,
        "gradient_accumulation_steps": AT_LEAST_ONE,
        "eval_accumulation_steps": AT_LEAST_ONE,
        "weight_decay": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE,
        "max_grad_norm": NON_NEGATIVE,
        "adam_beta1": PROBABILITY,
        "adam_beta2": PROBABILITY,
        "adam_epsilon": POSITIVE,
        "label_smoothing_factor": PROBABILITY,
        "logging_steps": POSITIVE,
        "eval_steps": POSITIVE,
        "save_steps": POSITIVE,
        "eval_delay": NON_NEGATIVE,
        "dataloader_num_workers": ("integer", 0, True, None, None),
        "dataloader_prefetch_factor": AT_LEAST_ONE,
        "torch_empty_cache_steps": AT_LEAST_ONE,
        "seed": ("integer", 0, True, 2**32 - 1, True),  # numpy's seed range
        "data_seed": ("integer", 0, True, 2**32 - 1, True),
        "ddp_timeout": AT_LEAST_ONE,
    },
}
# Fields whose JSON may hold more than argparse can parse from a command line.
# `"lora": true` takes the defaults; `"resume_from_checkpoint": true` the newest intact checkpoint of output_dir.
JSON_TYPES = {"lora": dict | bool | None, "resume_from_checkpoint": str | bool | None}


# ---- pass 1: the JSON values' types ---------------------------------------------------------------------------------
def check_config_values(values: dict, parser, config_path: str) -> None:
    """Each JSON value against its dataclass field's type (and the argparse `choices` of enumerated fields)."""
    annotations = {}
    for dataclass_type in parser.dataclass_types:
        annotations.update(typing.get_type_hints(dataclass_type))
    annotations.update(JSON_TYPES)
    actions = {action.dest: action for action in parser._actions}
    for key, value in values.items():
        annotation, action = annotations.get(key), actions.get(key)
        if annotation is None or action is None:
            continue
        where = f"{config_path}: {key}"
        if not fits(value, annotation):
            # argparse converts a string default with the field's type ("5e-5", "true"), but only for one value
            scalar = action.nargs in (None, "?") and action.type is not str
            converter = action.type if isinstance(value, str) and scalar and callable(action.type) else None
            try:
                if converter is None:
                    raise ValueError
                converter(value)  # argparse converts string defaults with the field's type: "5e-5", "true"
            except (ValueError, TypeError, KeyError, AttributeError):
                raise ConfigError(f"{where}: expected {describe(annotation)}, got {value!r}") from None
        if action.choices and isinstance(value, str) and value not in [str(choice) for choice in action.choices]:
            choices = ", ".join(str(choice) for choice in action.choices)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")


def fits(value, annotation) -> bool:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, argument) for argument in arguments)
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in arguments
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is list or origin is list:
        return isinstance(value, list) and (not arguments or all(fits(item, arguments[0]) for item in value))
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return value in [member.value for member in annotation]
    return True  # a config class of its own (ParallelismConfig, ...): Trainer checks it


def describe(annotation) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [describe(argument) for argument in arguments if argument is not type(None) and argument is not str]
        parts = parts or [describe(str)]
        return " or ".join(dict.fromkeys(parts)) + (" or null" if type(None) in arguments else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(argument) for argument in arguments)
    if annotation is list or origin is list:
        plurals = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plurals.get(arguments[0], 'values')}" if arguments else "a list"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(str(member.value) for member in annotation)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "an object"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


# ---- pass 2: the parsed settings ------------------------------------------------------------------------------------
def check_run_settings(model_args, data_args, training_args) -> list:
    """Ranges and structure of every setting, the `datasets` and `tasks` blocks; returns the parsed tasks."""
    check_dataset_specs(data_args.datasets)
    tasks = parse_tasks(data_args.tasks, data_args.datasets)
    check_run_arguments(data_args.max_seq_length, data_args.validation_split_percentage, ("train",))
    check_sampling_settings(data_args.task_sampling, data_args.sampling_temperature)
    for arguments, rules in zip((model_args, data_args, training_args), NUMERIC_RULES.values()):
        for key, rule in rules.items():
            if hasattr(arguments, key) and not (key == "num_train_epochs" and training_args.max_steps > 0):
                check_number(key, getattr(arguments, key), *rule)
    try:  # pooling, loss_weighting, loss_reduction: the config's own rule, applied before anything loads
        check_setting_choices({key: getattr(model_args, key) for key in SETTING_CHOICES
                               if getattr(model_args, key) is not None}, where="")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_attention(model_args.attn_implementation)
    check_reporting(training_args.report_to)
    check_loss_weights(model_args.loss_weights, [task.name for task in tasks])
    check_unfreeze_schedule(training_args.unfreeze_schedule)
    check_best_metric(training_args, tasks)
    check_in_batch_negatives(tasks, training_args.per_device_train_batch_size)
    return tasks


def check_in_batch_negatives(tasks, batch_size) -> None:
    """`multiple_negatives_ranking` scores each text's pair against the batch's other pairs: a batch of one has none."""
    for index, task in enumerate(tasks):
        if getattr(task, "loss_name", None) == "multiple_negatives_ranking" and batch_size < 2:
            raise ConfigError(
                f"tasks[{index}].loss: multiple_negatives_ranking takes the other rows of a batch as negatives, and "
                f"per_device_train_batch_size is {batch_size}; use 2 or more (16-64 is usual)"
            )


def check_number(key, value, kind, low, low_inclusive, high, high_inclusive):
    if value is None:
        return
    integer = kind == "integer"
    bounds = []
    if low is not None:
        bounds.append(f"{'>=' if low_inclusive else '>'} {low}")
    if high is not None:
        bounds.append(f"{'<=' if high_inclusive else '<'} {high}")
    requirement = f"{'an integer' if integer else 'a finite number'} {' and '.join(bounds)}".strip()
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = numeric and math.isfinite(value) and (not integer or float(value).is_integer())
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        raise ConfigError(f"{key}: {requirement} is required, got {value!r}")


def check_attention(name):
    """An attention implementation transformers knows (or a kernel from the Hub, `org/repo`)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.keys()]
    if name is not None and "/" not in name and name not in known:
        raise ConfigError(f"attn_implementation: {name!r} is not one of {', '.join(known)}")


def check_reporting(report_to):
    """Each `report_to` integration is one transformers has and, TensorBoard aside, is installed (Trainer fails in
    __init__ otherwise)."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for name in report_to or ():
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(f"report_to: {name!r} is not one of none, all, {', '.join(INTEGRATION_TO_CALLBACK)}")
        # The shipped configs log to TensorBoard, which a plain install lacks: that run goes on without it, with one
        # warning (`machine.drop_missing_reporters`); any other integration it cannot load is an error.
        if name != "tensorboard" and name not in get_available_reporting_integrations():
            raise ConfigError(f"report_to: {name!r} is not installed here (pip install {name}), or set report_to none")


def check_loss_weights(weights, task_names):
    if weights is None:
        return
    if not isinstance(weights, dict):
        raise ConfigError(f'loss_weights: an object task -> weight is required (e.g. {{"ner": 2.0}}), got {weights!r}')
    for name, weight in weights.items():
        if name not in task_names:
            raise ConfigError(f"loss_weights.{name}: no task of that name; tasks are {task_names}")
        check_number(f"loss_weights.{name}", weight, *NON_NEGATIVE)
    if all(weights.get(name, 1.0) == 0 for name in task_names):
        raise ConfigError("loss_weights: every task has weight 0, so nothing would be trained")


def check_unfreeze_schedule(schedule):
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        raise ConfigError(f"unfreeze_schedule: an object is required, got {schedule!r}")
    unknown = sorted(set(schedule) - set(UNFREEZE_KEYS))
    if unknown:
        raise ConfigError(f"unfreeze_schedule.{unknown[0]}: unknown key (known: {', '.join(UNFREEZE_KEYS)})")
    if "start_frozen_layers" not in schedule:
        raise ConfigError("unfreeze_schedule.start_frozen_layers: required (how many layers start frozen)")
    check_number("unfreeze_schedule.start_frozen_layers", schedule["start_frozen_layers"], *AT_LEAST_ONE)
    interval = unfreeze_interval_key(schedule)
    check_number(f"unfreeze_schedule.{interval}", schedule[interval],
                 *(AT_LEAST_ONE if interval == "unfreeze_every_steps" else POSITIVE))


def check_best_metric(training_args, tasks):
    """`metric_for_best_model` must name a metric evaluation produces, else Trainer fails at its first evaluation."""
    metric = training_args.metric_for_best_model
    if metric is None:
        return
    known = ["loss", "score"] + [f"{task.name}_{name}" for task in tasks for name in task.metric_names]
    if metric.removeprefix("eval_") not in known:
        raise ConfigError(f"metric_for_best_model: {metric!r} is not a metric of this run; known: {', '.join(known)}")


__all__ = ["check_config_values", "check_run_settings"]
