"""`prepare_datasets`: the run config's `datasets` and `tasks` blocks -> model-ready train / validation / test sets."""

import logging
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from datasets import Dataset, concatenate_datasets

from ..errors import ConfigError, DataError
from .preprocessing import check_fast_tokenizer, class_label_names, encode_split, normalize_split
from .readers import json_lines_location, load_raw_dataset
from .sampling import TrainMixture, sampling_probabilities
from .specs import TaskSpec, check_dataset_specs, parse_task_specs
from .tags import build_label_list, count_unknown_labels

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class PreparedData:
    """
    What a run trains and evaluates on; `summary` is meant for the run log. `train` is the one data set's train
    split or, when several are mixed, their concatenation, from which `train_mixture` draws every epoch's rows
    (`MultiTaskTrainer(train_mixture=...)` samples them).
    """

    tasks: list[TaskSpec]
    label_lists: dict[str, list[str]]
    train: Dataset | None
    validation: Dataset | None
    test: Dataset | None
    sampling_probabilities: dict[str, float]
    summary: list[str] = field(default_factory=list)
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    train_mixture: TrainMixture | None = None


def prepare_datasets(
    datasets: dict,  # the run config's block of that name: it shadows the `datasets` library in this function
    tasks: list,
    tokenizer,
    *,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
    validation_split_percentage: float = 5,
    task_sampling: str = "proportional",
    sampling_temperature: float = 2.0,
    seed: int = 42,
    base_dir=".",
    num_proc: int | None = None,
    splits=SPLITS,
) -> PreparedData:
    """
    Read every data set the tasks name, check it, build the label lists and encode it.

    Tasks that name the same data set are joint (one row carries all their labels); rows of a data set carry -100
    for the tasks of other data sets. Several train splits are mixed with `task_sampling` (re-drawn every epoch, see
    `TrainMixture`); validation and test splits are concatenated. Every bad input raises one `ConfigError` / `DataError` before anything is encoded.
    """
    check_dataset_specs(datasets)
    specs = parse_task_specs(tasks, datasets)
    wheres = {spec.name: f"tasks[{index}]" for index, spec in enumerate(specs)}
    check_run_arguments(max_seq_length, validation_split_percentage, splits)
    sampling_probabilities({"check": 1}, task_sampling, sampling_temperature)  # a bad strategy fails before any read
    check_fast_tokenizer(tokenizer)
    groups = group_joint_tasks(specs, wheres)

    summary = []
    normalized = {
        name: read_and_normalize(
            name,
            datasets[name],
            group,
            wheres,
            splits,
            summary,
            base_dir=base_dir,
            validation_split_percentage=validation_split_percentage,
            seed=seed,
            num_proc=num_proc,
        )
        for name, group in groups.items()
    }

    for spec in specs:
        if spec.labels is None:
            spec.labels = build_label_list(normalized[spec.dataset]["train"][f"{spec.name}_gold"], spec.is_token_task)
            if len(spec.labels) < 2:
                raise DataError(
                    f"{wheres[spec.name]}: the train split of data set {spec.dataset!r} has "
                    f"{len(spec.labels)} distinct label(s) {spec.labels} in column {spec.target_column!r}; "
                    "a head needs at least 2"
                )
        if isinstance(spec.class_weights, list) and len(spec.class_weights) != len(spec.labels):
            raise ConfigError(
                f"{wheres[spec.name]}.class_weights: {len(spec.class_weights)} weights for {len(spec.labels)} labels"
            )
        summary.append(f"task {spec.name} ({spec.type}, data set {spec.dataset}): {len(spec.labels)} labels")
    label2id = {spec.name: {label: index for index, label in enumerate(spec.labels)} for spec in specs}

    encoded = {}
    for name, by_split in normalized.items():
        report_unknown_labels(name, by_split, groups[name], label2id, summary)
        encoded[name] = {}
        for split, rows in by_split.items():
            if split not in splits:
                continue
            encoded[name][split] = encode_split(
                rows,
                tokenizer,
                specs,
                label2id,
                max_seq_length=max_seq_length,
                label_all_tokens=label_all_tokens,
                with_eval_columns=split != "train",
                num_proc=num_proc,
                desc=f"Tokenizing {name} {split}",
            )
            encoded[name][split] = report_truncation(f"{name} {split}", encoded[name][split], max_seq_length, summary)

    train_sets = {name: by_split["train"] for name, by_split in encoded.items() if "train" in by_split}
    class_counts = {
        spec.name: count_classes(train_sets[spec.dataset], spec) for spec in specs if spec.dataset in train_sets
    }
    probabilities = (
        sampling_probabilities(
            {name: len(rows) for name, rows in train_sets.items()}, task_sampling, sampling_temperature
        )
        if train_sets
        else {}
    )
    train, train_mixture = None, None
    if len(train_sets) == 1:
        train = next(iter(train_sets.values()))
    elif train_sets:
        train = concatenate_datasets(list(train_sets.values()))
        train_mixture = TrainMixture(
            sizes=tuple(len(rows) for rows in train_sets.values()), probabilities=tuple(probabilities.values()), seed=seed
        )
        shares = ", ".join(f"{name} {share:.1%}" for name, share in probabilities.items())
        summary.append(
            f"train: {len(train_sets)} data sets mixed ({task_sampling}): {shares} of "
            f"{train_mixture.rows_per_epoch:,} rows per epoch, re-drawn every epoch"
        )

    def concatenated(split):
        parts = [by_split[split] for by_split in encoded.values() if split in by_split]
        return concatenate_datasets(parts) if parts else None

    return PreparedData(
        tasks=specs,
        label_lists={spec.name: list(spec.labels) for spec in specs},
        train=train,
        validation=concatenated("validation"),
        test=concatenated("test"),
        sampling_probabilities=probabilities,
        summary=summary,
        class_counts=class_counts,
        train_mixture=train_mixture,
    )


