"""Configuration of hf_mtl multi-task models: one shared encoder and N named task heads.

Hub-safe on purpose (transformers and the package's `task_kinds` only): `save_pretrained` copies this file and the
modules it imports next to the weights, so the Hub copy runs where hf_mtl is not installed.
"""

from torch import nn
from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from .task_kinds import kind_of, problem_types, task_kind, task_types

# Output keys of `MultiTaskPipeline` and of the rows of `*_predictions.jsonl`, beside the task names.
RESERVED_OUTPUT_KEYS = ("text", "text_pair", "words", "words_pair", "tags")
POOLING_MODES = ("cls", "mean", "max", "pooler")
LOSS_WEIGHTINGS = ("static", "uncertainty")
LOSS_REDUCTIONS = ("per_task", "per_row")
# The config's enumerated settings -> their values: the one rule the config and the run's preflight both apply.
SETTING_CHOICES = {"pooling": POOLING_MODES, "loss_weighting": LOSS_WEIGHTINGS, "loss_reduction": LOSS_REDUCTIONS}


def check_setting_choices(settings: dict, where: str = "MultiTaskConfig.") -> None:
    """Raise a `ValueError` naming the field for the first enumerated setting in `settings` that is not one of its
    values (a setting left out is not checked)."""
    for key, choices in SETTING_CHOICES.items():
        if key in settings and settings[key] not in choices:
            raise ValueError(f"{where}{key}: {settings[key]!r} is not one of {', '.join(choices)}")


def check_task_name(name, where: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{where}.name: {name!r} must be a Python identifier (it names `<name>_labels`)")
    if name in RESERVED_OUTPUT_KEYS:
        keys = ", ".join(repr(key) for key in RESERVED_OUTPUT_KEYS)
        raise ValueError(
            f"{where}.name: {name!r} is reserved (the pipeline, `hf-mtl predict` and test_predictions.jsonl put {keys} "
            "beside the task names); rename the task"
        )
    if hasattr(nn.ModuleDict(), name):
        raise ValueError(f"{where}.name: {name!r} is reserved (an attribute of the torch nn.ModuleDict that holds "
                         "the heads); rename the task")


def check_task_kind(task: dict, where: str) -> None:
    """The task's `type` and `problem_type` name a registered kind (`task_kinds.TASK_KINDS`)."""
    types = task_types()
    if task.get("type") not in types:
        raise ValueError(f"{where}.type: {task.get('type')!r} is not one of {', '.join(types)}")
    problem_type, choices = task.get("problem_type"), problem_types(task["type"])
    if problem_type is not None and problem_type not in choices:
        if len(choices) == 1:
            raise ValueError(f"{where}.problem_type: a {task['type']} task is {choices[0]} only, got {problem_type!r}")
        raise ValueError(f"{where}.problem_type: {problem_type!r} is not one of {', '.join(choices)}")


def check_task_labels(task: dict, where: str, labels_known: bool) -> None:
    kind, name, labels = kind_of(task), task.get("name"), task.get("labels")
    if kind.min_labels is None:
        if labels is not None:
            raise ValueError(f"{where}.labels: a {kind.kind} task predicts one number and takes no labels")
        return
    if labels is None and not labels_known:
        return
    if not isinstance(labels, (list, tuple)) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"{where}.labels: task {name!r} needs a list of label strings, got {labels!r}")
    if len(labels) < kind.min_labels:
        raise ValueError(f"{where}.labels: task {name!r} needs at least {kind.min_labels} labels, got {list(labels)!r}")
    duplicates = sorted({label for label in labels if list(labels).count(label) > 1})
    if duplicates:
        raise ValueError(f"{where}.labels: duplicate labels {duplicates} in task {name!r}")


