"""Configuration of hf_mtl multi-task models: one shared encoder and N named task heads.

Self-contained on purpose (imports only transformers): `save_pretrained` copies this file next to the
weights, so the Hub copy runs where hf_mtl is not installed.
"""

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING

TASK_TYPES = ("sequence_classification", "token_classification")
POOLING_MODES = ("cls", "mean", "max", "pooler")
LOSS_WEIGHTINGS = ("static", "uncertainty")


def encoder_has_pooler(encoder_config: PretrainedConfig) -> bool:
    """Whether the `AutoModel` class of this encoder builds a pooler layer (BERT, RoBERTa do; DistilBERT, DeBERTa-v2 do not)."""
    import inspect

    model_class = MODEL_MAPPING.get(type(encoder_config), None)
    return model_class is not None and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters


class MultiTaskConfig(PretrainedConfig):
    r"""
    Configuration of a [`MultiTaskModel`]: the nested config of any encoder `AutoModel` supports plus the task heads.

    Args:
        encoder (`dict` or `PretrainedConfig`):
            Config of the shared encoder (BERT, DistilBERT, RoBERTa, DeBERTa-v2, ...); stored as a dict with its `model_type`.
        tasks (`list[dict]`):
            One entry per head: `{"name": str, "type": "sequence_classification" | "token_classification",
            "labels": [str, ...]}`, optionally `"class_weights": [float, ...]` (one per label).
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
            unknown = set(task) - {"name", "type", "labels", "class_weights", "crf"}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
            name = task.get("name")
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"{where}.name: {name!r} must be a Python identifier (it names `<name>_labels`)")
            if name in seen:
                raise ValueError(f"{where}.name: duplicate task name {name!r}")
            seen.add(name)
            if task.get("type") not in TASK_TYPES:
                raise ValueError(f"{where}.type: {task.get('type')!r} is not one of {list(TASK_TYPES)}")
            labels = task.get("labels")
            if not isinstance(labels, (list, tuple)) or len(labels) < 2:
                raise ValueError(f"{where}.labels: task {name!r} needs a list of at least 2 labels, got {labels!r}")
            duplicates = sorted({label for label in labels if list(labels).count(label) > 1})
            if duplicates:
                raise ValueError(f"{where}.labels: duplicate labels {duplicates} in task {name!r}")
            weights = task.get("class_weights")
            if weights is not None and len(weights) != len(labels):
                raise ValueError(f"{where}.class_weights: {len(weights)} weights for {len(labels)} labels")
            if task.get("crf") and task["type"] != "token_classification":
                raise ValueError(f"{where}.crf: a CRF only applies to token_classification tasks")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"MultiTaskConfig.pooling: {self.pooling!r} is not one of {list(POOLING_MODES)}")
        if self.pooling == "pooler" and not encoder_has_pooler(self.encoder):
            raise ValueError(
                f"MultiTaskConfig.pooling: 'pooler' needs an encoder with a pooler layer, and "
                f"{self.encoder.model_type!r} has none; use 'cls', 'mean' or 'max'"
            )
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(
                f"MultiTaskConfig.loss_weighting: {self.loss_weighting!r} is not one of {list(LOSS_WEIGHTINGS)}"
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


__all__ = ["MultiTaskConfig"]