def check_run_arguments(max_seq_length, validation_split_percentage, splits):
    if not isinstance(max_seq_length, int) or max_seq_length < 8:
        raise ConfigError(f"max_seq_length: an integer >= 8 is required, got {max_seq_length!r}")
    if not isinstance(validation_split_percentage, (int, float)) or not 0 <= validation_split_percentage < 100:
        raise ConfigError(
            f"validation_split_percentage: a number in [0, 100) is required, got {validation_split_percentage!r}"
        )
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise ConfigError(f"splits: {list(splits)!r} must name some of {', '.join(SPLITS)}")


def group_joint_tasks(specs: list[TaskSpec], wheres: dict) -> dict[str, list[TaskSpec]]:
    """Data set name -> its tasks; the joint tasks of one data set must read the same input column."""
    groups = {}
    for spec in specs:
        group = groups.setdefault(spec.dataset, [])
        if group and spec.input_column != group[0].input_column:
            key = "text_column" if spec.input_column[0] == "text" else "tokens_column"
            raise ConfigError(
                f"{wheres[spec.name]}.{key}: task {spec.name!r} reads {spec.input_column[0]} from column "
                f"{spec.input_column[1]!r} but task {group[0].name!r} on the same data set {spec.dataset!r} reads "
                f"{group[0].input_column[0]} from {group[0].input_column[1]!r}; joint tasks share one input"
            )
        group.append(spec)
    return groups


