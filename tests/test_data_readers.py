"""Readers: JointBERT folders, CoNLL (spaces or tabs), JSON Lines / CSV / Parquet, format inference, IOB1 -> IOB2."""

import json

import datasets
import pytest
from seqeval.metrics.sequence_labeling import get_entities

from hf_mtl.data import load_raw_dataset, prepare_datasets
from hf_mtl.data.tags import iob1_to_iob2

CONLL2003_COUNTS = {"train": (14041, 23499), "validation": (3250, 5942), "test": (3453, 5648)}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jointbert_snips(shared_data):
    snips = load_raw_dataset("snips", {"path": str(shared_data / "snips")})
    assert {split: len(rows) for split, rows in snips.items()} == {"train": 13084, "validation": 700, "test": 700}
    row = snips["train"][0]
    assert set(row) == {"tokens", "tags", "label"}
    assert len(row["tokens"]) == len(row["tags"]) and row["label"] == row["label"].strip()


@pytest.mark.parametrize(
    "spec",
    [
        {"format": "conll", "splits": {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}},
        {},  # format and splits inferred from the folder: *.txt is CoNLL, valid.* is validation
    ],
)
def test_conll2003_sentence_and_entity_counts(shared_data, spec):
    conll = load_raw_dataset("conll", {"path": str(shared_data / "conll2003"), **spec})
    for split, (sentences, entities) in CONLL2003_COUNTS.items():
        rows = conll[split]
        assert rows.column_names == ["tokens", "tags"]
        assert len(rows) == sentences
        assert sum(len(get_entities(tags)) for tags in rows["tags"]) == entities


def test_conll_tabs_and_tab_only_separator_line(tmp_path):
    # WNUT-17 style: tab-separated columns, sentences separated by a line holding one TAB.
    (tmp_path / "train.conll").write_text(
        "EU\tB-ORG\nrejects\tO\n\t\nPeter\tB-PER\nBlackburn\tI-PER\n", encoding="utf-8"
    )
    rows = load_raw_dataset("wnut", {"path": str(tmp_path / "train.conll"), "format": "conll"})["train"]
    assert rows["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert rows["tags"] == [["B-ORG", "O"], ["B-PER", "I-PER"]]


def test_conll_tag_is_the_last_column(tmp_path):
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-NP B-MISC\n"
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    rows = load_raw_dataset("conll", {"path": str(tmp_path)})["train"]
    assert rows.column_names == ["tokens", "tags"]
    assert rows["tags"] == [["B-ORG", "O"], ["B-MISC"]]


def test_iob1_to_iob2_hand_written():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "I-MISC", "O", "B-PER"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG", "B-MISC", "O", "B-PER"]
    assert iob1_to_iob2(iob1) == iob2
    assert iob1_to_iob2(iob2) == iob2


def test_iob1_data_set_is_converted_in_every_split(tmp_path, tokenizer):
    text = "Peter I-PER\nBlackburn I-PER\nvisits O\nBonn I-LOC\n\nEU I-ORG\nand O\nUN I-ORG\nB B-ORG\n"
    for name in ("train.txt", "test.txt"):
        (tmp_path / name).write_text(text, encoding="utf-8")
    data = prepare_datasets(
        {"old": {"path": str(tmp_path), "tag_scheme": "iob1"}},
        [{"name": "ner", "type": "token_classification", "dataset": "old"}],
        tokenizer,
        splits=("train", "test"),
    )
    assert data.label_lists["ner"] == ["O", "B-LOC", "B-ORG", "B-PER", "I-PER"]
    assert data.test["ner_gold"] == [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-ORG", "B-ORG"]]


def test_json_lines_with_string_labels(tmp_path, tokenizer):
    rows = [
        {"tokens": ["Kofi", "scored"], "tags": ["B-PER", "O"], "topic": "sports"},
        {"tokens": ["Shares", "fell"], "tags": ["O", "O"], "topic": "business"},
        {"tokens": ["Anna", "won", "in", "Lima"], "tags": ["B-PER", "O", "O", "B-LOC"], "topic": "sports"},
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "dev.jsonl", rows[:1])
    data = prepare_datasets(
        {"mine": {"format": "json", "data_files": {"train": "train.jsonl", "dev": "dev.jsonl"}}},
        [
            {"name": "topic", "type": "sequence_classification", "dataset": "mine", "label_column": "topic"},
            {"name": "ner", "type": "token_classification", "dataset": "mine"},
        ],
        tokenizer,
        base_dir=tmp_path,
    )
    assert data.label_lists == {"topic": ["business", "sports"], "ner": ["O", "B-LOC", "B-PER"]}
    assert data.train["topic_labels"] == [1, 0, 1]
    assert data.validation["topic_gold"] == ["sports"] and data.validation["ner_gold"] == [["B-PER", "O"]]
    assert data.tasks[0].class_counts(data.train["topic_labels"]) == [1, 2]
    assert data.test is None


def test_json_lines_with_int_labels_named_by_the_task(tmp_path, tokenizer):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "shares fell", "label": 1}, {"text": "a late winner", "label": 0}])
    data = prepare_datasets(
        {"ints": {"path": "train.jsonl"}},
        [
            {
                "name": "topic",
                "type": "sequence_classification",
                "dataset": "ints",
                "text_column": "text",
                "labels": ["sports", "business"],
            }
        ],
        tokenizer,
        base_dir=tmp_path,
        splits=("train",),
    )
    assert data.label_lists["topic"] == ["sports", "business"]
    assert data.train["topic_labels"] == [1, 0]


def test_class_label_names_are_the_labels(tmp_path, tokenizer):
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
        }
    )
    rows = {"tokens": [["Anna", "Silva", "smiled"], ["rain"]], "ner_tags": [[1, 2, 0], [0]], "label": [1, 0]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "train.parquet"))
    data = prepare_datasets(
        {"pq": {"path": str(tmp_path)}},
        [
            {"name": "sentiment", "type": "sequence_classification", "dataset": "pq"},
            {"name": "ner", "type": "token_classification", "dataset": "pq", "tags_column": "ner_tags"},
        ],
        tokenizer,
        validation_split_percentage=50,
    )
    # The names (and their order) of the ClassLabel, even though the one carved train row has only one of them.
    assert data.label_lists == {"sentiment": ["neg", "pos"], "ner": ["O", "B-PER", "I-PER"]}
    gold = {(row["sentiment_gold"], tuple(row["ner_gold"])) for row in data.validation}
    assert gold <= {("pos", ("B-PER", "I-PER", "O")), ("neg", ("O",))} and len(data.train) == 1
    assert any("carved from train" in line for line in data.summary)


def test_csv_text_column_and_whitespace_words(tmp_path, tokenizer):
    (tmp_path / "train.csv").write_text(
        'text,label\n"Shares fell, again",business\n"A late winner",sports\n', encoding="utf-8"
    )
    (tmp_path / "test.csv").write_text('text,label\n"Rates rose, sharply.",business\n', encoding="utf-8")
    data = prepare_datasets(
        {"news": {"path": str(tmp_path)}},
        [{"name": "topic", "type": "sequence_classification", "dataset": "news", "text_column": "text"}],
        tokenizer,
        splits=("train", "test"),
    )
    row = data.test[0]
    assert row["words"] == ["Rates", "rose,", "sharply."]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens == ["[CLS]", "rates", "rose", ",", "sharply", ".", "[SEP]"]
    assert row["word_ids"] == [-1, 0, 1, 1, 2, 2, -1]
    assert row["topic_gold"] == "business" and row["topic_labels"] == 0
