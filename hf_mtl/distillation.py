"""Knowledge distillation per task: the run config's `distillation` key, its teachers, and their logits per batch.

    "distillation": {"teachers": {"intent": "self", "ner": "runs/ner_alone"}, "alpha": 0.5, "temperature": 2.0}

A teacher is an hf_mtl model folder (its head of the same task name), a stock `AutoModelForSequenceClassification` /
`AutoModelForTokenClassification` folder with the task's labels, or `"self"`: the model the run starts from
(`model_name_or_path`, an hf_mtl folder), which keeps a task whose data the run no longer has where it was.

Teachers run once, before training, over the whole train set (`Teachers.with_logits`), in evaluation mode, without
gradients and in the run's precision; their logits become columns of the train set (`<task>_teacher_logits`) that the
collator batches with the labels, and the teachers are released. In evaluation mode a teacher gives the same logits
every epoch, so this is what running it on every batch would give (up to the rounding of other batch shapes in bf16,
and with left padding the positions of encoders with absolute position embeddings), once instead of once an epoch
(bench/distillation_cost.py measures both). Every process of a distributed run computes them for the whole train set.
Teachers are never saved with the student. How each kind of head turns the
teacher's logits into a loss is the head's `distillation_loss` (`hf_mtl.task_kinds`).
"""

import contextlib
import inspect
import logging
import os
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from .configuration_mtl import MultiTaskConfig
from .data.collator import TEACHER_LOGITS_SUFFIX
from .data.preprocessing import MODEL_INPUTS, TOWER_INPUTS
from .errors import ConfigError
from .task_kinds import task_kind

logger = logging.getLogger("hf_mtl.distillation")

SELF = "self"


@dataclass
class DistillationSettings:
    """The `distillation` config key: task -> teacher (a model folder or "self"), the teacher's share `alpha` of a
    labelled row's loss, and the softmax temperature of the KL terms."""

    teachers: dict = field(default_factory=dict)
    alpha: float = 0.5
    temperature: float = 2.0

    @classmethod
    def from_config(cls, value):
        """None for no `distillation` key; else the settings, each field checked (`ConfigError` naming it)."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError('distillation: expected an object such as {"teachers": {"ner": "self"}}, '
                              f"got {value!r}")
        unknown = sorted(set(value) - {"teachers", "alpha", "temperature"})
        if unknown:
            raise ConfigError(f"distillation: unknown keys {unknown}; known: teachers, alpha, temperature")
        settings = cls(**value)
        teachers = settings.teachers
        if not isinstance(teachers, dict) or not teachers:
            raise ConfigError(f'distillation.teachers: expected task -> teacher folder or "self", got {teachers!r}')
        for task, teacher in teachers.items():
            if not isinstance(teacher, str) or not teacher:
                raise ConfigError(f'distillation.teachers.{task}: expected a model folder or "self", got {teacher!r}')
        alpha = settings.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ConfigError(f"distillation.alpha: the teacher's share of a labelled row's loss, a number in [0, 1]; "
                              f"got {alpha!r}")
        temperature = settings.temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(f"distillation.temperature: a positive number is required, got {temperature!r}")
        settings.alpha, settings.temperature = float(alpha), float(temperature)
        return settings


def check_teachers(settings: DistillationSettings, tasks, model_path: str, starting_config) -> None:
    """What can be checked before anything loads: every teacher's task is a task of the run, its folder exists and
    holds a model config, and `"self"` names a starting model that has the task (`starting_config`: the config of
    the hf_mtl model the run starts from, None for a plain encoder)."""
    task_names = [task.name for task in tasks]
    for task_name, teacher in settings.teachers.items():
        where = f"distillation.teachers.{task_name}"
        if task_name not in task_names:
            raise ConfigError(f"{where}: the run has no task {task_name!r} (its tasks: {', '.join(task_names)})")
        if teacher == SELF:
            if starting_config is None:
                raise ConfigError(
                    f'{where}: "self" is the model the run starts from, and model_name_or_path {model_path} is a plain '
                    "encoder without task heads; name a trained model folder as the teacher"
                )
            if task_name not in starting_config.task_names:
                raise ConfigError(
                    f'{where}: "self" is the model the run starts from ({model_path}), which has no {task_name!r} head '
                    f"(its tasks: {', '.join(starting_config.task_names)})"
                )
            continue
        if not os.path.isdir(teacher):
            raise ConfigError(f"{where}: the teacher folder {teacher!r} does not exist")
        if not os.path.isfile(os.path.join(teacher, "config.json")):
            raise ConfigError(f"{where}: {teacher} is not a model folder (it has no config.json)")


class Teacher:
    """One loaded teacher model and, per student task it teaches, how to read that task's logits off its outputs."""

    def __init__(self, path: str, model, multitask: bool):
        self.path, self.model, self.multitask = path, model.eval().requires_grad_(False), multitask
        self.reads = {}  # student task -> (the teacher's output name: its task or None, column order or None)
        accepted = inspect.signature(self.model.forward).parameters
        # What it reads of the student's batch: the text's inputs, and an hf_mtl teacher the bi-encoder towers too.
        towers = [name for names in TOWER_INPUTS.values() for name in names] if multitask else []
        self.inputs = [name for name in (*MODEL_INPUTS, *towers) if name in accepted]

    def logits(self, batch: dict) -> dict:
        outputs = self.model(**{name: batch[name] for name in self.inputs if batch.get(name) is not None})
        read = {}
        for task, (output_name, order) in self.reads.items():
            logits = outputs.logits[output_name] if self.multitask else outputs.logits
            read[task] = logits if order is None else logits[..., order]
        return read