def read_and_normalize(
    name, spec, group, wheres, splits, summary, *, base_dir, validation_split_percentage, seed, num_proc
):
    """Read one data set, keep the splits the run needs as `words`/`text` + `<task>_gold`, carve a validation split."""
    raw = load_raw_dataset(name, spec, base_dir=base_dir)
    for task in group:
        # A ClassLabel column brings its own label list (and ids), as Hub data sets do.
        for rows in raw.values():
            if task.labels is None and task.target_column in rows.features:
                task.labels = class_label_names(rows.features[task.target_column])
    carve = "validation" in splits and "validation" not in raw and validation_split_percentage > 0
    needs_train = "train" in splits or carve or any(task.labels is None for task in group)
    where = spec.get("path") or spec.get("data_files")
    if needs_train and ("train" not in raw or len(raw["train"]) == 0):
        found = ", ".join(f"{split} {len(rows):,}" for split, rows in raw.items()) or "nothing"
        raise DataError(f"data set {name!r} ({where}): the train split is empty or missing (found: {found})")

    by_split = {}
    for split in SPLITS:
        if split not in raw or (split not in splits and not (split == "train" and needs_train)):
            continue
        rows = normalize_split(
            raw[split],
            group,
            wheres,
            dataset_name=name,
            split=split,
            tag_scheme=spec.get("tag_scheme", "iob2"),
            num_proc=num_proc,
            locate=partial(json_lines_location, raw.source_files[split]) if hasattr(raw, "source_files") else None,
        )
        kept = rows.filter(has_words, batched=True, input_columns=rows.column_names[0], num_proc=num_proc)
        if len(kept) < len(rows):
            line = f"{name} {split}: skipped {len(rows) - len(kept):,} empty sentences"
            logger.warning(line)
            summary.append(line)
        by_split[split] = kept
    if needs_train and len(by_split["train"]) == 0:
        raise DataError(f"data set {name!r} ({where}): the train split has only empty sentences")

    sizes = {split: f"{len(rows):,}" for split, rows in by_split.items()}
    if carve and len(by_split["train"]) >= 2:
        size = max(1, round(len(by_split["train"]) * validation_split_percentage / 100))
        carved = by_split["train"].train_test_split(test_size=size, seed=seed)
        by_split["train"], by_split["validation"] = carved["train"], carved["test"]
        sizes["train"] = f"{len(carved['train']):,}"
        sizes["validation"] = f"{size:,} carved from train ({validation_split_percentage}%, seed {seed})"
    summary.append(
        f"data set {name} ({where}; tasks {', '.join(task.name for task in group)}): "
        + ", ".join(f"{split} {sizes[split]}" for split in SPLITS if split in sizes)
    )
    return by_split


def has_words(values) -> list[bool]:
    return [bool(value.split() if isinstance(value, str) else value) for value in values]


def report_unknown_labels(name, by_split, tasks, label2id, summary):
    """Gold labels outside a task's label list get -100 in the loss but stay in `<task>_gold` for the metrics."""
    for split, rows in by_split.items():
        for task in tasks:
            unknown = count_unknown_labels(rows[f"{task.name}_gold"], label2id[task.name], task.is_token_task)
            if unknown:
                counts = ", ".join(f"{label} ({count:,})" for label, count in unknown.most_common())
                if split == "train":  # only possible with an explicit (or reused) label list
                    raise ConfigError(
                        f"task {task.name!r}: its labels list misses labels seen in the train split of data set "
                        f"{name!r}: {counts}; add them to `labels` (or set reinit_head for a reused head)"
                    )
                line = (
                    f"{name} {split}: task {task.name}: labels not in its label list "
                    f"(ignored by the loss, scored as errors): {counts}"
                )
                logger.warning(line)
                summary.append(line)


def report_truncation(where, rows, max_seq_length, summary):
    truncated, words_lost = sum(rows["truncated"]), sum(rows["words_lost"])
    if truncated:
        line = (
            f"{where}: {truncated:,} of {len(rows):,} examples truncated at {max_seq_length} tokens, "
            f"{words_lost:,} words lost (evaluation counts them as predicted O)"
        )
        logger.warning(line)
        summary.append(line)
    return rows.remove_columns(["truncated", "words_lost"])


def count_classes(rows, spec: TaskSpec) -> list[int]:
    """Train label ids as the loss sees them (per labelled subtoken for token tasks)."""
    column = rows[f"{spec.name}_labels"]
    ids = (
        np.concatenate([np.asarray(labels, dtype=np.int64) for labels in column])
        if spec.is_token_task
        else np.asarray(column, dtype=np.int64)
    )
    return np.bincount(ids[ids >= 0], minlength=len(spec.labels)).tolist()
