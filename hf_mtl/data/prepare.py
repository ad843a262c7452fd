"""`prepare_datasets`: the run config's `datasets` and `tasks` blocks -> model-ready train / validation / test sets."""

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import partial

from datasets import Dataset, concatenate_datasets

from ..errors import ConfigError, DataError
from ..tasks import Task, parse_task
from .tags import tag_problem
from .preprocessing import check_fast_tokenizer, class_label_names, encode_split, normalize_split
from .readers import json_lines_location, load_raw_dataset
from .sampling import TaskSampling, TrainMixture, check_sampling_settings, sampling_probabilities
from .specs import check_dataset_specs, input_column_keys, parse_tasks

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class PreparedData:
    """
    What a run trains and evaluates on, with its tasks resolved; `summary` is meant for the run log. `train` is the
    one data set's train split or, when several are mixed, their concatenation, from which `train_mixture` draws
    every epoch's rows (`MultiTaskTrainer(train_mixture=...)` samples them). `eval_only`: data set name -> its task
    names, for each data set of a training run without a train split (its tasks need labels from their `labels` key or
    a reused head): they are evaluated, never trained on gold labels (a teacher can train them, on other rows).
    """

    tasks: list[Task]
    train: Dataset | None
    validation: Dataset | None
    test: Dataset | None
    sampling_probabilities: dict[str, float]
    summary: list[str] = field(default_factory=list)
    train_mixture: TrainMixture | None = None
    eval_only: dict[str, list[str]] = field(default_factory=dict)

    @property
    def label_lists(self) -> dict:
        return {task.name: None if task.labels is None else list(task.labels) for task in self.tasks}


def prepare_datasets(
    datasets: dict,  # the run config's block of that name: it shadows the `datasets` library in this function
    tasks: list,
    tokenizer,
    *,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
    validation_split_percentage: float = 5,
    task_sampling: TaskSampling | str = TaskSampling.PROPORTIONAL,
    sampling_temperature: float = 2.0,
    seed: int = 42,
    base_dir=".",
    num_proc: int | None = None,
    splits=SPLITS,
    trained_tasks: dict | None = None,
    with_word_starts: bool = False,
) -> PreparedData:
    """
    Read every data set the tasks name, check it, resolve each task (labels, class weights, target scale), encode it.
    `tasks`: the config's task dicts, or the `Task`s the run's preflight parsed from them. Tasks that name the same
    data set are joint (one row carries all their labels); rows of a data set carry "no label" for the tasks of other
    data sets. Several train splits are mixed with `task_sampling` (re-drawn every epoch, see `TrainMixture`);
    validation and test splits are concatenated. `trained_tasks`: name -> task dict of the trained model a run
    continues from; a task of that name reuses its head (and label list) unless it sets `reinit_head`. A task's labels
    come, in this order, from its `labels` key, the reused head, the column's `ClassLabel` names, or the train split
    (sorted; `O` first for tags). `with_word_starts`: every row gets its `word_start_mask` even when no task's head
    needs it (distilling a token task scores the words of rows that have no labels). Every bad input raises one
    `ConfigError` / `DataError` before anything is encoded.
    """
    check_dataset_specs(datasets)
    tasks = parse_tasks(tasks, datasets)
    wheres = {task.name: f"tasks[{index}]" for index, task in enumerate(tasks)}
    check_run_arguments(max_seq_length, validation_split_percentage, splits)
    task_sampling = check_sampling_settings(task_sampling, sampling_temperature)  # before any file is read
    check_fast_tokenizer(tokenizer)
    trained_heads = reused_heads(tasks, trained_tasks or {}, wheres)
    tasks = [task.resolve(None, trained_heads.get(task.name)) if task.name in trained_heads else task for task in tasks]
    groups = group_joint_tasks(tasks, wheres)

    summary, normalized = [], {}
    for name, group in groups.items():
        normalized[name], groups[name] = read_and_normalize(
            name, datasets[name], group, wheres, splits, summary, base_dir=base_dir,
            validation_split_percentage=validation_split_percentage, seed=seed, num_proc=num_proc,
        )
    eval_only = eval_only_data_sets(normalized, groups, splits)
    tasks, groups = resolve_labels(tasks, groups, normalized, trained_heads, wheres)
    encoded = {
        name: encode_data_set(
            name, by_split, groups[name], tasks, tokenizer, splits, summary, max_seq_length=max_seq_length,
            label_all_tokens=label_all_tokens, num_proc=num_proc, with_word_starts=with_word_starts,
        )
        for name, by_split in normalized.items()
    }
    train_sets = {name: by_split["train"] for name, by_split in encoded.items() if "train" in by_split}
    tasks = resolve_class_weights(tasks, train_sets, trained_heads, summary)
    probabilities, train, train_mixture = mix_train_sets(train_sets, task_sampling, sampling_temperature, seed, summary)
    return PreparedData(
        tasks=tasks, train=train, validation=concatenated(encoded, "validation"), test=concatenated(encoded, "test"),
        sampling_probabilities=probabilities, summary=summary, train_mixture=train_mixture, eval_only=eval_only,
    )


