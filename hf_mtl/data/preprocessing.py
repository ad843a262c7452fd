"""From raw columns to model-ready rows: the input and each task's gold, then tokenisation with word -> sub-token
alignment. What a gold value looks like and how it becomes `<task>_labels` is the task kind's business
(`hf_mtl.tasks`); this module only walks the rows."""

from bisect import bisect_right

import datasets

from ..errors import ConfigError, DataError
from ..tasks import IGNORE_INDEX, LIST_FEATURES, STRINGS, inner_feature
from ..tokenizer_checks import check_tokenizer
from .specs import input_column_keys

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOWER_INPUTS = {tower: tuple(f"{tower}_{key}" for key in MODEL_INPUTS) for tower in ("pair", "negative")}
TEXT_KEYS, WORDS_KEYS = input_column_keys("text"), input_column_keys("words")


def check_fast_tokenizer(tokenizer):
    """`tokenizer_checks.check_tokenizer` (a fast tokenizer: word_ids() and character offsets) as a `ConfigError`."""
    try:
        check_tokenizer(tokenizer)
    except ValueError as error:
        raise ConfigError(f"tokenizer: {error}") from None


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
        input_key, pair_key = input_column_keys(kind)
        needed = [(input_column, input_key), (task.target_column, task.target_key)]
        if pair_column is not None:
            needed.append((pair_column, pair_key))
        if task.negative_column is not None:
            needed.append((task.negative_column, f"{input_key.rsplit('_', 1)[0]}_negative_column"))
        for column, key in needed:
            where = f"data set {dataset_name!r}, split {split!r}: column {column!r} ({wheres[task.name]}.{key})"
            if column not in dataset.column_names:
                hint = f" (a sentence task on raw text needs {TEXT_KEYS[0]})" if key == WORDS_KEYS[0] else ""
                raise DataError(
                    f"data set {dataset_name!r}, split {split!r}: no column {column!r} ({wheres[task.name]}.{key})"
                    f"{hint}; its columns are: {', '.join(dataset.column_names)}"
                )
            check_input_feature(dataset.features[column], key, where)
        # Values are never coerced: a list used as one label would become a class named "['B-MISC', 'O']".
        problem = task.feature_problem(dataset.features[task.target_column])
        if problem:
            raise DataError(
                f"data set {dataset_name!r}, split {split!r}: column {task.target_column!r} "
                f"({wheres[task.name]}.{task.target_key}) {problem}"
            )


def check_input_feature(feature, key: str, where: str):
    """A column read by a text key (`text_column`, `text_pair_column`) holds strings, one read by a words key word
    lists; the error names the key of the other kind that would read it."""
    if key in TEXT_KEYS:
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            words_key = WORDS_KEYS[TEXT_KEYS.index(key)]
            hint = f"; for word lists set {words_key} instead" if isinstance(feature, LIST_FEATURES) else ""
            raise DataError(f"{where} holds {feature}, not text{hint}")
    elif key in WORDS_KEYS and not isinstance(feature, LIST_FEATURES):
        raise DataError(f"{where} holds {feature}, not word lists; for raw text set {TEXT_KEYS[WORDS_KEYS.index(key)]}")


def normalized_features(input_kind: str, has_pair: bool, tasks) -> datasets.Features:
    first, second = input_names(input_kind)
    value = STRINGS if input_kind == "words" else datasets.Value("string")
    features = {first: value, **({second: value} if has_pair else {})}
    if tasks[0].negative_column is not None:
        features[f"{first}_negative"] = value
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
    normalizer = SplitNormalizer(dataset.features, tasks, wheres, dataset_name=dataset_name, split=split,
                                 tag_scheme=tag_scheme, locate=locate)
    input_kind, _, pair_column = tasks[0].input_columns
    return dataset.map(
        normalizer,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=normalized_features(input_kind, pair_column is not None, tasks),
        num_proc=num_proc,
        desc=f"Checking {dataset_name} {split}",
    )


