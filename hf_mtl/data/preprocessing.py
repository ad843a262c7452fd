"""From raw columns to model-ready rows: the input and each task's gold, then tokenisation with word -> sub-token
alignment. What a gold value looks like and how it becomes `<task>_labels` is the task kind's business
(`hf_mtl.tasks`); this module only walks the rows."""

from bisect import bisect_right

import datasets

from ..errors import ConfigError, DataError
from ..tasks import IGNORE_INDEX, LIST_FEATURES, STRINGS, inner_feature

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_fast_tokenizer(tokenizer):
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"tokenizer: {type(tokenizer).__name__} is not a fast (Rust `tokenizers`) tokenizer; aligning word labels "
            "with subtokens needs its word_ids(). Load the tokenizer with AutoTokenizer and a tokenizer.json."
        )


def class_label_names(feature):
    """The names of a `ClassLabel` column or of a list-of-`ClassLabel` column, else None."""
    feature = inner_feature(feature)
    return feature.names if isinstance(feature, datasets.ClassLabel) else None


def input_names(input_kind: str) -> tuple:
    """The normalized input columns: `("words", "words_pair")` or `("text", "text_pair")`."""
    return input_kind, f"{input_kind}_pair"


def check_columns(dataset: datasets.Dataset, tasks, wheres: dict, dataset_name: str, split: str):
    """Every column a task reads must exist; a word-list column must hold lists, a text column strings."""
    for task in tasks:
        kind, input_column, pair_column = task.input_columns
        input_key = "text_column" if kind == "text" else "tokens_column"
        needed = [(input_column, input_key), (task.target_column, task.target_key)]
        if pair_column is not None:
            needed.append((pair_column, "text_pair_column" if kind == "text" else "tokens_pair_column"))
        for column, key in needed:
            if column not in dataset.column_names:
                hint = " (a sentence task on raw text needs text_column)" if key == "tokens_column" else ""
                raise DataError(
                    f"data set {dataset_name!r}, split {split!r}: no column {column!r} ({wheres[task.name]}.{key})"
                    f"{hint}; its columns are: {', '.join(dataset.column_names)}"
                )
            feature = dataset.features[column]
            if key.endswith("text_column") or key == "text_pair_column":
                if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
                    raise DataError(
                        f"data set {dataset_name!r}, split {split!r}: column {column!r} ({wheres[task.name]}.{key}) "
                        f"holds {feature}, not text"
                        + ("; for word lists set tokens_column instead" if isinstance(feature, LIST_FEATURES) else "")
                    )
            elif key.startswith("tokens") and not isinstance(feature, LIST_FEATURES):
                raise DataError(
                    f"data set {dataset_name!r}, split {split!r}: column {column!r} "
                    f"({wheres[task.name]}.{key}) holds {feature}, not word lists; for raw text set "
                    + ("text_pair_column" if key == "tokens_pair_column" else "text_column")
                )
        # Values are never coerced: a list used as one label would become a class named "['B-MISC', 'O']".
        problem = task.feature_problem(dataset.features[task.target_column])
        if problem:
            raise DataError(
                f"data set {dataset_name!r}, split {split!r}: column {task.target_column!r} "
                f"({wheres[task.name]}.{task.target_key}) {problem}"
            )


def normalized_features(input_kind: str, has_pair: bool, tasks) -> datasets.Features:
    first, second = input_names(input_kind)
    value = STRINGS if input_kind == "words" else datasets.Value("string")
    features = {first: value, **({second: value} if has_pair else {})}
    for task in tasks:
        features[f"{task.name}_gold"] = task.gold_feature
    return datasets.Features(features)


