"""From raw columns to model-ready rows: gold strings per task, then tokenisation with word -> subtoken alignment."""

from bisect import bisect_right

import datasets

from ..errors import ConfigError, DataError
from .tags import bad_tag_message, iob1_to_iob2, is_bio_tag

IGNORE_INDEX = -100
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
STRINGS = datasets.List(datasets.Value("string"))


def check_fast_tokenizer(tokenizer):
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"tokenizer: {type(tokenizer).__name__} is not a fast (Rust `tokenizers`) tokenizer; aligning word labels "
            "with subtokens needs its word_ids(). Load the tokenizer with AutoTokenizer and a tokenizer.json."
        )


def class_label_names(feature):
    """The names of a `ClassLabel` column or of a list-of-`ClassLabel` column, else None."""
    feature = getattr(feature, "feature", feature)
    return feature.names if isinstance(feature, datasets.ClassLabel) else None


def check_columns(dataset: datasets.Dataset, tasks, wheres: dict, dataset_name: str, split: str):
    """Every column a task reads must exist; a word-list column must hold lists."""
    for task in tasks:
        kind, input_column = task.input_column
        needed = [
            (input_column, "text_column" if kind == "text" else "tokens_column"),
            (task.target_column, "tags_column" if task.is_token_task else "label_column"),
        ]
        for column, key in needed:
            if column not in dataset.column_names:
                hint = (
                    " (a sentence task on raw text needs text_column)"
                    if key == "tokens_column" and not task.is_token_task
                    else ""
                )
                raise DataError(
                    f"data set {dataset_name!r}, split {split!r}: no column {column!r} ({wheres[task.name]}.{key})"
                    f"{hint}; its columns are: {', '.join(dataset.column_names)}"
                )
        if kind == "words" and not isinstance(
            dataset.features[input_column], (datasets.List, datasets.Sequence, datasets.LargeList)
        ):
            raise DataError(
                f"data set {dataset_name!r}, split {split!r}: column {input_column!r} "
                f"({wheres[task.name]}.tokens_column) holds {dataset.features[input_column]}, not word lists; "
                "for raw text set text_column"
            )
        problem = column_kind_problem(dataset.features, task)
        if problem:
            column, key, message = problem
            raise DataError(
                f"data set {dataset_name!r}, split {split!r}: column {column!r} ({wheres[task.name]}.{key}) {message}"
            )


LIST_FEATURES = (datasets.List, datasets.Sequence, datasets.LargeList)


def column_kind_problem(features, task):
    """(column, config key, what is wrong) when a column holds the wrong kind of value for the task, else None.

    Values are never coerced: a list used as one label would become a class named "['B-MISC', 'O']", a float a class
    "1.0". A column whose JSON values mix kinds has the `Json` feature and is checked value by value in normalize_split.
    """
    kind, input_column = task.input_column
    target = features[task.target_column]
    if kind == "text" and isinstance(features[input_column], LIST_FEATURES):
        return input_column, "text_column", "holds lists, not text; for pre-split words set tokens_column"
    if task.is_token_task:
        if not isinstance(target, LIST_FEATURES):
            return task.target_column, "tags_column", f"holds {target}, not one tag per word (a list of tags)"
        target = target.feature
    elif isinstance(target, LIST_FEATURES) and getattr(task, "problem_type", None) in (None, "single_label_classification"):
        return task.target_column, "label_column", (
            "holds lists of labels, but the task takes one label per example; for several labels per example set "
            '"problem_type": "multi_label_classification"'
        )
    if isinstance(target, (dict, LIST_FEATURES)):
        return task.target_column, key_of_target(task), f"holds {target}, not labels"
    if isinstance(target, datasets.Value) and target.dtype.startswith(("float", "double", "decimal")):
        return task.target_column, key_of_target(task), (
            f"holds {target.dtype} numbers, not class labels (strings or integer ids); a column of ids with empty "
            "cells is read as floats: fill them, or use -1 for no label"
        )
    return None


def key_of_target(task) -> str:
    return "tags_column" if task.is_token_task else "label_column"


def value_kind_problem(value, strings_only: bool) -> str | None:
    """What is wrong with one label or word (None when nothing): null inside a list, a number among strings, ..."""
    if isinstance(value, str):
        return None
    if value is None:
        return "is null"
    if strings_only or isinstance(value, (float, list, dict)):
        return f"is {value!r} ({type(value).__name__}), not a string"
    return None


def normalized_features(input_kind: str, tasks) -> datasets.Features:
    features = {"words": STRINGS} if input_kind == "words" else {"text": datasets.Value("string")}
    for task in tasks:
        features[f"{task.name}_gold"] = STRINGS if task.is_token_task else datasets.Value("string")
    return datasets.Features(features)