class SplitNormalizer:
    """The batched `datasets.map` function of `normalize_split`: raw rows (with their indices) -> the input columns
    and each task's `<task>_gold`; an error names the example by file:line (when `locate` can), index and key."""

    def __init__(self, features, tasks, wheres, *, dataset_name, split, tag_scheme, locate):
        self.tasks, self.wheres, self.tag_scheme, self.locate = tasks, wheres, tag_scheme, locate
        self.dataset_name, self.split = dataset_name, split
        self.input_kind, self.input_column, self.pair_column = tasks[0].input_columns
        self.first, self.second = input_names(self.input_kind)
        self.input_key, self.pair_key = input_column_keys(self.input_kind)
        self.label_names = {
            task.name: class_label_names(features[task.target_column]) or task.labels for task in tasks
        }
        # A JSON column whose values mix kinds (strings and numbers) has the `Json` feature: its labels must all be
        # strings.
        self.strings_only = {
            task.name: isinstance(inner_feature(features[task.target_column]), datasets.Json) for task in tasks
        }

    def place(self, index, field) -> str:
        location = self.locate(index) if self.locate is not None else None
        prefix = f"{location} " if location else ""
        return f"{prefix}(data set {self.dataset_name!r}, split {self.split!r}, example index {index}, {field})"

    def as_input(self, value, index, column, key):
        if self.input_kind == "text":
            return value or ""
        words = list(value or [])
        for position, word in enumerate(words, start=1):
            if not isinstance(word, str):
                what = "null" if word is None else f"{word!r} ({type(word).__name__})"
                raise DataError(f"{self.place(index, f'{key} {column!r}')}: word {position} is {what}, not a string")
        return words

    def pair_input(self, value, index, column=None, key=None, what="second input of the pair"):
        column, key = column or self.pair_column, key or self.pair_key
        if not value or (self.input_kind == "text" and not value.strip()):
            where = f"{self.wheres[self.tasks[0].name]}.{key} {column!r}"
            raise DataError(f"{self.place(index, where)}: the {what} is empty")
        return self.as_input(value, index, column, key)

    def gold_column(self, task, values, indices, inputs) -> list:
        field = f"{self.wheres[task.name]}.{task.target_key} {task.target_column!r}"
        column = []
        for index, value, words in zip(indices, values, inputs):
            column.append(
                task.normalize_gold(
                    value, self.label_names[task.name], lambda index=index: self.place(index, field),
                    num_words=len(words) if self.input_kind == "words" else None,
                    tag_scheme=self.tag_scheme, strings_only=self.strings_only[task.name],
                )
            )
        return column

    def __call__(self, batch, indices) -> dict:
        output = {
            self.first: [self.as_input(value, index, self.input_column, self.input_key)
                         for value, index in zip(batch[self.input_column], indices)]
        }
        if self.pair_column is not None:
            output[self.second] = [self.pair_input(value, index) for index, value in zip(indices, batch[self.pair_column])]
        negative_column = self.tasks[0].negative_column
        if negative_column is not None:
            key = f"{self.input_key.rsplit('_', 1)[0]}_negative_column"
            output[f"{self.first}_negative"] = [
                self.pair_input(value, index, negative_column, key, "hard negative")
                for index, value in zip(indices, batch[negative_column])
            ]
        for task in self.tasks:
            output[f"{task.name}_gold"] = self.gold_column(task, batch[task.target_column], indices, output[self.first])
        return output


def encoded_features(tokenizer, tasks, with_eval_columns: bool, has_pair: bool, with_word_starts: bool,
                     towers=()) -> datasets.Features:
    ids = datasets.List(datasets.Value("int32"))
    features = {}
    for prefix in ("", *(f"{tower}_" for tower in towers)):
        features[f"{prefix}input_ids"] = ids
        features[f"{prefix}attention_mask"] = datasets.List(datasets.Value("int8"))
        if "token_type_ids" in tokenizer("a"):
            features[f"{prefix}token_type_ids"] = datasets.List(datasets.Value("int8"))
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
    towers=(),
    num_proc=None,
    desc=None,
):
    """Tokenise a normalized split (a pair as the tokenizer's pair input, truncated `longest_first`) and give it
    `<task>_labels` for every task of the run, the tasks of other data sets getting their "no label" value.
    `with_pair_words`: the evaluation columns include `words_pair` (empty where the split has no pairs), so that
    the splits of a run that mixes pair and single-text data sets concatenate. `with_word_starts`: a
    `word_start_mask` column (1 at each word's first sub-token) for the heads that run over words (CRF). `towers`:
    the second inputs of the run's bi-encoder tasks (`pair`, `negative`), tokenized on their own as
    `<tower>_input_ids`, ... where this data set's tasks read them (a pair is then not joined into `input_ids`), empty
    elsewhere."""
    encoder = SplitEncoder(
        dataset.column_names, tokenizer, run_tasks, max_seq_length=max_seq_length, label_all_tokens=label_all_tokens,
        with_eval_columns=with_eval_columns, with_pair_words=with_pair_words, with_word_starts=with_word_starts,
        towers=towers,
    )
    return dataset.map(
        encoder,
        batched=True,
        remove_columns=dataset.column_names,
        features=encoded_features(tokenizer, run_tasks, with_eval_columns, with_pair_words, with_word_starts, towers),
        num_proc=num_proc,
        desc=desc,
    )