class Teachers:
    """The run's teachers; called on a batch, task -> the teacher's logits, in the student's shapes and label order."""

    def __init__(self, settings: DistillationSettings, teachers: list):
        self.settings, self.teachers = settings, teachers

    @property
    def tasks(self) -> list:
        """The tasks the teachers teach."""
        return [task for teacher in self.teachers for task in teacher.reads]

    def to(self, device):
        for teacher in self.teachers:
            teacher.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        logits = {}
        for teacher in self.teachers:
            logits.update(teacher.logits(batch))
        return logits

    def with_logits(self, dataset, collator, batch_size: int, device, autocast=contextlib.nullcontext,
                    progress: bool = True):
        """
        `dataset` (a train set) with each taught task's teacher logits of every row as a column
        `<task>_teacher_logits`, one row's worth (a token task's without its padding). The rows go through the
        teachers in batches of `batch_size`, by length (less padding), as the collator pads them, under `autocast()`
        (the run's precision).
        """
        tasks = {task.name: task for task in collator.tasks if task.name in self.tasks}
        lengths = [len(ids) for ids in dataset["input_ids"]]
        order = sorted(range(len(dataset)), key=lengths.__getitem__)
        columns = {name: [None] * len(dataset) for name in tasks}
        left = collator.tokenizer.padding_side == "left"
        for start in tqdm(range(0, len(order), batch_size), desc="Teacher logits", disable=not progress):
            indices = order[start : start + batch_size]
            batch = collator(dataset.select(indices).to_list())
            batch = {key: value.to(device) for key, value in batch.items() if torch.is_tensor(value)}
            with autocast():
                logits = self(batch)
            for name, values in logits.items():
                values = values.float().cpu().numpy()
                for row, index in enumerate(indices):
                    if tasks[name].labels_per_token:  # the row's own tokens, without the batch's padding
                        length = lengths[index]
                        columns[name][index] = values[row, -length:] if left else values[row, :length]
                    else:
                        columns[name][index] = values[row]
        for name, rows in columns.items():
            column, feature = logits_column(rows)
            dataset = dataset.add_column(f"{name}{TEACHER_LOGITS_SUFFIX}", column, feature=feature)
        return dataset

    def release(self) -> None:
        """Drop the teacher models (their logits are in the train set)."""
        for teacher in self.teachers:
            teacher.model = None

    def describe(self) -> list:
        return [f"{task} <- {teacher.path}" for teacher in self.teachers for task in teacher.reads]


