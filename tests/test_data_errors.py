"""Every bad input raises one clear error naming the file:line (1-based), the example index or the config field."""

import json
import logging
import os
import re

import pytest

from hf_mtl.data import load_raw_dataset, prepare_datasets
from hf_mtl.tasks import parse_task
from hf_mtl.errors import ConfigError, DataError

NER = [{"name": "ner", "type": "token_classification", "dataset": "d"}]


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def write_jointbert(folder, seq_in, seq_out, label):
    for name, lines in (("seq.in", seq_in), ("seq.out", seq_out), ("label", label)):
        write(folder / "train" / name, "".join(line + "\n" for line in lines))
    return folder


def prepare(datasets, tasks, tokenizer=None, **kwargs):
    return prepare_datasets(datasets, tasks, tokenizer, splits=("train",), **kwargs)


def test_missing_folder(tmp_path):
    with pytest.raises(
        DataError, match=f"datasets.d.path: no such file or folder: {re.escape(str(tmp_path / 'nope'))}"
    ):
        load_raw_dataset("d", {"path": str(tmp_path / "nope"), "format": "conll"})


def test_missing_file(tmp_path):
    write(tmp_path / "train.txt", "EU B-ORG\n")
    with pytest.raises(DataError, match=f"datasets.d.splits: no such file: {re.escape(str(tmp_path / 'valid.txt'))}"):
        load_raw_dataset(
            "d", {"path": str(tmp_path), "format": "conll", "splits": {"train": "train.txt", "dev": "valid.txt"}}
        )


def test_missing_jointbert_file(tmp_path):
    write(tmp_path / "train" / "seq.in", "play it\n")
    write(tmp_path / "train" / "seq.out", "O O\n")
    with pytest.raises(DataError, match=f"no such file: {re.escape(str(tmp_path / 'train' / 'label'))}"):
        load_raw_dataset("d", {"path": str(tmp_path), "format": "jointbert"})


def test_unknown_format(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"datasets.d.format: unknown format 'xml' \(known: jointbert, conll, json, csv, tsv, parquet, hub\)",
    ):
        load_raw_dataset("d", {"path": str(tmp_path), "format": "xml"})


def test_missing_column_lists_the_columns(tmp_path, tokenizer):
    write(tmp_path / "train.jsonl", json.dumps({"text": "shares fell", "label": "business"}) + "\n")
    tasks = [
        {
            "name": "topic",
            "type": "sequence_classification",
            "dataset": "d",
            "label_column": "topic",
            "text_column": "text",
        }
    ]
    with pytest.raises(
        DataError,
        match=r"split 'train': no column 'topic' \(tasks\[0\].label_column\); its columns are: text, label",
    ):
        prepare({"d": {"path": str(tmp_path / "train.jsonl")}}, tasks, tokenizer)


def test_tokens_and_tags_of_different_length_in_jointbert(tmp_path):
    folder = write_jointbert(tmp_path, ["play it", "stop the song"], ["O O", "O O"], ["Play", "Stop"])
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{folder / 'train' / 'seq.in'}:2 has 3 words but {folder / 'train' / 'seq.out'}:2 has 2 tags"
        ),
    ):
        load_raw_dataset("d", {"path": str(folder)})


