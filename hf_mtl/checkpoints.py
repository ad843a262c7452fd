"""Checkpoints a run can trust: complete files before resuming, the same model and arguments as the run that wrote
them (`hf_mtl_run.json`), and a clear error when writing one fails."""

import glob
import json
import logging
import os
import shutil
import zipfile

import torch

from .atomic_files import human_size, tree_size
from .configuration_mtl import MultiTaskConfig
from .errors import ConfigError, ModelError, TrainingError
from .json_files import read_json_file
from .loading import check_weights_file
from .modeling_mtl import weights_files

logger = logging.getLogger(__name__)


# What Trainer reads back when it resumes, besides the weights and trainer_state.json: torch pickles (zip archives),
# loaded with weights_only. A damaged one fails the resume with a raw traceback, so it is checked before.
RESUME_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")


def check_checkpoint(folder: str) -> None:
    """Raise (any exception) unless every file Trainer reads to resume from `folder` is intact: trainer_state.json,
    the weights (model.safetensors or its shards, or FSDP shards whose save finished) and the optimizer, scheduler, scaler and RNG
    states."""
    from accelerate.utils.constants import FSDP_MODEL_NAME

    with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as state_file:
        json.load(state_file)
    shards = os.path.join(folder, f"{FSDP_MODEL_NAME}_0")  # an FSDP SHARDED_STATE_DICT checkpoint
    if os.path.isdir(shards) and not os.path.exists(os.path.join(folder, "model.safetensors")):
        if not os.path.isfile(os.path.join(shards, ".metadata")):  # written last, when every shard is in
            raise FileNotFoundError(f"{shards} has no .metadata: the sharded save did not finish")
    else:
        files = weights_files(folder)  # model.safetensors, or the shards of a large model's index
        if not files:
            raise FileNotFoundError(f"{folder} holds no model.safetensors")
        for path in files:
            check_weights_file(path)
    for pattern in RESUME_STATE_FILES:
        for path in sorted(glob.glob(os.path.join(glob.escape(folder), pattern))):
            check_torch_file(path)


def check_torch_file(path: str) -> None:
    """A `torch.save` file is a zip archive: its directory must be there (a truncated file has none) and every member
    must match its CRC; read as a stream, never unpickled. An old non-zip file is loaded as Trainer would load it."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not magic:
        raise ValueError(f"{path} is empty")
    if magic != b"PK\x03\x04":
        torch.load(path, map_location="cpu", weights_only=True)
        return
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"{path}: {bad} fails its checksum")


def checkpoint_folders(output_dir: str) -> list:
    """The `checkpoint-<step>` folders of output_dir, newest (highest step) first."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not os.path.isdir(output_dir):
        return []
    prefix = PREFIX_CHECKPOINT_DIR + "-"
    steps = sorted(
        (int(name[len(prefix):]) for name in os.listdir(output_dir) if name.startswith(prefix) and name[len(prefix):].isdigit()),
        reverse=True,
    )
    return [os.path.join(output_dir, f"{prefix}{step}") for step in steps]


def last_complete_checkpoint(output_dir: str):
    """
    The newest `checkpoint-*` folder whose every resume file is intact (`check_checkpoint`); damaged ones are skipped
    with a warning. None when output_dir holds no checkpoint; a `ModelError` when it holds some but none is usable.
    """
    folders = checkpoint_folders(output_dir)
    for folder in folders:
        try:
            check_checkpoint(folder)
            return folder
        except Exception as error:  # any damage at all means: do not resume from here
            logger.warning(f"skipping damaged checkpoint {folder}: {type(error).__name__}: {error}")
    if folders:
        raise ModelError(
            f"resume_from_checkpoint: every checkpoint in {output_dir} is damaged ({', '.join(map(os.path.basename, folders))}; "
            "see the warnings above); remove them to start from scratch, or resume from a copy of the run"
        )
    return None