def reused_heads(tasks: list, trained_tasks: dict, wheres: dict) -> dict:
    """Task name -> the trained head's task dict, for each task that continues a head of the trained model."""
    return {
        task.name: reused_head(task, trained_tasks[task.name], wheres[task.name])
        for task in tasks
        if task.name in trained_tasks and not task.reinit_head
    }


def resolve_labels(tasks: list, groups: dict, normalized: dict, trained_heads: dict, wheres: dict) -> tuple:
    """(tasks, groups) with each task's label list resolved from its train split (or reused head), and checked."""
    resolved = {}
    for group in groups.values():
        for task in group:
            train = normalized[task.dataset].get("train")
            task = task.resolve(train[f"{task.name}_gold"] if train is not None else None, trained_heads.get(task.name))
            error = task.label_count_error(wheres[task.name], task.dataset)
            if error is not None:
                raise error
            resolved[task.name] = task
    tasks = [resolved[task.name] for task in tasks]
    groups = {name: [resolved[task.name] for task in group] for name, group in groups.items()}
    return tasks, groups


def encode_data_set(name, by_split, group, tasks, tokenizer, splits, summary, *, max_seq_length, label_all_tokens,
                    num_proc, with_word_starts=False) -> dict:
    """Split -> encoded rows of one data set's normalized splits (those the run uses), with `<task>_labels` for every
    task of the run; unknown labels and truncation are reported."""
    report_unknown_labels(name, by_split, group, summary)
    encoded = {}
    for split, rows in by_split.items():
        if split not in splits:
            continue
        rows = encode_split(
            rows,
            tokenizer,
            tasks,
            max_seq_length=max_seq_length,
            label_all_tokens=label_all_tokens,
            with_eval_columns=split != "train",
            with_pair_words=any(task.input_columns[2] is not None for task in tasks),
            with_word_starts=with_word_starts or any(task.needs_word_starts for task in tasks),
            towers=run_towers(tasks),
            num_proc=num_proc,
            desc=f"Tokenizing {name} {split}",
        )
        encoded[split] = report_truncation(f"{name} {split}", rows, max_seq_length, summary)
    return encoded


def resolve_class_weights(tasks: list, train_sets: dict, trained_heads: dict, summary: list) -> list:
    """Each task with its class weights (or target scale) from its encoded train split; one summary line per task."""
    tasks = [
        task.resolve_weights(
            train_sets[task.dataset][f"{task.name}_labels"] if task.dataset in train_sets else None,
            trained_heads.get(task.name),
        )
        for task in tasks
    ]
    for task in tasks:
        size = "a number" if task.labels is None else f"{len(task.labels)} labels"
        summary.append(f"task {task.name} ({task.kind}, data set {task.dataset}): {size}")
    return tasks


def mix_train_sets(train_sets: dict, task_sampling: TaskSampling, sampling_temperature: float, seed: int,
                   summary: list) -> tuple:
    """(each data set's share, the train set, its `TrainMixture` or None): one data set's train split as it is,
    several concatenated and drawn from every epoch by their shares."""
    if not train_sets:
        return {}, None, None
    sizes = {name: len(rows) for name, rows in train_sets.items()}
    probabilities = sampling_probabilities(sizes, task_sampling, sampling_temperature)
    if len(train_sets) == 1:
        return probabilities, next(iter(train_sets.values())), None
    train = concatenate_datasets(list(train_sets.values()))
    train_mixture = TrainMixture(sizes=tuple(sizes.values()), probabilities=tuple(probabilities.values()), seed=seed)
    shares = ", ".join(f"{name} {share:.1%}" for name, share in probabilities.items())
    summary.append(
        f"train: {len(train_sets)} data sets mixed ({task_sampling.value}): {shares} of "
        f"{train_mixture.rows_per_epoch:,} rows per epoch, re-drawn every epoch"
    )
    return probabilities, train, train_mixture