def normalize_split(dataset, tasks, wheres, *, dataset_name, split, tag_scheme="iob2", num_proc=None, locate=None):
    """Keep the input (`words` or `text`, and `words_pair` / `text_pair` for pairs) and one `<task>_gold` column
    per task, checked and normalized by the task's kind (e.g. label strings, tags of the task's `tag_format`, a float).

    Ints become names (the column's `ClassLabel` names, else the task's explicit `labels`); a negative int or null
    means "no label" (Hub test splits use -1). `locate(index)` may name an example's file:line.
    """
    check_columns(dataset, tasks, wheres, dataset_name, split)
    input_kind, input_column, pair_column = tasks[0].input_columns
    first, second = input_names(input_kind)
    names = {task.name: class_label_names(dataset.features[task.target_column]) or task.labels for task in tasks}
    # A JSON column whose values mix kinds (strings and numbers) has the `Json` feature: its labels must all be strings.
    mixed = {task.name: isinstance(inner_feature(dataset.features[task.target_column]), datasets.Json) for task in tasks}
    pair_key = "text_pair_column" if input_kind == "text" else "tokens_pair_column"

    def place(index, field):
        location = locate(index) if locate is not None else None
        prefix = f"{location} " if location else ""
        return f"{prefix}(data set {dataset_name!r}, split {split!r}, example index {index}, {field})"

    def as_input(value, index, column, key):
        if input_kind == "text":
            return value or ""
        words = list(value or [])
        for position, word in enumerate(words, start=1):
            if not isinstance(word, str):
                what = "null" if word is None else f"{word!r} ({type(word).__name__})"
                raise DataError(f"{place(index, f'{key} {column!r}')}: word {position} is {what}, not a string")
        return words

    def normalize(batch, indices):
        output = {first: [as_input(v, i, input_column, "tokens_column") for v, i in zip(batch[input_column], indices)]}
        if pair_column is not None:
            output[second] = []
            for index, value in zip(indices, batch[pair_column]):
                if not value or (input_kind == "text" and not value.strip()):
                    where = f"{wheres[tasks[0].name]}.{pair_key} {pair_column!r}"
                    raise DataError(f"{place(index, where)}: the second input of the pair is empty")
                output[second].append(as_input(value, index, pair_column, pair_key))
        for task in tasks:
            field = f"{wheres[task.name]}.{task.target_key} {task.target_column!r}"
            column = []
            for row, (index, value) in enumerate(zip(indices, batch[task.target_column])):
                num_words = len(output[first][row]) if input_kind == "words" else None
                column.append(
                    task.normalize_gold(
                        value, names[task.name], lambda index=index: place(index, field), num_words=num_words,
                        tag_scheme=tag_scheme, strings_only=mixed[task.name],
                    )
                )
            output[f"{task.name}_gold"] = column
        return output

    return dataset.map(
        normalize,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=normalized_features(input_kind, pair_column is not None, tasks),
        num_proc=num_proc,
        desc=f"Checking {dataset_name} {split}",
    )


def encoded_features(tokenizer, tasks, with_eval_columns: bool, has_pair: bool, with_word_starts: bool) -> datasets.Features:
    ids = datasets.List(datasets.Value("int32"))
    features = {"input_ids": ids, "attention_mask": datasets.List(datasets.Value("int8"))}
    if "token_type_ids" in tokenizer("a"):
        features["token_type_ids"] = datasets.List(datasets.Value("int8"))
    if with_word_starts:
        features["word_start_mask"] = datasets.List(datasets.Value("int8"))
    for task in tasks:
        features[f"{task.name}_labels"] = task.label_feature
    features["length"] = datasets.Value("int32")
    if with_eval_columns:
        features["word_ids"] = ids
        features["words"] = STRINGS
        if has_pair:
            features["words_pair"] = STRINGS
        for task in tasks:
            features[f"{task.name}_gold"] = task.gold_feature
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


def word_start_mask(word_ids: list) -> list:
    """1 at the first sub-token of every word, 0 elsewhere (the positions a CRF head runs over)."""
    mask, previous = [], None
    for word_id in word_ids:
        mask.append(int(word_id is not None and word_id != previous))
        previous = word_id
    return mask


def first_sequence_word_ids(encoded, row: int) -> list:
    """`word_ids` of row `row` with the second sequence of a pair (and special tokens) as None."""
    return [
        word_id if sequence == 0 else None
        for word_id, sequence in zip(encoded.word_ids(row), encoded.sequence_ids(row))
    ]


def words_without_subtokens(encoded, row: int, num_words: int) -> set:
    """Indices of words that got no subtoken, not counting the words cut off by truncation."""
    seen = {word_id for word_id in first_sequence_word_ids(encoded, row) if word_id is not None}
    last = max(seen, default=-1) + 1 if encoded.encodings[row].overflowing else num_words
    return set(range(last)) - seen