def test_tokens_and_tags_of_different_length_in_json(tmp_path, tokenizer):
    rows = [{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b"], "tags": ["O"]}]
    write(tmp_path / "train.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(
        DataError,
        match=r"train.jsonl:2 \(data set 'd', split 'train', example index 1, tasks\[0\].tags_column 'tags'\): 2 words but 1 tags",
    ):
        prepare({"d": {"path": str(tmp_path)}}, NER, tokenizer)


def test_jointbert_files_with_different_line_counts(tmp_path):
    folder = write_jointbert(tmp_path, ["play it", "stop"], ["O O", "O"], ["Play"])
    with pytest.raises(DataError) as error:
        load_raw_dataset("d", {"path": str(folder)})
    message = str(error.value)
    assert "files differ in line count" in message
    assert f"{folder / 'train' / 'seq.in'} has 2" in message and f"{folder / 'train' / 'label'} has 1" in message


@pytest.mark.parametrize("separator", [" ", "\t"])
def test_bad_tag_in_conll_names_file_and_line(tmp_path, separator):
    path = write(tmp_path / "train.txt", f"-DOCSTART- O\n\nEU{separator}B-ORG\n\nrejects{separator}X-VERB\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:5: tag 'X-VERB' is not O, B-<type> or I-<type>")):
        load_raw_dataset("d", {"path": str(path)})


def test_bad_tag_in_jointbert_names_file_and_line(tmp_path):
    folder = write_jointbert(tmp_path, ["play it", "stop"], ["O O", "B-"], ["Play", "Stop"])
    with pytest.raises(
        DataError, match=re.escape(f"{folder / 'train' / 'seq.out'}:2: tag 'B-' is not O, B-<type> or I-<type>")
    ):
        load_raw_dataset("d", {"path": str(folder)})


def test_bad_tag_in_json_names_the_example(tmp_path, tokenizer):
    rows = [{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a"], "tags": ["O"]}, {"tokens": ["Oslo"], "tags": ["LOC"]}]
    write(tmp_path / "train.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(
        DataError,
        match=r"train.jsonl:3 \(data set 'd', split 'train', example index 2, tasks\[0\].tags_column 'tags'\): tag 'LOC' is not",
    ):
        prepare({"d": {"path": str(tmp_path)}}, NER, tokenizer)


def test_conll_line_without_tag_column(tmp_path):
    # The conll builder would pad this line with an empty tag; the scan names it instead.
    path = write(tmp_path / "train.txt", "EU NNP B-ORG\nrejects VBZ O\n\nGerman B-MISC\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:4: 2 columns, but line 1 has 3")):
        load_raw_dataset("d", {"path": str(path)})


def test_empty_train_split(tmp_path, tokenizer):
    write(tmp_path / "train.txt", "-DOCSTART- -X- O\n\n")
    with pytest.raises(DataError, match=r"data set 'd' \(.*\): the train split is empty or missing"):
        prepare({"d": {"path": str(tmp_path)}}, NER, tokenizer)


def test_empty_json_train_file(tmp_path):
    path = write(tmp_path / "train.jsonl", "\n")
    with pytest.raises(DataError, match=re.escape(f"data set 'd': split 'train' is empty: {path}")):
        load_raw_dataset("d", {"path": str(path)})


def test_train_split_of_only_empty_sentences(tmp_path, tokenizer):
    folder = write_jointbert(tmp_path, ["", "  "], ["", ""], ["Play", "Stop"])
    with pytest.raises(DataError, match=r"data set 'd' \(.*\): the train split has only empty sentences"):
        prepare({"d": {"path": str(folder)}}, NER, tokenizer)


def test_file_that_is_not_utf8(tmp_path):
    path = write(tmp_path / "train.txt", "EU B-ORG\nK\u00f6ln B-LOC\n", encoding="latin-1")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not UTF-8 text (byte 0xf6 at column 2)")):
        load_raw_dataset("d", {"path": str(path)})


def test_json_file_that_is_not_utf8(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "ok"}\n{"text": "K\u00f6ln"}\n', encoding="latin-1")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not UTF-8 text")):
        load_raw_dataset("d", {"path": str(path)})


def test_task_naming_an_undeclared_data_set(tokenizer):
    tasks = NER + [{"name": "topic", "type": "sequence_classification", "dataset": "news"}]
    with pytest.raises(ConfigError, match=r"tasks\[1\].dataset: 'news' is not declared in datasets \(declared: d\)"):
        prepare({"d": {"path": "x"}}, tasks, tokenizer)


@pytest.mark.parametrize(
    "task, message",
    [
        (
            {"name": "ner", "type": "token_classification", "dataset": "d", "colour": "red"},
            r"tasks\[0\].colour: unknown key",
        ),
        ({"name": "ner", "type": "tagging", "dataset": "d"}, r"tasks\[0\].type: 'tagging' is not one of"),
        (
            {"name": "ner-tags", "type": "token_classification", "dataset": "d"},
            r"tasks\[0\].name: 'ner-tags' must be a Python identifier",
        ),
        ({"name": "ner", "type": "token_classification"}, r"tasks\[0\].dataset: a non-empty string is required"),
        (
            {"name": "c", "type": "sequence_classification", "dataset": "d", "crf": True},
            r"tasks\[0\].crf: only token_classification",
        ),
        (
            {"name": "c", "type": "sequence_classification", "dataset": "d", "class_weights": "inverse"},
            r"tasks\[0\].class_weights:",
        ),
    ],
)
def test_bad_task_fields(task, message):
    with pytest.raises(ConfigError, match=message):
        parse_task(task, "tasks[0]")


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"path": "x", "formatt": "conll"}, r"datasets.d.formatt: unknown key"),
        ({"path": "x", "tag_scheme": "bioes"}, r"datasets.d.tag_scheme: 'bioes' is not one of iob1, iob2"),
        ({"format": "json"}, r"datasets.d: give a path"),
        ({"path": "x", "splits": {"training": "a.txt"}}, r"datasets.d.splits.training: unknown split"),
    ],
)
def test_bad_data_set_fields(tmp_path, spec, message):
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match=message):
        load_raw_dataset("d", spec, base_dir=tmp_path)


def test_joint_tasks_must_share_their_input(tokenizer):
    tasks = NER + [{"name": "topic", "type": "sequence_classification", "dataset": "d", "text_column": "text"}]
    with pytest.raises(
        ConfigError, match=r"tasks\[1\].text_column: task 'topic' reads text from column 'text' but task 'ner'"
    ):
        prepare({"d": {"path": "x"}}, tasks, tokenizer)


def test_tokenizer_without_word_ids(minilm_path):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    slow = BertTokenizerLegacy(os.path.join(minilm_path, "vocab.txt"))  # a Python tokenizer: no word_ids()
    with pytest.raises(ConfigError, match="tokenizer: BertTokenizerLegacy is not a fast .* word_ids()"):
        prepare({"d": {"path": "x"}}, NER, slow)


def test_hub_id_that_cannot_be_loaded(tmp_path):
    with pytest.raises(
        DataError,
        match=r"datasets.news.path: no file or folder at .*not/here, and loading 'not/here' from the Hugging Face Hub",
    ):
        load_raw_dataset("news", {"path": "not/here"}, base_dir=tmp_path)


def test_empty_sentences_are_skipped_with_a_counted_warning(tmp_path, tokenizer, caplog):
    folder = write_jointbert(
        tmp_path, ["play it", "", "stop", " "], ["O O", "", "B-x", ""], ["Play", "Play", "Stop", "Stop"]
    )
    with caplog.at_level(logging.WARNING):
        data = prepare({"d": {"path": str(folder)}}, NER, tokenizer)
    assert len(data.train) == 2
    assert "d train: skipped 2 empty sentences" in caplog.text and "d train: skipped 2 empty sentences" in data.summary


def test_tokens_column_holding_text(tmp_path, tokenizer):
    write(tmp_path / "train.jsonl", json.dumps({"tokens": "Anna ran", "tags": ["B-PER", "O"]}) + "\n")
    with pytest.raises(
        DataError, match=r"column 'tokens' \(tasks\[0\].tokens_column\) holds Value\('string'\), not word lists"
    ):
        prepare({"d": {"path": str(tmp_path)}}, NER, tokenizer)
