"""`MultiTaskTrainer`: stock `Trainer` with per-task loss logging, the task-mixing sampler, learning-rate groups,
checkpoint checks, and training that stops cleanly on SIGINT / SIGTERM."""

import json
import logging
import os
import shutil
import signal
import threading

import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback

from .atomic_files import disk_full_error, is_disk_full, tree_size
from .checkpoints import RUN_RECORD, checkpoint_folders, checkpoint_write_error, is_write_failure
from .data.collator import TEACHER_LOGITS_SUFFIX
from .data.sampling import MixtureSampler
from .distributed import DistributedTrainerMixin
from .errors import ConfigError, HfMtlError, TrainingError
from .freezing import optimizer_parameter_groups
from .lora import LoraCheckpointMixin

logger = logging.getLogger(__name__)


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


class MultiTaskTrainer(LoraCheckpointMixin, DistributedTrainerMixin, Trainer):
    """
    Trainer with per-depth learning-rate groups and per-task training losses logged beside the total, and the run's
    distillation `teachers` (their logits of the train set, computed once, go to the model's forward). Given a
    `train_mixture` (several data sets' train splits concatenated as `train_dataset`), every epoch trains on that
    epoch's draw of the mixture (`MixtureSampler`) instead of a shuffle of the whole concatenation.
    """

    def __init__(self, *args, optimizer_groups_kwargs=None, train_mixture=None, teachers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimizer_groups_kwargs = optimizer_groups_kwargs or {}
        self.distillation, self.taught_tasks = None, ()
        if teachers is not None and self.train_dataset is not None:
            self.distill_with(teachers)
        self.train_mixture = train_mixture
        self._mixture_epochs = MixtureEpochCallback()
        if train_mixture is not None:
            self.add_callback(self._mixture_epochs)
        self._task_loss_sums = {}  # task -> (sum of its batch losses, number of batches with its labels)

    # Set by the run: the arguments each checkpoint records (RUN_RECORD), for `check_resume_matches` at a resume.
    run_record = None

    def distill_with(self, teachers) -> None:
        """Adds the `teachers`' logits of every train row to the train set (in the run's precision) and releases
        them: `compute_loss` hands the batch's logits to the model. They are never part of the model."""
        teachers.to(self.args.device)
        self.train_dataset = teachers.with_logits(
            self.train_dataset, self.data_collator, self.args.per_device_eval_batch_size, self.args.device,
            autocast=self.accelerator.autocast, progress=not self.args.disable_tqdm and self.is_local_process_zero(),
        )
        self.distillation, self.taught_tasks = teachers.settings, teachers.tasks
        teachers.release()

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
        if self.distillation is not None and model.training:  # the teachers' logits of the batch go to the model
            inputs = dict(inputs)
            inputs["teacher_logits"] = {name: inputs.pop(f"{name}{TEACHER_LOGITS_SUFFIX}") for name in self.taught_tasks}
            inputs.update(distillation_alpha=self.distillation.alpha,
                          distillation_temperature=self.distillation.temperature)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            check_finite_loss(loss, outputs.get("task_losses"), self.state.global_step + 1)
        if model.training and outputs.get("task_losses"):
            heads = self.accelerator.unwrap_model(model).heads
            for name, task_loss in outputs["task_losses"].items():
                # Averaged over the batches that held labels (or a teacher) for the task, so mixed runs are not
                # diluted by zeros.
                labelled = heads[name].labelled_rows(inputs[f"{name}_labels"]).any().float()
                counted = torch.ones_like(labelled) if name in self.taught_tasks else labelled
                total, batches = self._task_loss_sums.get(name, (0.0, 0.0))
                self._task_loss_sums[name] = (total + task_loss.detach() * counted, batches + counted)
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




__all__ = ["InterruptCallback", "MixtureEpochCallback", "MultiTaskTrainer", "TrainingInterrupted", "check_finite_loss"]