def normalize_split(dataset, tasks, wheres, *, dataset_name, split, tag_scheme="iob2", num_proc=None, locate=None):
    """Keep the input (`words` or `text`) and one `<task>_gold` column per task: label strings, IOB2 tags.

    Ints become names (the column's `ClassLabel` names, else the task's explicit `labels`, else the int as text);
    a negative int or null means "no label" (Hub test splits use -1). `locate(index)` may name an example's file:line.
    """
    check_columns(dataset, tasks, wheres, dataset_name, split)
    input_kind, input_column = tasks[0].input_column
    names = {task.name: class_label_names(dataset.features[task.target_column]) or task.labels for task in tasks}

    def place(index, task, key=None, column=None):
        field = f"{wheres[task.name]}.{key or key_of_target(task)} {column or repr(task.target_column)}"
        location = locate(index) if locate is not None else None
        prefix = f"{location} " if location else ""
        return f"{prefix}(data set {dataset_name!r}, split {split!r}, example index {index}, {field})"

    def to_name(value, index, task):
        if value is None or (isinstance(value, int) and value < 0):
            return ""
        if isinstance(value, int) and names[task.name] is not None:
            if value >= len(names[task.name]):
                raise DataError(f"{place(index, task)}: label id {value} but only {len(names[task.name])} label names")
            return names[task.name][value]
        return str(value).strip()

    # A JSON column whose values mix kinds (strings and numbers) has the `Json` feature: its values must all be strings.
    mixed = {task.name: isinstance(getattr(dataset.features[task.target_column], "feature",
                                           dataset.features[task.target_column]), datasets.Json) for task in tasks}
    input_key = "tokens_column" if input_kind == "words" else "text_column"

    def check_value(value, index, task, what):
        problem = value_kind_problem(value, strings_only=mixed[task.name])
        if problem and not (value is None and what == "label"):  # a null label means "no label"
            hint = ('; for several labels per example set "problem_type": "multi_label_classification"'
                    if isinstance(value, list) else "")
            raise DataError(f"{place(index, task)}: {what} {problem}{hint}")

    def check_words(words, index):
        for position, word in enumerate(words or []):
            problem = value_kind_problem(word, strings_only=True)
            if problem:
                raise DataError(f"{place(index, tasks[0], input_key, repr(input_column))}: word {position + 1} {problem}")

    def normalize(batch, indices):
        if input_kind == "words":
            for index, words in zip(indices, batch[input_column]):
                check_words(words, index)
            output = {"words": [list(words) if words else [] for words in batch[input_column]]}
            lengths = [len(words) for words in output["words"]]
        else:
            for index, text in zip(indices, batch[input_column]):
                if text is not None and not isinstance(text, str):
                    raise DataError(f"{place(index, tasks[0], input_key, repr(input_column))}: {text!r} is not a string")
            output = {"text": [text or "" for text in batch[input_column]]}
        for task in tasks:
            column = []
            for row, (index, value) in enumerate(zip(indices, batch[task.target_column])):
                if not task.is_token_task:
                    check_value(value, index, task, "label")
                    column.append(to_name(value, index, task))
                    continue
                if value is not None and not isinstance(value, list):
                    raise DataError(f"{place(index, task)}: tags {value!r} are not a list (one tag per word)")
                for position, tag in enumerate(value or []):
                    check_value(tag, index, task, f"tag {position + 1}")
                tags = [to_name(tag, index, task) for tag in value or []]
                if tags and len(tags) != lengths[row]:
                    raise DataError(f"{place(index, task)}: {lengths[row]} words but {len(tags)} tags")
                for tag in tags:
                    if not is_bio_tag(tag):
                        raise DataError(f"{place(index, task)}: {bad_tag_message(tag)}")
                column.append(iob1_to_iob2(tags) if tag_scheme == "iob1" else tags)
            output[f"{task.name}_gold"] = column
        return output

    return dataset.map(
        normalize,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=normalized_features(input_kind, tasks),
        num_proc=num_proc,
        desc=f"Checking {dataset_name} {split}",
    )


def encoded_features(tokenizer, tasks, with_eval_columns: bool) -> datasets.Features:
    ids = datasets.List(datasets.Value("int32"))
    features = {"input_ids": ids, "attention_mask": datasets.List(datasets.Value("int8"))}
    if "token_type_ids" in tokenizer("a"):
        features["token_type_ids"] = datasets.List(datasets.Value("int8"))
    for task in tasks:
        features[f"{task.name}_labels"] = (
            datasets.List(datasets.Value("int64")) if task.is_token_task else datasets.Value("int64")
        )
    features["length"] = datasets.Value("int32")
    if with_eval_columns:
        features["word_ids"] = ids
        features["words"] = STRINGS
        for task in tasks:
            features[f"{task.name}_gold"] = STRINGS if task.is_token_task else datasets.Value("string")
    # Dropped after the map, once counted: what truncation cost.
    features["truncated"] = datasets.Value("bool")
    features["words_lost"] = datasets.Value("int32")
    return datasets.Features(features)