def check_resume_folder(folder: str) -> None:
    """A checkpoint named by path must be intact: one `ModelError` naming the damaged file otherwise."""
    try:
        check_checkpoint(folder)
    except Exception as error:
        raise ModelError(f"resume_from_checkpoint {folder}: the checkpoint is damaged or incomplete "
                         f"({type(error).__name__}: {error})") from None


# ---- saving checkpoints: a failed save leaves no half-written folder ----------------------------------------------
# A full disk is `atomic_files.is_disk_full`; any other failed write shows as an OSError or as one of these texts
# (torch's zip writer, safetensors' Rust I/O errors).
WRITE_FAILURE_SIGNS = ("No space left", "Disk quota", "StorageFull", "QuotaExceeded", "unexpected pos",
                       "file write failed", "IoError")


def is_write_failure(error: BaseException) -> bool:
    return isinstance(error, OSError) or any(sign in str(error) for sign in WRITE_FAILURE_SIGNS)


def checkpoint_write_error(folder, error, written: int, previous) -> TrainingError:
    """The one line for a checkpoint that could not be written: the path, the space needed and free, what to do."""
    parent = os.path.dirname(folder)
    try:
        free = human_size(shutil.disk_usage(parent).free)
    except OSError:
        free = "unknown"
    needed = (f"about {human_size(tree_size(previous))} (the size of {os.path.basename(previous)})" if previous
              else f"more than the {human_size(written)} written before it failed")
    reason = error.strerror if isinstance(error, OSError) and error.strerror else f"{type(error).__name__}: {error}"
    resume = (f"then resume from {os.path.basename(previous)} with --resume_from_checkpoint true" if previous
              else "then run again")
    return TrainingError(
        f"saving checkpoint {folder} failed: {reason}; a checkpoint needs {needed}, {free} free in {parent}. The "
        f"half-written checkpoint was removed; free space (or lower save_total_limit, set save_only_model) and {resume}"
    )


# ---- resuming: the checkpoint must belong to the same training -------------------------------------------------
RUN_RECORD = "hf_mtl_run.json"  # in each checkpoint: the arguments of the run that wrote it


# The model a checkpoint holds, besides its tasks and its encoder's type and size (`normalize_embeddings` is only an
# inference default, free to change).
MODEL_KEYS = ("pooling", "classifier_dropout", "loss_weights", "loss_weighting", "loss_reduction")


ENCODER_SIZE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "embedding_size",
                     "num_hidden_groups", "dim", "hidden_dim", "n_layers", "n_heads")


# Training arguments a resume must keep: the optimizer, schedule, batches and data order that the checkpoint's
# optimizer.pt, scheduler.pt, RNG states and trainer_state.json continue. Everything else may change when resuming:
# output_dir, logging_*, eval_* and save_* (save_total_limit too), per_device_eval_batch_size, do_eval/do_predict,
# report_to, dataloader workers, bf16/fp16, push_to_hub and hub_*, max_eval_samples, the data files' paths.
FIXED_TRAINING_KEYS = (
    "learning_rate", "encoder_learning_rate", "head_learning_rate", "layerwise_lr_decay", "weight_decay",
    "optim", "optim_args", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio",
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "seed", "data_seed", "label_smoothing_factor", "train_sampling_strategy", "dataloader_drop_last",
    "freeze_encoder", "freeze_embeddings", "freeze_layers", "freeze_heads", "unfreeze_schedule", "lora",
    "distillation",
)


FIXED_DATA_KEYS = ("max_seq_length", "task_sampling", "sampling_temperature", "label_all_tokens",
                   "max_train_samples", "validation_split_percentage")


def run_record(training_args, data_args) -> dict:
    """What `RUN_RECORD` holds: the JSON forms of the run's training and data arguments."""
    data = {key: getattr(data_args, key) for key in FIXED_DATA_KEYS} if data_args is not None else {}
    return json.loads(json.dumps({"training": training_args.to_dict(), "data": data}, default=str))


