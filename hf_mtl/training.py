"""Training pieces around stock Trainer: freezing, learning-rate groups, gradual unfreezing, per-task loss logging."""

import glob
import json
import logging
import os
import shutil
import signal
import threading
import zipfile

import torch
from torch import nn
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback

from .configuration_mtl import MultiTaskConfig
from .data.sampling import MixtureSampler
from .errors import ConfigError, HfMtlError, ModelError, TrainingError
from .loading import check_weights_file
from .modeling_mtl import weights_files
from .outputs import disk_full_error, human_size, is_disk_full, tree_size
from .pipeline_mtl import cpu_has_native_bf16
from .scale import ScaleTrainerMixin  # FSDP / DeepSpeed glue and LoRA saving (issue 18)

logger = logging.getLogger(__name__)


def fall_back_from_emulated_bf16(training_args) -> bool:
    """Train in float32 when `bf16` asks for autocast on a CPU that only emulates bfloat16; says so once."""
    if not training_args.bf16 or training_args.device.type != "cpu" or cpu_has_native_bf16():
        return False
    logger.warning(
        "bf16: this CPU has no native bfloat16 (no AVX512-BF16 or AMX), so bf16 autocast would be many times slower "
        "than float32 here; training in float32 instead (training_args.json records bf16=false)."
    )
    training_args.bf16 = False
    training_args.mixed_precision = "no"
    return True


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer layers (BERT/RoBERTa/DeBERTa-v2 `encoder.layer`, DistilBERT `transformer.layer`,
    ALBERT's layer groups `encoder.albert_layer_groups`, whose weights every layer of a group shares)."""
    config = encoder.config
    num_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    if getattr(config, "num_hidden_groups", None):  # ALBERT: its layers reuse the weights of a few layer groups
        num_layers = config.num_hidden_groups
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise ConfigError(f"cannot find the {num_layers} transformer layers of the {type(encoder).__name__} encoder")


def parameter_depths(model) -> dict:
    """Parameter name -> depth: 0 = embeddings, 1..L = transformer layers, L = anything else of the encoder, None = heads."""
    layers = encoder_layers(model.encoder)
    layer_of = {id(parameter): index + 1 for index, layer in enumerate(layers) for parameter in layer.parameters()}
    embedding_ids = {id(parameter) for parameter in model.encoder.embeddings.parameters()}
    depths = {}
    for name, parameter in model.named_parameters():
        if not name.startswith("encoder."):
            depths[name] = None
        elif id(parameter) in embedding_ids:
            depths[name] = 0
        else:
            depths[name] = layer_of.get(id(parameter), len(layers))
    return depths


def apply_freezing(model, *, freeze_encoder=False, freeze_embeddings=False, freeze_layers=0, freeze_heads=()):
    """Set `requires_grad=False` on the frozen parts, before Trainer wraps the model (so DDP never sees a toggle)."""
    unknown = sorted(set(freeze_heads) - set(model.heads))
    if unknown:
        raise ConfigError(f"freeze_heads: no task named {unknown}; tasks are {list(model.heads)}")
    num_layers = len(encoder_layers(model.encoder))
    if freeze_layers < 0 or freeze_layers > num_layers:
        raise ConfigError(f"freeze_layers: {freeze_layers} is outside 0..{num_layers} (the encoder has {num_layers} layers)")
    for name, depth in parameter_depths(model).items():
        parameter = model.get_parameter(name)
        if depth is None:
            head = name.split(".")[1] if name.startswith("heads.") else None
            frozen = head in freeze_heads
        else:
            frozen = freeze_encoder or (freeze_embeddings and depth == 0) or (freeze_layers > 0 and depth <= freeze_layers)
        if frozen:
            parameter.requires_grad_(False)


def parameter_summary(model) -> list:
    """Lines 'part: trainable / frozen' for embeddings, each encoder layer, the rest of the encoder and each head."""
    parts = {}
    depths = parameter_depths(model)
    num_layers = len(encoder_layers(model.encoder))
    for name, parameter in model.named_parameters():
        depth = depths[name]
        if depth is None:
            part = f"head {name.split('.')[1]}" if name.startswith("heads.") else name
        elif depth == 0:
            part = "embeddings"
        elif depth <= num_layers and ".layer." in name:
            part = f"layer {depth - 1}"
        else:
            part = "encoder (other)"
        trainable, frozen = parts.get(part, (0, 0))
        count = parameter.numel()
        parts[part] = (trainable + count, frozen) if parameter.requires_grad else (trainable, frozen + count)
    total_trainable = sum(trainable for trainable, _ in parts.values())
    total_frozen = sum(frozen for _, frozen in parts.values())
    lines = [f"  {part:<18} trainable {trainable:>11,}  frozen {frozen:>11,}" for part, (trainable, frozen) in parts.items()]
    lines.append(f"  {'total':<18} trainable {total_trainable:>11,}  frozen {total_frozen:>11,}")
    return lines


def optimizer_parameter_groups(
    model, *, learning_rate, weight_decay, decay_parameter_names, encoder_learning_rate=None, head_learning_rate=None,
    layerwise_lr_decay=None,
):
    """
    One group per (depth, decay) pair so each carries its own learning rate: layer l of L gets lr·γ^(L−l), the
    embeddings lr·γ^L, heads `head_learning_rate`. Biases, norm weights and task log-variances get no weight decay.
    Each group records its depth ("depth": None for heads) for gradual unfreezing. Frozen parameters are left out.
    """
    encoder_lr = encoder_learning_rate if encoder_learning_rate is not None else learning_rate
    head_lr = head_learning_rate if head_learning_rate is not None else learning_rate
    num_layers = len(encoder_layers(model.encoder))
    gamma = layerwise_lr_decay if layerwise_lr_decay is not None else 1.0
    groups = {}
    for name, depth in parameter_depths(model).items():
        parameter = model.get_parameter(name)
        if not parameter.requires_grad:
            continue
        decay = name in decay_parameter_names and name != "task_log_variances"
        if depth is None:
            lr = head_lr
        else:
            lr = encoder_lr * gamma ** (num_layers - min(depth, num_layers))
        group = groups.setdefault(
            (depth, decay), {"params": [], "lr": lr, "weight_decay": weight_decay if decay else 0.0, "depth": depth}
        )
        group["params"].append(parameter)
    return list(groups.values())


class GradualUnfreezingCallback(TrainerCallback):
    """
    ULMFiT-style unfreezing, DDP-safe: every parameter is in the optimizer from the start and nothing toggles
    `requires_grad`; the learning rate of a still-frozen depth is held at 0 before each optimizer step. The lowest
    `start_frozen_layers` layers and the embeddings start frozen; one layer is released every `unfreeze_every_steps`
    steps (or `unfreeze_every_epochs` epochs), top layers first, the embeddings with the last layer.
    """

    def __init__(self, start_frozen_layers: int, unfreeze_every_steps: int = None, unfreeze_every_epochs: float = None):
        if (unfreeze_every_steps is None) == (unfreeze_every_epochs is None):
            raise ConfigError("unfreeze_schedule: give exactly one of unfreeze_every_steps and unfreeze_every_epochs")
        self.start_frozen_layers = start_frozen_layers
        self.every_steps = unfreeze_every_steps
        self.every_epochs = unfreeze_every_epochs

    def frozen_below(self, state) -> int:
        """Depths 0..frozen_below-1 are frozen now (depth 0 = embeddings, depth l = layer l-1)."""
        if self.every_steps is not None:
            released = state.global_step // self.every_steps
        else:
            released = int((state.epoch or 0.0) // self.every_epochs)
        frozen_layers = max(self.start_frozen_layers - released, 0)
        return frozen_layers + 1 if frozen_layers > 0 else 0

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        frozen_below = self.frozen_below(state)
        for group in optimizer.param_groups:
            if group.get("depth") is not None and group["depth"] < frozen_below:
                group["lr"] = 0.0


class MixtureEpochCallback(TrainerCallback):
    """
    Sets the mixture sampler's epoch at the start of every epoch. Trainer calls `set_epoch` on the dataloader too,
    but after a multi-process run resumes mid-epoch accelerate wraps the sampler in BatchSamplerShard inside
    SkipBatchSampler, where that call no longer reaches it: the resumed epoch would replay epoch 0's draw.
    `state.epoch` is `epoch + fraction done` (restored from the checkpoint when resuming), so its integer part is
    the epoch Trainer is in.
    """

    def __init__(self):
        self.sampler = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.sampler is not None:
            self.sampler.set_epoch(int(state.epoch or 0))


class MultiTaskTrainer(ScaleTrainerMixin, Trainer):
    """
    Trainer with per-depth learning-rate groups and per-task training losses logged beside the total. Given a
    `train_mixture` (several data sets' train splits concatenated as `train_dataset`), every epoch trains on that
    epoch's draw of the mixture (`MixtureSampler`) instead of a shuffle of the whole concatenation.
    """

    def __init__(self, *args, optimizer_groups_kwargs=None, train_mixture=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimizer_groups_kwargs = optimizer_groups_kwargs or {}
        self.train_mixture = train_mixture
        self._mixture_epochs = MixtureEpochCallback()
        if train_mixture is not None:
            self.add_callback(self._mixture_epochs)
        self._task_loss_sums = {}  # task -> (sum of its batch losses, number of batches with its labels)

    # Set by the run: the arguments each checkpoint records (RUN_RECORD), for `check_resume_matches` at a resume.
    run_record = None

    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint, plus the run's record; a save that fails (a full disk) removes its half-written
        folder, and a write failure ends training with one `TrainingError` naming the path and the space."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        existed = os.path.exists(folder)
        previous = next((path for path in checkpoint_folders(run_dir) if path != folder), None)
        try:
            if self.args.should_save and self.run_record is not None:
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, RUN_RECORD), "w", encoding="utf-8") as handle:
                    json.dump(self.run_record, handle, indent=2)
            super()._save_checkpoint(model, trial)
        except Exception as error:
            written = tree_size(folder)
            if not existed:
                shutil.rmtree(folder, ignore_errors=True)
            if isinstance(error, HfMtlError):
                raise
            if is_disk_full(error, run_dir):
                kept = (f"the half-written checkpoint was removed, {os.path.basename(previous)} is kept: resume from it "
                        "with --resume_from_checkpoint true" if previous else "the half-written checkpoint was removed")
                raise disk_full_error(folder, error, where="output_dir", written=written,
                                      previous=tree_size(previous) if previous else None, kept=kept) from None
            if is_write_failure(error):
                raise checkpoint_write_error(folder, error, written, previous) from None
            raise

    def _get_train_sampler(self, train_dataset=None):
        if self.train_mixture is None:
            return super()._get_train_sampler(train_dataset)
        train_dataset = self.train_dataset if train_dataset is None else train_dataset
        if len(train_dataset) != sum(self.train_mixture.sizes):
            raise ValueError(
                f"train_mixture: it mixes {sum(self.train_mixture.sizes):,} concatenated rows but the train data set "
                f"has {len(train_dataset):,}"
            )
        strategy = self.args.train_sampling_strategy
        if strategy == "batch_rebalance":
            raise ConfigError("train_sampling_strategy: 'batch_rebalance' cannot sample a mixture of data sets; "
                              "use 'random' or 'group_by_length'")
        lengths = None
        if strategy == "group_by_length":
            column = self.args.length_column_name
            if column in train_dataset.column_names:
                lengths = train_dataset[column]
            else:
                input_name = self.processing_class.model_input_names[0] if self.processing_class is not None else "input_ids"
                lengths = [len(ids) for ids in train_dataset[input_name]]
        # 'random' and 'sequential' both walk the epoch's draw, which is already in a seeded random order.
        # The batch size transformers' LengthGroupedSampler groups by (per device, times accumulation).
        group_batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
        sampler = MixtureSampler(self.train_mixture, lengths=lengths, group_batch_size=group_batch_size)
        self._mixture_epochs.sampler = sampler
        return sampler

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = optimizer_parameter_groups(
                opt_model,
                learning_rate=self.args.learning_rate,
                weight_decay=self.args.weight_decay,
                decay_parameter_names=set(self.get_decay_parameter_names(opt_model)),
                **self.optimizer_groups_kwargs,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs.pop("lr", None)  # every group carries its own
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _get_dataloader(self, *args, is_training=False, **kwargs):
        # `dataloader_drop_last` is meant for training batches; evaluation and prediction must see every row, since
        # their decoding pairs prediction i with row i (stock Trainer drops the last partial batch there too).
        if is_training or not self.args.dataloader_drop_last:
            return super()._get_dataloader(*args, is_training=is_training, **kwargs)
        self.args.dataloader_drop_last = False
        try:
            return super()._get_dataloader(*args, is_training=is_training, **kwargs)
        finally:
            self.args.dataloader_drop_last = True

    def _get_eval_sampler(self, eval_dataset):
        # Metrics pair prediction i with row i of the data set (its word-level gold), so evaluation keeps the data
        # set's order even when training groups by length.
        if eval_dataset is None or self.args.world_size > 1:
            return None
        return SequentialSampler(eval_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.label_smoothing_factor:
            # Trainer's own LabelSmoother needs one `labels` tensor; the heads smooth their own cross-entropies.
            inputs = {**inputs, "label_smoothing": self.args.label_smoothing_factor}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            check_finite_loss(loss, outputs.get("task_losses"), self.state.global_step + 1)
        if model.training and outputs.get("task_losses"):
            heads = self.accelerator.unwrap_model(model).heads
            for name, task_loss in outputs["task_losses"].items():
                # Averaged over the batches that held labels for the task, so mixed runs are not diluted by zeros.
                labelled = heads[name].labelled_rows(inputs[f"{name}_labels"]).any().float()
                total, batches = self._task_loss_sums.get(name, (0.0, 0.0))
                self._task_loss_sums[name] = (total + task_loss.detach() * labelled, batches + labelled)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, start_time=None):
        if "loss" in logs and self._task_loss_sums:
            for name, (total, batches) in self._task_loss_sums.items():
                total = self.accelerator.reduce(torch.as_tensor(total, device=self.args.device), reduction="sum")
                batches = self.accelerator.reduce(torch.as_tensor(batches, device=self.args.device), reduction="sum")
                if batches > 0:
                    logs[f"loss_{name}"] = round(float(total / batches), 4)
            self._task_loss_sums = {}
        super().log(logs, start_time)


def check_finite_loss(loss, task_losses, step: int):
    """
    Stop training with a `TrainingError` when the loss of a training batch is NaN or infinite, before its backward
    pass: Trainer would log it as the mean of earlier losses (`logging_nan_inf_filter`) and go on to save a model of
    NaN weights. The `if` costs no extra device sync: Trainer's own NaN filter already reads every step's loss.
    """
    if bool(torch.isfinite(loss.detach()).all()):
        return
    per_task = ", ".join(f"{name} {float(value):.4g}" for name, value in (task_losses or {}).items())
    raise TrainingError(
        f"training step {step}: the loss is {float(loss.detach().float().mean())} (per task: {per_task or 'n/a'}); "
        "training stopped before saving a model. Lower learning_rate, check loss_weights and class_weights, or "
        "train in float32"
    )


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
# A full disk is `outputs.is_disk_full`; any other failed write shows as an OSError or as one of these texts
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
        with open(record, encoding="utf-8") as handle:
            differences += argument_differences(json.load(handle), run_record(training_args, data_args))
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


# ---- interrupted runs: SIGINT / SIGTERM end the step, save a checkpoint and stop --------------------------------
class TrainingInterrupted(TrainingError):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint; the command exits with status 130."""

    exit_status = 130


class InterruptCallback(TrainerCallback):
    """
    On SIGINT (Ctrl-C) or SIGTERM (a preemptible job's notice) the current step finishes, a checkpoint is saved and
    training stops; `interrupted_at` is then the step. A second signal while the step finishes acts at once (the
    default handlers are back). In a distributed run every rank stops at the same step: the ranks agree on the flag
    at each step's end (one tiny all-reduce).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.interrupted_at = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested = True
        self.restore()
        logger.warning(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                       "(send it again to stop at once)")

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _agreed(self, args) -> bool:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and args.world_size > 1:
            flag = torch.tensor([1.0 if self.requested else 0.0], device=args.device)
            torch.distributed.all_reduce(flag)
            return bool(flag.item() > 0)
        return self.requested

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted_at is None and self._agreed(args):
            self.interrupted_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control


__all__ = [
    "GradualUnfreezingCallback",
    "MixtureEpochCallback",
    "InterruptCallback",
    "TrainingInterrupted",
    "check_checkpoint",
    "check_finite_loss",
    "check_resume_folder",
    "check_resume_matches",
    "checkpoint_folders",
    "MultiTaskTrainer",
    "apply_freezing",
    "encoder_layers",
    "last_complete_checkpoint",
    "optimizer_parameter_groups",
    "parameter_summary",
]