def whitespace_word_ids(text: str, offsets, word_ids) -> list:
    """Index of the whitespace-separated word each subtoken starts in (the tokenizer's words split punctuation off)."""
    starts, position = [], 0
    for word in text.split():
        position = text.index(word, position)
        starts.append(position)
        position += len(word)
    return [
        None if word_id is None else max(bisect_right(starts, start) - 1, 0)
        for (start, _), word_id in zip(offsets, word_ids)
    ]


def words_without_subtokens(encoded, row: int, num_words: int) -> set[int]:
    """Indices of words that got no subtoken, not counting the words cut off by truncation."""
    seen = {word_id for word_id in encoded.word_ids(row) if word_id is not None}
    last = max(seen, default=-1) + 1 if encoded.encodings[row].overflowing else num_words
    return set(range(last)) - seen


def encode_split(
    dataset,
    tokenizer,
    run_tasks,
    label2id: dict,
    *,
    max_seq_length,
    label_all_tokens=False,
    with_eval_columns=False,
    num_proc=None,
    desc=None,
):
    """Tokenise a normalized split and give it `<task>_labels` for every task of the run (-100 where it has none).

    A word's label goes on its first subtoken and -100 on the rest, or with `label_all_tokens` on every subtoken
    with `B-x` turned into `I-x` on continuations (as transformers' `run_ner.py` does).
    """
    input_kind = "words" if "words" in dataset.column_names else "text"
    own_tasks = {column[: -len("_gold")] for column in dataset.column_names if column.endswith("_gold")}
    continuation_ids = {}
    for task in run_tasks:
        if task.is_token_task:
            ids = label2id[task.name]
            continuation_ids[task.name] = {
                i: ids.get("I-" + label[2:], i) if label.startswith("B-") else i for label, i in ids.items()
            }

    def token_labels(task, tags, word_ids):
        ids, labels, previous = label2id[task.name], [], None
        for word_id in word_ids:
            if word_id is None:
                labels.append(IGNORE_INDEX)
            elif word_id != previous:
                labels.append(ids.get(tags[word_id], IGNORE_INDEX))
            elif label_all_tokens and tags[word_id] in ids:
                labels.append(continuation_ids[task.name][ids[tags[word_id]]])
            else:
                labels.append(IGNORE_INDEX)
            previous = word_id
        return labels

    def encode(batch):
        if input_kind == "words":
            words = batch["words"]
            encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_seq_length)
            dropped = [words_without_subtokens(encoded, i, len(words[i])) for i in range(len(words))]
            if any(dropped) and tokenizer.unk_token is not None:
                # A word the tokenizer deletes entirely (BERT drops U+FFFD) would lose its tag: feed it as unknown.
                fed = [
                    [tokenizer.unk_token if j in gone else word for j, word in enumerate(row)]
                    for row, gone in zip(words, dropped)
                ]
                encoded = tokenizer(fed, is_split_into_words=True, truncation=True, max_length=max_seq_length)
        else:
            words = [text.split() for text in batch["text"]]
            encoded = tokenizer(batch["text"], truncation=True, max_length=max_seq_length, return_offsets_mapping=True)
            offsets = encoded.pop("offset_mapping")
        output = {key: encoded[key] for key in MODEL_INPUTS if key in encoded}
        for task in run_tasks:
            output[f"{task.name}_labels"] = []
        output.update(length=[], truncated=[], words_lost=[], word_ids=[])
        for i, input_ids in enumerate(encoded["input_ids"]):
            word_ids = encoded.word_ids(i)
            if input_kind == "text":
                word_ids = whitespace_word_ids(batch["text"][i], offsets[i], word_ids)
            for task in run_tasks:
                gold = batch[f"{task.name}_gold"][i] if task.name in own_tasks else None
                if task.is_token_task:
                    labels = token_labels(task, gold, word_ids) if gold else [IGNORE_INDEX] * len(input_ids)
                else:
                    labels = label2id[task.name].get(gold, IGNORE_INDEX) if gold else IGNORE_INDEX
                output[f"{task.name}_labels"].append(labels)
            truncated = bool(encoded.encodings[i].overflowing)
            kept_words = max((w + 1 for w in word_ids if w is not None), default=0)
            output["length"].append(len(input_ids))
            output["truncated"].append(truncated)
            output["words_lost"].append(len(words[i]) - kept_words if truncated else 0)
            output["word_ids"].append([-1 if w is None else w for w in word_ids])
        if with_eval_columns:
            output["words"] = words
            for task in run_tasks:
                empty = [] if task.is_token_task else ""
                output[f"{task.name}_gold"] = (
                    batch[f"{task.name}_gold"] if task.name in own_tasks else [empty] * len(words)
                )
        else:
            del output["word_ids"]
        return output

    return dataset.map(
        encode,
        batched=True,
        remove_columns=dataset.column_names,
        features=encoded_features(tokenizer, run_tasks, with_eval_columns),
        num_proc=num_proc,
        desc=desc,
    )