class SplitEncoder:
    """The batched `datasets.map` function of `encode_split`: normalized rows -> model inputs, every run task's
    `<task>_labels`, the row's length and truncation counts, and (for evaluation) the words and gold values."""

    def __init__(self, column_names, tokenizer, run_tasks, *, max_seq_length, label_all_tokens, with_eval_columns,
                 with_pair_words, with_word_starts, towers=()):
        self.tokenizer, self.run_tasks = tokenizer, run_tasks
        self.max_seq_length, self.label_all_tokens = max_seq_length, label_all_tokens
        self.with_eval_columns, self.with_pair_words, self.with_word_starts = (
            with_eval_columns, with_pair_words, with_word_starts
        )
        self.input_kind = "words" if "words" in column_names else "text"
        self.first, self.second = input_names(self.input_kind)
        self.has_pair = self.second in column_names
        self.own_tasks = {column[: -len("_gold")] for column in column_names if column.endswith("_gold")}
        self.towers = towers
        # A bi-encoder data set: its pair (and hard negative) are tokenized on their own, as the other towers' inputs.
        self.separate_pairs = any(task.encodes_pair_separately for task in run_tasks if task.name in self.own_tasks)

    def tokenize(self, batch, firsts):
        pairs = batch[self.second] if self.has_pair and not self.separate_pairs else None
        if self.input_kind == "words":
            return self.tokenizer(firsts, pairs, is_split_into_words=True, truncation=True,
                                  max_length=self.max_seq_length)
        return self.tokenizer(firsts, pairs, truncation=True, max_length=self.max_seq_length,
                              return_offsets_mapping=True)

    def encode_inputs(self, batch) -> tuple:
        """(the tokenizer's encoding, each row's words, each row's character offsets or None for word lists)."""
        if self.input_kind == "text":
            encoded = self.tokenize(batch, batch["text"])
            return encoded, [text.split() for text in batch["text"]], encoded.pop("offset_mapping")
        words = batch["words"]
        encoded = self.tokenize(batch, words)
        dropped = [words_without_subtokens(encoded, i, len(words[i])) for i in range(len(words))]
        if any(dropped) and self.tokenizer.unk_token is not None:
            # A word the tokenizer deletes entirely (BERT drops U+FFFD) would lose its tag: feed it as unknown.
            fed = [
                [self.tokenizer.unk_token if j in gone else word for j, word in enumerate(row)]
                for row, gone in zip(words, dropped)
            ]
            encoded = self.tokenize(batch, fed)
        return encoded, words, None

    def add_row(self, output, batch, encoded, row, words, offsets):
        """Row `row`'s labels of every run task, word-start mask, length, truncation and word ids."""
        input_ids = encoded["input_ids"][row]
        word_ids = first_sequence_word_ids(encoded, row)
        if self.input_kind == "text":
            word_ids = whitespace_word_ids(batch["text"][row], offsets[row], word_ids)
        if self.with_word_starts:
            output["word_start_mask"].append(word_start_mask(word_ids))
        for task in self.run_tasks:
            if task.name in self.own_tasks:
                labels = task.encode_labels(batch[f"{task.name}_gold"][row], word_ids, self.label_all_tokens)
            else:
                labels = task.no_labels(len(input_ids))
            output[f"{task.name}_labels"].append(labels)
        truncated = bool(encoded.encodings[row].overflowing)
        kept_words = max((w + 1 for w in word_ids if w is not None), default=0)
        output["length"].append(len(input_ids))
        output["truncated"].append(truncated)
        output["words_lost"].append(len(words) - kept_words if truncated else 0)
        output["word_ids"].append([-1 if w is None else w for w in word_ids])

    def add_eval_columns(self, output, batch, words):
        """The words (and the pair's words) and each run task's gold values, which evaluation scores against."""
        output["words"] = words
        if self.with_pair_words:
            pair_words = None
            if self.has_pair:
                pair_words = batch[self.second] if self.input_kind == "words" else [t.split() for t in batch[self.second]]
            output["words_pair"] = pair_words or [[] for _ in words]
        for task in self.run_tasks:
            output[f"{task.name}_gold"] = (
                batch[f"{task.name}_gold"] if task.name in self.own_tasks else [task.missing_gold()] * len(words)
            )

    def tower_inputs(self, batch, rows: int) -> dict:
        """`<tower>_input_ids`, ... of every tower of the run: this data set's own second texts, or empty rows."""
        output = {}
        for tower in self.towers:
            column = self.second if tower == "pair" else f"{self.first}_negative"
            if self.separate_pairs and column in batch:
                texts = batch[column]
                encoded = self.tokenizer(texts, is_split_into_words=self.input_kind == "words", truncation=True,
                                         max_length=self.max_seq_length)
                output.update({f"{tower}_{key}": encoded[key] for key in MODEL_INPUTS if key in encoded})
            else:
                output.update({name: [[] for _ in range(rows)] for name in TOWER_INPUTS[tower]
                               if name != f"{tower}_token_type_ids" or "token_type_ids" in self.tokenizer("a")})
        return output

    def __call__(self, batch) -> dict:
        encoded, words, offsets = self.encode_inputs(batch)
        output = {key: encoded[key] for key in MODEL_INPUTS if key in encoded}
        output.update(self.tower_inputs(batch, len(encoded["input_ids"])))
        if self.with_word_starts:
            output["word_start_mask"] = []
        for task in self.run_tasks:
            output[f"{task.name}_labels"] = []
        output.update(length=[], truncated=[], words_lost=[], word_ids=[])
        for row in range(len(encoded["input_ids"])):
            self.add_row(output, batch, encoded, row, words[row], offsets)
        if self.with_eval_columns:
            self.add_eval_columns(output, batch, words)
        else:
            del output["word_ids"]
        return output


__all__ = ["IGNORE_INDEX", "MODEL_INPUTS", "TOWER_INPUTS", "encode_split", "normalize_split"]