def validate_task(task: dict, where: str, labels_known: bool = True) -> None:
    """
    Raise a `ValueError` starting with `<where>.<key>` for the first way a task dict can be wrong: the one place the
    rules of a task's saved fields live (`MultiTaskConfig` and the run config's task blocks both use it); the rules
    of a kind's own keys are its class's (`task_kinds`). `labels_known=False` accepts a classification task whose
    labels are not resolved yet (taken from data later).
    """
    check_task_name(task.get("name"), where)
    check_task_kind(task, where)
    check_task_labels(task, where, labels_known)
    kind_of(task).check_task(task, where)


def encoder_model_class(encoder_config: PretrainedConfig):
    """The `AutoModel` class of an encoder config (None for one transformers does not map)."""
    return MODEL_MAPPING.get(type(encoder_config), None)


# Encoders whose position ids start after the padding index (transformers' `create_position_ids_from_input_ids`), so
# `pad_token_id + 1` of their position embeddings are never a token's position.
POSITIONS_AFTER_PADDING = {
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "ibert", "longformer", "luke", "mpnet",
    "roberta-prelayernorm", "xmod", "esm", "lilt", "markuplm",
}


def encoder_max_positions(encoder_config: PretrainedConfig):
    """Most tokens one input may have for the encoder's position embeddings (None where it has no such limit)."""
    positions = getattr(encoder_config, "max_position_embeddings", None)
    if positions is not None and encoder_config.model_type in POSITIONS_AFTER_PADDING:
        positions -= (encoder_config.pad_token_id or 0) + 1
    return positions


def encoder_has_pooler(encoder_config: PretrainedConfig) -> bool:
    """Whether the `AutoModel` class of this encoder builds a pooler layer (BERT, RoBERTa do; DistilBERT, DeBERTa-v2 do not)."""
    import inspect

    model_class = encoder_model_class(encoder_config)
    return model_class is not None and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters


class MultiTaskConfig(PretrainedConfig):
    r"""
    Configuration of a [`MultiTaskModel`]: the nested config of any encoder `AutoModel` supports plus the task heads.

    Args:
        encoder (`dict` or `PretrainedConfig`):
            Config of the shared encoder (BERT, DistilBERT, RoBERTa, DeBERTa-v2, ...); stored as a dict with its `model_type`.
        tasks (`list[dict]`):
            One entry per head: `{"name": str, "type": "sequence_classification" | "token_classification",
            "labels": [str, ...]}`. A sentence task may set `"problem_type"` as transformers names it:
            `"single_label_classification"` (the default), `"multi_label_classification"` (sigmoid per label; with
            `"threshold"`, `"pos_weight"`, `"always_top_label"`) or `"regression"` (one number, no `labels`; with the
            train targets' `"target_mean"` / `"target_std"`). Single-label and token tasks may carry
            `"class_weights"` (one per label); a token task `"crf": true` (and `"bio_constraints"`, `"tag_format"`). A
            `"type": "sentence_similarity"` task (a bi-encoder: no `labels`) has `"loss"` (`"cosent"`,
            `"cosine_mse"` with the train scores' `"target_min"` / `"target_max"`, `"multiple_negatives_ranking"`
            with `"hard_negatives"`), `"scale"` and `"matryoshka_dims"`. Each kind's keys and their checks are its
            class's in `task_kinds.py`.
        pooling (`str`, defaults to `"mean"`):
            How sentence heads and embeddings pool the token states: `"cls"`, `"mean"`, `"max"` or `"pooler"`.
        normalize_embeddings (`bool`, defaults to `False`):
            Default of `MultiTaskModel.embed(normalize=...)`: L2-normalise sentence embeddings.
        classifier_dropout (`float`, *optional*):
            Dropout before every head; defaults to the encoder's hidden dropout.
        loss_weights (`dict[str, float]`, *optional*):
            Task name -> weight of its loss in the sum (default 1.0 each).
        loss_weighting (`str`, defaults to `"static"`):
            `"static"` uses `loss_weights`; `"uncertainty"` learns one log-variance per task (Kendall et al. 2018).
        loss_reduction (`str`, defaults to `"per_task"`):
            How a batch weighs each task's loss, its mean over the task's labelled rows (tokens for a token task):
            `"per_task"` adds the means as they are, so a task counts as much in a batch where it labels one row
            as in one where it labels all; `"per_row"` scales each mean by the share of the batch's rows the task
            labels, so every labelled row counts the same whatever its batch's mix (rows of separate data sets
            mixed in a batch, or labels absent on some rows). The two are equal when every task labels every row.
    """

    model_type = "hf_mtl"
    sub_configs = {"encoder": AutoConfig}
    # Trainer drops these output fields at evaluation, so `EvalPrediction.predictions` is the dict of logits.
    keys_to_ignore_at_inference = ["task_losses"]

    def __init__(
        self,
        encoder=None,
        tasks=None,
        pooling="mean",
        normalize_embeddings=False,
        classifier_dropout=None,
        loss_weights=None,
        loss_weighting="static",
        loss_reduction="per_task",
        **kwargs,
    ):
        if isinstance(encoder, dict):
            encoder = dict(encoder)
            encoder = AutoConfig.for_model(encoder.pop("model_type", "bert"), **encoder)
        self.encoder = encoder if encoder is not None else AutoConfig.for_model("bert")
        self.tasks = [dict(task) for task in (tasks or [])]
        self.pooling = pooling
        self.normalize_embeddings = normalize_embeddings
        self.classifier_dropout = classifier_dropout
        self.loss_weights = {name: float(weight) for name, weight in (loss_weights or {}).items()}
        self.loss_weighting = loss_weighting
        self.loss_reduction = loss_reduction
        super().__init__(**kwargs)
        # A config built with no tasks is only legal as the blank that `from_pretrained` fills in afterwards.
        if tasks is not None:
            self.validate_tasks()

    def validate_tasks(self):
        """Raise a `ValueError` naming the field for every way the task list can be wrong."""
        if not self.tasks:
            raise ValueError("MultiTaskConfig.tasks: at least one task is needed")
        seen = set()
        for index, task in enumerate(self.tasks):
            where = f"MultiTaskConfig.tasks[{index}]"
            validate_task(task, where)
            unknown = set(task) - {"name", "type", "problem_type", "labels", *kind_of(task).saved_keys}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)} for a {task_kind(task)} task")
            if task["name"] in seen:
                raise ValueError(f"{where}.name: duplicate task name {task['name']!r}")
            seen.add(task["name"])
        check_setting_choices({key: getattr(self, key) for key in SETTING_CHOICES})
        if self.pooling == "pooler" and not encoder_has_pooler(self.encoder):
            raise ValueError(
                f"MultiTaskConfig.pooling: 'pooler' needs an encoder with a pooler layer, and "
                f"{self.encoder.model_type!r} has none; use 'cls', 'mean' or 'max'"
            )
        unknown_weights = set(self.loss_weights) - seen
        if unknown_weights:
            raise ValueError(f"MultiTaskConfig.loss_weights: no task named {sorted(unknown_weights)}")

    @property
    def hidden_size(self) -> int:
        """The encoder's hidden size: integrations read `config.hidden_size` (DeepSpeed's `auto` bucket sizes)."""
        return self.encoder.hidden_size

    @property
    def task_names(self) -> list:
        return [task["name"] for task in self.tasks]

    def get_task(self, name: str) -> dict:
        for task in self.tasks:
            if task["name"] == name:
                return task
        raise KeyError(f"no task named {name!r}; tasks: {self.task_names}")

    def id2label_for(self, name: str) -> dict:
        return dict(enumerate(self.get_task(name)["labels"]))

    def label2id_for(self, name: str) -> dict:
        return {label: index for index, label in enumerate(self.get_task(name)["labels"])}

    def to_dict(self):
        output = super().to_dict()
        output["encoder"] = self.encoder.to_dict()
        return output


__all__ = ["MultiTaskConfig", "validate_task"]
