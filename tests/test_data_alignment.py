"""Word -> subtoken label alignment, the column contract of encoded splits, truncation, unseen labels, the collator."""

import copy
import json
import logging

import pytest
import torch

from hf_mtl.data import MultiTaskCollator, prepare_datasets
from hf_mtl.tasks import parse_task

SNIPS_TASKS = [
    {"name": "intent", "type": "sequence_classification", "dataset": "snips_train"},
    {"name": "slots", "type": "token_classification", "dataset": "snips_train"},
]


def snips_train_as_validation(shared_data, tokenizer, **kwargs):
    """SNIPS train, encoded with the evaluation columns (`word_ids`, `words`, `<task>_gold`) so it can be read back."""
    datasets = {
        "snips_train": {
            "path": str(shared_data / "snips"),
            "format": "jointbert",
            "splits": {"train": "train", "validation": "train"},
        }
    }
    return prepare_datasets(datasets, SNIPS_TASKS, tokenizer, splits=("validation",), **kwargs)


def first_subtoken_tags(row, labels):
    """Word-level tags read back from the labels of each word's first subtoken."""
    tags, previous = {}, None
    for word_id, label in zip(row["word_ids"], row["slots_labels"]):
        if word_id >= 0 and word_id != previous:
            tags[word_id] = labels[label]
        else:
            assert label == -100
        previous = word_id
    return [tags[index] for index in range(len(tags))]


def test_snips_first_subtoken_round_trip(shared_data, tokenizer):
    data = snips_train_as_validation(shared_data, tokenizer)
    rows = data.validation
    assert len(rows) == 13084
    intents, slots = data.label_lists["intent"], data.label_lists["slots"]
    assert slots[0] == "O" and len(intents) == 7
    split_words = 0
    for row in rows:
        assert first_subtoken_tags(row, slots) == row["slots_gold"]
        assert len(row["slots_gold"]) == len(row["words"])
        assert intents[row["intent_labels"]] == row["intent_gold"]
        word_ids = row["word_ids"]
        split_words += sum(word_ids.count(index) > 1 for index in range(len(row["words"])))
    assert split_words > 1000  # words split into several subtokens are covered


def test_snips_label_all_tokens_turns_b_into_i(shared_data, tokenizer):
    data = snips_train_as_validation(shared_data, tokenizer, label_all_tokens=True)
    slots = data.label_lists["slots"]
    checked = 0
    for row in data.validation:
        previous = None
        for word_id, label in zip(row["word_ids"], row["slots_labels"]):
            if word_id < 0:
                assert label == -100
                continue
            tag = row["slots_gold"][word_id]
            if word_id == previous and tag.startswith("B-") and "I-" + tag[2:] in slots:
                assert slots[label] == "I-" + tag[2:]
                checked += 1
            else:
                assert slots[label] == tag
            previous = word_id
    assert checked > 100


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def two_data_sets(tmp_path):
    ner_rows = [
        {"tokens": ["Kofi", "Mensah", "visited", "Lima"], "tags": ["B-PER", "I-PER", "O", "B-LOC"]},
        {"tokens": ["Rain", "in", "Oslo"], "tags": ["O", "O", "B-LOC"]},
        {"tokens": ["Anna", "Silva", "smiled"], "tags": ["B-PER", "I-PER", "O"]},
    ]
    topic_rows = [{"text": "Shares fell sharply", "label": "business"}, {"text": "A late winner", "label": "sports"}]
    datasets = {
        "ner": {
            "format": "json",
            "data_files": {
                "train": write_jsonl(tmp_path / "ner.jsonl", ner_rows),
                "test": str(tmp_path / "ner.jsonl"),
            },
        },
        "news": {
            "format": "json",
            "data_files": {
                "train": write_jsonl(tmp_path / "news.jsonl", topic_rows),
                "test": str(tmp_path / "news.jsonl"),
            },
        },
    }
    tasks = [
        {"name": "ner", "type": "token_classification", "dataset": "ner"},
        {"name": "topic", "type": "sequence_classification", "dataset": "news", "text_column": "text"},
    ]
    return datasets, tasks


def test_every_row_carries_every_task(two_data_sets, tokenizer):
    datasets, tasks = two_data_sets
    data = prepare_datasets(datasets, tasks, tokenizer, splits=("train", "test"))
    assert data.train.column_names == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "ner_labels",
        "topic_labels",
        "length",
    ]
    assert len(data.train) == 5 and data.sampling_probabilities == {"ner": 0.6, "news": 0.4}
    for row in data.train:
        assert row["length"] == len(row["input_ids"]) == len(row["ner_labels"])
        assert (row["topic_labels"] == -100) != all(label == -100 for label in row["ner_labels"])
    test = data.test
    assert test.column_names == data.train.column_names + ["word_ids", "words", "ner_gold", "topic_gold"]
    assert test["topic_gold"] == ["", "", "", "business", "sports"]
    assert test["ner_gold"][3:] == [[], []] and test["ner_gold"][0] == ["B-PER", "I-PER", "O", "B-LOC"]
    assert test["words"][3] == ["Shares", "fell", "sharply"]