def encode_split(
    dataset,
    tokenizer,
    run_tasks,
    *,
    max_seq_length,
    label_all_tokens=False,
    with_eval_columns=False,
    with_pair_words=False,
    with_word_starts=False,
    num_proc=None,
    desc=None,
):
    """Tokenise a normalized split (a pair as the tokenizer's pair input, truncated `longest_first`) and give it
    `<task>_labels` for every task of the run, the tasks of other data sets getting their "no label" value.
    `with_pair_words`: the evaluation columns include `words_pair` (empty where the split has no pairs), so that
    the splits of a run that mixes pair and single-text data sets concatenate. `with_word_starts`: a
    `word_start_mask` column (1 at each word's first sub-token) for the heads that run over words (CRF)."""
    input_kind = "words" if "words" in dataset.column_names else "text"
    first, second = input_names(input_kind)
    has_pair = second in dataset.column_names
    own_tasks = {column[: -len("_gold")] for column in dataset.column_names if column.endswith("_gold")}

    def tokenize(batch, firsts):
        pairs = batch[second] if has_pair else None
        if input_kind == "words":
            return tokenizer(firsts, pairs, is_split_into_words=True, truncation=True, max_length=max_seq_length)
        return tokenizer(firsts, pairs, truncation=True, max_length=max_seq_length, return_offsets_mapping=True)

    def encode(batch):
        if input_kind == "words":
            words = batch["words"]
            encoded = tokenize(batch, words)
            dropped = [words_without_subtokens(encoded, i, len(words[i])) for i in range(len(words))]
            if any(dropped) and tokenizer.unk_token is not None:
                # A word the tokenizer deletes entirely (BERT drops U+FFFD) would lose its tag: feed it as unknown.
                fed = [
                    [tokenizer.unk_token if j in gone else word for j, word in enumerate(row)]
                    for row, gone in zip(words, dropped)
                ]
                encoded = tokenize(batch, fed)
        else:
            words = [text.split() for text in batch["text"]]
            encoded = tokenize(batch, batch["text"])
            offsets = encoded.pop("offset_mapping")
        output = {key: encoded[key] for key in MODEL_INPUTS if key in encoded}
        if with_word_starts:
            output["word_start_mask"] = []
        for task in run_tasks:
            output[f"{task.name}_labels"] = []
        output.update(length=[], truncated=[], words_lost=[], word_ids=[])
        for i, input_ids in enumerate(encoded["input_ids"]):
            word_ids = first_sequence_word_ids(encoded, i)
            if input_kind == "text":
                word_ids = whitespace_word_ids(batch["text"][i], offsets[i], word_ids)
            if with_word_starts:
                output["word_start_mask"].append(word_start_mask(word_ids))
            for task in run_tasks:
                if task.name in own_tasks:
                    labels = task.encode_labels(batch[f"{task.name}_gold"][i], word_ids, label_all_tokens)
                else:
                    labels = task.no_labels(len(input_ids))
                output[f"{task.name}_labels"].append(labels)
            truncated = bool(encoded.encodings[i].overflowing)
            kept_words = max((w + 1 for w in word_ids if w is not None), default=0)
            output["length"].append(len(input_ids))
            output["truncated"].append(truncated)
            output["words_lost"].append(len(words[i]) - kept_words if truncated else 0)
            output["word_ids"].append([-1 if w is None else w for w in word_ids])
        if with_eval_columns:
            output["words"] = words
            if with_pair_words:
                pair_words = (batch[second] if input_kind == "words" else [t.split() for t in batch[second]]) if has_pair else None
                output["words_pair"] = pair_words or [[] for _ in words]
            for task in run_tasks:
                output[f"{task.name}_gold"] = (
                    batch[f"{task.name}_gold"] if task.name in own_tasks else [task.missing_gold()] * len(words)
                )
        else:
            del output["word_ids"]
        return output

    return dataset.map(
        encode,
        batched=True,
        remove_columns=dataset.column_names,
        features=encoded_features(tokenizer, run_tasks, with_eval_columns, with_pair_words, with_word_starts),
        num_proc=num_proc,
        desc=desc,
    )


__all__ = ["IGNORE_INDEX", "MODEL_INPUTS", "encode_split", "normalize_split"]