def model_differences(saved, run) -> list:
    """`key: checkpoint X, run Y` for each difference between two `MultiTaskConfig`s that changes the model."""
    differences = []
    saved_tasks = {task["name"]: task for task in saved.tasks}
    run_tasks = {task["name"]: task for task in run.tasks}
    if list(saved_tasks) != list(run_tasks):
        differences.append(f"tasks: checkpoint {list(saved_tasks)}, run {list(run_tasks)}")
    for name in [name for name in run_tasks if name in saved_tasks]:
        for key in sorted(set(saved_tasks[name]) | set(run_tasks[name])):
            before, now = saved_tasks[name].get(key), run_tasks[name].get(key)
            if before != now:
                differences.append(f"tasks.{name}.{key}: checkpoint {before!r}, run {now!r}")
    for key in ENCODER_SIZE_KEYS:
        before, now = getattr(saved.encoder, key, None), getattr(run.encoder, key, None)
        if before != now:
            differences.append(f"encoder.{key}: checkpoint {before!r}, run {now!r}")
    for key in MODEL_KEYS:
        if getattr(saved, key) != getattr(run, key):
            differences.append(f"{key}: checkpoint {getattr(saved, key)!r}, run {getattr(run, key)!r}")
    return differences


def argument_differences(saved: dict, run: dict) -> list:
    """`key: checkpoint X, run Y` for each fixed training or data argument (`FIXED_*_KEYS`) the run changed."""
    differences = []
    for section, keys in (("training", FIXED_TRAINING_KEYS), ("data", FIXED_DATA_KEYS)):
        before, now = saved.get(section, {}), run.get(section, {})
        for key in keys:
            if key not in before or key not in now:  # a key an older hf_mtl or transformers did not record
                continue
            if key == "num_train_epochs" and now.get("max_steps", -1) > 0:  # max_steps sets the length
                continue
            if before[key] != now[key]:
                differences.append(f"{key}: checkpoint {before[key]!r}, run {now[key]!r}")
    return differences


def check_resume_matches(checkpoint: str, model_config, training_args, data_args) -> None:
    """
    Refuse, with one `ConfigError` listing each difference, a resume whose run differs from the checkpoint's in what
    the checkpoint's weights, optimizer, schedule and data order continue: the model (tasks, their kinds, labels and
    CRF, the encoder's type and size, pooling, dropout, loss settings) and `FIXED_TRAINING_KEYS` / `FIXED_DATA_KEYS`.
    A checkpoint written without `RUN_RECORD` is compared on its model only.
    """
    differences = []
    if os.path.isfile(os.path.join(checkpoint, "config.json")):  # FSDP's sharded checkpoints have none
        try:
            saved_model = MultiTaskConfig.from_pretrained(checkpoint)
        except (OSError, ValueError) as error:
            raise ModelError(f"resume_from_checkpoint {checkpoint}: its config.json cannot be read ({error})") from None
        # Compared as the JSON they are saved as (class weights, loss weights: floats written and read back).
        run_model = MultiTaskConfig.from_dict(json.loads(model_config.to_json_string(use_diff=False)))
        differences += model_differences(saved_model, run_model)
    record = os.path.join(checkpoint, RUN_RECORD)
    if os.path.isfile(record):
        recorded = read_json_file(record, what="run record", error=ModelError)
        differences += argument_differences(recorded, run_record(training_args, data_args))
    else:
        logger.warning(f"{checkpoint} has no {RUN_RECORD} (an older hf_mtl wrote it): only the model settings are "
                       "compared with this run's")
    if differences:
        raise ConfigError(
            f"resume_from_checkpoint {checkpoint}: this run differs from the run that wrote the checkpoint: "
            + "; ".join(differences)
            + ". A resume continues the same training: use that run's settings, or train the changed run from the "
              "checkpoint as a model (model_name_or_path) without resume_from_checkpoint"
        )