def test_truncation_keeps_the_full_gold_and_is_reported(tmp_path, tokenizer, caplog):
    words = ["Kowalski"] * 10 + ["visited", "Lima"]
    rows = [
        {"tokens": words, "tags": ["B-PER"] + ["I-PER"] * 9 + ["O", "B-LOC"]},
        {"tokens": ["Oslo"], "tags": ["B-LOC"]},
    ]
    path = write_jsonl(tmp_path / "ner.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        data = prepare_datasets(
            {"ner": {"format": "json", "data_files": {"train": path, "test": path}}},
            [{"name": "ner", "type": "token_classification", "dataset": "ner"}],
            tokenizer,
            max_seq_length=8,
            splits=("train", "test"),
        )
    row = data.test[0]
    assert len(row["input_ids"]) == 8 and row["ner_gold"] == rows[0]["tags"] and row["words"] == words
    kept = max(row["word_ids"]) + 1
    assert kept < len(words)
    message = f"ner test: 1 of 2 examples truncated at 8 tokens, {len(words) - kept} words lost"
    assert any(line.startswith(message) for line in data.summary) and message in caplog.text


def test_labels_unseen_in_train_are_ignored_but_kept_as_gold(tmp_path, tokenizer, caplog):
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"tokens": ["Anna", "ran"], "tags": ["B-PER", "O"], "label": "a"},
            {"tokens": ["x"], "tags": ["O"], "label": "b"},
        ],
    )
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [{"tokens": ["Anna", "in", "Lima", "Peru"], "tags": ["B-PER", "O", "B-LOC", "B-LOC"], "label": "c"}],
    )
    with caplog.at_level(logging.WARNING):
        data = prepare_datasets(
            {"d": {"format": "json", "data_files": {"train": train, "test": test}}},
            [
                {"name": "ner", "type": "token_classification", "dataset": "d"},
                {"name": "cls", "type": "sequence_classification", "dataset": "d"},
            ],
            tokenizer,
            splits=("train", "test"),
        )
    row = data.test[0]
    assert row["ner_gold"] == ["B-PER", "O", "B-LOC", "B-LOC"] and row["cls_gold"] == "c" and row["cls_labels"] == -100
    labelled = [label for word_id, label in zip(row["word_ids"], row["ner_labels"]) if word_id in (2, 3)]
    assert set(labelled) == {-100}
    assert "task ner: labels not in its label list (ignored by the loss, scored as errors): B-LOC (2)" in caplog.text
    assert "task cls: labels not in its label list (ignored by the loss, scored as errors): c (1)" in caplog.text


def test_collator_pads_inputs_and_labels(two_data_sets, tokenizer):
    datasets, tasks = two_data_sets
    data = prepare_datasets(datasets, tasks, tokenizer, splits=("train", "test"))
    rows = [data.test[index] for index in range(len(data.test))]  # eval rows: the extra columns must be dropped
    longest = max(len(row["input_ids"]) for row in rows)
    batch = MultiTaskCollator(tokenizer, data.tasks)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "ner_labels", "topic_labels"}
    assert batch["input_ids"].shape == batch["ner_labels"].shape == (5, longest)
    assert batch["topic_labels"].tolist() == [-100, -100, -100, 0, 1] and batch["topic_labels"].dtype == torch.long
    for index, row in enumerate(rows):
        length = len(row["input_ids"])
        assert batch["ner_labels"][index].tolist() == row["ner_labels"] + [-100] * (longest - length)
        assert batch["attention_mask"][index].tolist() == [1] * length + [0] * (longest - length)

    train_batch = MultiTaskCollator(tokenizer, data.tasks, pad_to_multiple_of=8)(
        [data.train[index] for index in range(len(data.train))]
    )
    assert set(train_batch) == set(batch) and train_batch["input_ids"].shape[1] % 8 == 0
    assert train_batch["ner_labels"].shape == train_batch["input_ids"].shape


def test_collator_pads_labels_on_the_left_for_left_padding(tokenizer):
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    rows = [
        {"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "ner_labels": [-100, 3, -100], "length": 3},
        {"input_ids": [101, 102], "attention_mask": [1, 1], "ner_labels": [-100, -100], "length": 2},
    ]
    ner = parse_task({"name": "ner", "type": "token_classification", "labels": ["O", "B-X", "I-X", "B-Y"]}, "ner",
                     require_dataset=False)
    batch = MultiTaskCollator(left, [ner])(rows)
    assert batch["input_ids"][1].tolist() == [left.pad_token_id, 101, 102]
    assert batch["ner_labels"][1].tolist() == [-100, -100, -100] and batch["ner_labels"][0].tolist() == [-100, 3, -100]


def test_a_word_the_tokenizer_deletes_keeps_its_tag(tmp_path, tokenizer):
    rows = [
        {"tokens": ["play", "\ufffd\ufffd", "now"], "tags": ["O", "B-track", "O"]},
        {"tokens": ["stop"], "tags": ["O"]},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = prepare_datasets(
        {"d": {"format": "json", "data_files": {"train": path, "test": path}}},
        [{"name": "slots", "type": "token_classification", "dataset": "d"}],
        tokenizer,
        splits=("train", "test"),
    )
    row = data.test[0]
    assert tokenizer.convert_ids_to_tokens(row["input_ids"]) == ["[CLS]", "play", "[UNK]", "now", "[SEP]"]
    assert row["word_ids"] == [-1, 0, 1, 2, -1] and row["words"] == rows[0]["tokens"]
    assert [data.label_lists["slots"][label] for label in row["slots_labels"][1:4]] == ["O", "B-track", "O"]