def logits_column(rows: list) -> tuple:
    """`(Arrow column, its feature)` of per-row logits (float32 arrays `[width]` or `[tokens, width]`), built from the
    arrays themselves (a Python float per logit would take several times the memory)."""
    number, width = datasets.Value("float32"), rows[0].shape[-1]
    flat = pa.array(np.concatenate([row.reshape(-1) for row in rows]))
    inner = pa.FixedSizeListArray.from_arrays(flat, width)
    if rows[0].ndim == 1:
        return inner, datasets.List(number, length=width)
    offsets = pa.array(np.concatenate([[0], np.cumsum([len(row) for row in rows])]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, inner), datasets.List(datasets.List(number, length=width))


def load_teachers(settings: DistillationSettings, tasks, model_path: str, tokenizer, encoder_config) -> Teachers:
    """Each teacher folder loaded once (`"self"` is `model_path`), checked against the tasks it teaches: the same kind,
    the same labels (in any order: its logits are reordered to the student's), the student's tokenizer, and for an
    embedding task the student's embedding size (`encoder_config`: the student's encoder)."""
    by_name = {task.name: task for task in tasks}
    loaded = {}
    for task_name, teacher_name in settings.teachers.items():
        path = model_path if teacher_name == SELF else teacher_name
        where = f"distillation.teachers.{task_name}"
        key = os.path.realpath(path)
        if key not in loaded:
            loaded[key] = load_teacher(path, where, tokenizer)
        teacher = loaded[key]
        teacher.reads[task_name] = teacher_reading(teacher, by_name[task_name], where, encoder_config.hidden_size)
    teachers = Teachers(settings, list(loaded.values()))
    logger.info("distillation (alpha %s, temperature %s): %s", settings.alpha, settings.temperature,
                "; ".join(teachers.describe()))
    return teachers


def load_teacher(path: str, where: str, tokenizer) -> Teacher:
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{where}: {path} is not a model folder ({error})") from None
    check_same_tokenizer(path, config, where, tokenizer)
    architectures = config.architectures or []
    if isinstance(config, MultiTaskConfig):
        from .loading import load_multitask_model as load
    elif any(name.endswith("ForTokenClassification") for name in architectures):
        load = AutoModelForTokenClassification.from_pretrained
    elif any(name.endswith("ForSequenceClassification") for name in architectures):
        load = AutoModelForSequenceClassification.from_pretrained
    else:
        raise ConfigError(f"{where}: {path} is neither an hf_mtl model nor a sequence or token classifier "
                          f"(architectures {architectures})")
    try:
        model = load(path)
    except (OSError, ValueError, RuntimeError) as error:  # missing or damaged weights, shapes that do not fit
        raise ConfigError(f"{where}: cannot load the teacher {path}: {error}") from None
    return Teacher(path, model, multitask=isinstance(config, MultiTaskConfig))


def check_same_tokenizer(path: str, config, where: str, tokenizer) -> None:
    """A teacher reads the student's token ids: its vocabulary must be the student's (without a tokenizer saved
    beside it, its embedding table must be large enough)."""
    if not any(os.path.isfile(os.path.join(path, name)) for name in ("tokenizer_config.json", "tokenizer.json")):
        encoder = config.encoder if isinstance(config, MultiTaskConfig) else config
        if getattr(encoder, "vocab_size", len(tokenizer)) < len(tokenizer):
            raise ConfigError(f"{where}: {path}'s vocabulary ({encoder.vocab_size} tokens) is not the student's "
                              f"({len(tokenizer)}); a teacher reads the student's token ids")
        return
    try:
        teacher_vocab = AutoTokenizer.from_pretrained(path).get_vocab()
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{where}: cannot load the tokenizer of the teacher {path}: {error}") from None
    if teacher_vocab != tokenizer.get_vocab():
        raise ConfigError(f"{where}: {path} has another tokenizer than the student ({len(teacher_vocab)} vs "
                          f"{len(tokenizer)} tokens, or other ids); a teacher reads the student's token ids")


def teacher_reading(teacher: Teacher, task, where: str, hidden_size: int) -> tuple:
    """`(output name, column order)` of the teacher's logits for the student's `task`, after checking that the
    teacher predicts the same thing (an embedding of the student's `hidden_size` for a similarity task)."""
    if teacher.multitask:
        heads = {head["name"]: head for head in teacher.model.config.tasks}
        if task.name not in heads:
            raise ConfigError(f"{where}: the teacher {teacher.path} has no {task.name!r} head (its tasks: "
                              f"{', '.join(heads)})")
        head = heads[task.name]
        kind = task_kind(head)
        labels = head.get("labels")
        output_name = task.name
    else:
        kind = stock_kind(teacher.model.config)
        labels = [teacher.model.config.id2label[index] for index in range(teacher.model.config.num_labels)]
        labels = None if kind == "regression" else labels
        output_name = None
    if kind != task.kind:
        raise ConfigError(f"{where}: the teacher {teacher.path} predicts a {kind} task, and {task.name!r} is "
                          f"{task.kind}")
    if teacher.multitask and task.encodes_pair_separately and teacher.model.config.encoder.hidden_size != hidden_size:
        raise ConfigError(f"{where}: the teacher {teacher.path} embeds in {teacher.model.config.encoder.hidden_size} "
                          f"dimensions, the student in {hidden_size}")
    if task.labels is None or labels is None:
        return output_name, None
    student = list(task.labels)
    if sorted(map(str, labels)) != sorted(student):
        raise ConfigError(f"{where}: the teacher {teacher.path} has other labels than the task {task.name!r}: "
                          f"teacher {list(labels)}, task {student}")
    order = [list(map(str, labels)).index(label) for label in student]
    return output_name, None if order == list(range(len(order))) else order


def stock_kind(config) -> str:
    """The hf_mtl kind a stock classifier's config predicts, by transformers' own rule for its loss."""
    if any(name.endswith("ForTokenClassification") for name in config.architectures or []):
        return "token_classification"
    if config.problem_type == "multi_label_classification":
        return "multi_label_classification"
    if config.problem_type == "regression" or config.num_labels == 1:
        return "regression"
    return "single_label_classification"