def concatenated(encoded: dict, split: str):
    """The split of every data set that has it, concatenated; None when none has."""
    parts = [by_split[split] for by_split in encoded.values() if split in by_split]
    return concatenate_datasets(parts) if parts else None


def reused_head(task: Task, trained: dict, where: str) -> dict:
    """The trained head a task continues: same kind, and the same label list (and order) when it names one."""
    trained_task = parse_task(trained, f"the trained model's task {task.name!r}", require_dataset=False)
    if trained_task.kind != task.kind:
        raise ConfigError(
            f"{where}.type: the trained head {task.name!r} is a {trained_task.kind} head, not {task.kind}; "
            'set "reinit_head": true to train a new head'
        )
    trained_format, tag_format = getattr(trained_task, "tag_format", None), getattr(task, "tag_format", None)
    if trained_format != tag_format:
        raise ConfigError(
            f"{where}.tag_format: {tag_format!r}, but the trained head {task.name!r} predicts {trained_format!r} tags; "
            'set "reinit_head": true to train a new head'
        )
    if task.labels is not None and trained_task.labels is not None and tuple(task.labels) != tuple(trained_task.labels):
        raise ConfigError(
            f"{where}.labels: differ from the trained head {task.name!r} ({list(trained_task.labels)}); "
            'set "reinit_head": true to train a new head'
        )
    return trained


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


def run_towers(tasks: list) -> tuple:
    """The second inputs every row of the run carries for its bi-encoder tasks: `pair`, and `negative` where a task
    reads hard negatives (empty in the rows of other data sets: the collator gives them a minimal input, so that every
    batch runs the same towers, as DDP and FSDP need)."""
    towers = ("pair",) if any(task.encodes_pair_separately for task in tasks) else ()
    return towers + (("negative",) if any(task.negative_column is not None for task in tasks) else ())


def group_joint_tasks(tasks: list, wheres: dict) -> dict:
    """Data set name -> its tasks; the joint tasks of one data set must read the same input columns."""
    groups = {}
    for task in tasks:
        group = groups.setdefault(task.dataset, [])
        if group and task.input_columns == group[0].input_columns and (
                task.encodes_pair_separately, task.negative_column) != (
                group[0].encodes_pair_separately, group[0].negative_column):
            separate, joined = (task, group[0]) if task.encodes_pair_separately else (group[0], task)
            raise ConfigError(
                f"{wheres[task.name]}.dataset: task {separate.name!r} ({separate.kind}) encodes each text of a pair "
                f"(and a hard negative) on its own, task {joined.name!r} on the same data set {task.dataset!r} reads "
                "them otherwise; declare the data set twice (one entry per way of reading it)"
            )
        if group and task.input_columns != group[0].input_columns:
            kind, column, pair = task.input_columns
            other_kind, other_column, other_pair = group[0].input_columns
            input_key, pair_key = input_column_keys(kind)
            key = pair_key if (kind, column) == (other_kind, other_column) else input_key
            raise ConfigError(
                f"{wheres[task.name]}.{key}: task {task.name!r} reads {describe_input(kind, column, pair)} but task "
                f"{group[0].name!r} on the same data set {task.dataset!r} reads "
                f"{describe_input(other_kind, other_column, other_pair)}; joint tasks share one input"
            )
        group.append(task)
    return groups


def describe_input(kind, column, pair) -> str:
    return f"{kind} from column {column!r}" + (f" paired with {pair!r}" if pair is not None else "")


def read_and_normalize(
    name, spec, group, wheres, splits, summary, *, base_dir, validation_split_percentage, seed, num_proc
):
    """Read one data set, keep the splits the run needs as `words`/`text` + `<task>_gold`, carve a validation split."""
    check_tag_scheme(name, spec, group, wheres)
    raw = load_raw_dataset(name, spec, base_dir=base_dir, tag_problem=raw_tag_problem(group))
    for index, task in enumerate(group):
        # A ClassLabel column brings its own label list (and ids), as Hub data sets do.
        for rows in raw.values():
            names = class_label_names(rows.features[task.target_column]) if task.target_column in rows.features else None
            if task.labels is None and names is not None and task.takes_labels:
                task = group[index] = dataclasses.replace(task, labels=tuple(names))
    where = spec.get("path") or spec.get("data_files")
    # No train split at all in a training run: the data set is evaluated only (its tasks keep their reused heads, or
    # learn from a teacher on the other data sets' rows); an empty train split is still an error below.
    eval_only = "train" in splits and "train" not in raw
    if eval_only:
        check_eval_only_labels(name, where, group, wheres)
    # Carved from a train split that is there (one that is empty is an error below); a data set without one is
    # evaluated on the splits it has.
    carve = "validation" in splits and "validation" not in raw and validation_split_percentage > 0 and "train" in raw
    needs_train = not eval_only and (
        "train" in splits or carve or any(task.labels is None and task.takes_labels for task in group)
    )
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
    if eval_only:
        evaluated = "are evaluated, not trained" if by_split else "are not trained (the run evaluates none of them)"
        summary.append(f"data set {name}: no train split: tasks {', '.join(task.name for task in group)} {evaluated}")
    return by_split, group


def eval_only_data_sets(normalized: dict, groups: dict, splits) -> dict:
    """Data set name -> its task names, for the data sets a training run evaluates only (no train split); an error
    when that is every data set of the run."""
    eval_only = {name: [task.name for task in groups[name]] for name, by_split in normalized.items()
                 if "train" in splits and "train" not in by_split}
    if eval_only and len(eval_only) == len(normalized):
        found = "; ".join(f"{name}: {', '.join(by_split) or 'no split the run uses'}"
                          for name, by_split in normalized.items())
        raise DataError(f"nothing to train: no data set of this run has a train split ({found}); add a data set with a "
                        "train split, or set do_train false to only evaluate")
    return eval_only


def check_eval_only_labels(name, where, group, wheres) -> None:
    """The tasks of a data set without a train split need their label lists from elsewhere: their `labels` key or
    the head they reuse from the trained model the run starts from (a `ClassLabel` column of another split does too)."""
    unknown = [task for task in group if task.takes_labels and task.labels is None]
    if unknown:
        names = ", ".join(f"{wheres[task.name]} ({task.name!r})" for task in unknown)
        raise DataError(
            f"data set {name!r} ({where}) has no train split, so its tasks are evaluated, not trained, but the labels "
            f"of {names} are unknown: they must come from the head of that name in the trained model the run starts "
            "from (model_name_or_path), or from the task's `labels` key"
        )


def check_tag_scheme(name, spec, group, wheres) -> None:
    """The data set's `tag_scheme: "iob1"` converts IOB1 files to BIO: a token task reading it must predict BIO."""
    if spec.get("tag_scheme", "iob2") != "iob1":
        return
    for task in group:
        if getattr(task, "tag_format", "BIO") != "BIO":
            raise ConfigError(
                f'datasets.{name}.tag_scheme: "iob1" converts IOB1 tags to BIO, but {wheres[task.name]} '
                f"({task.name!r}) has tag_format {task.tag_format!r}; drop the tag_scheme or use \"tag_format\": \"BIO\""
            )


def raw_tag_problem(group):
    """The tag check of a CoNLL or JointBERT reader for the token tasks of `group` (a tag that fits any of their
    `tag_format`s passes; each task checks its own later): `tag -> problem or None`."""
    formats = sorted({task.tag_format for task in group if task.labels_per_token}) or ["BIO"]

    def problem(tag):
        problems = [tag_problem(tag, tag_format) for tag_format in formats]
        return None if None in problems else problems[0]

    return problem


def has_words(values) -> list[bool]:
    return [bool(value.split() if isinstance(value, str) else value) for value in values]


def report_unknown_labels(name, by_split, tasks, summary):
    """Gold labels outside a task's label list get no label in the loss but stay in `<task>_gold` for the metrics."""
    for split, rows in by_split.items():
        for task in tasks:
            unknown = task.unknown_labels(rows[f"{task.name}_gold"])
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
