"""`hf-mtl predict` and `hf-mtl embed`: file formats, output alignment, one-line errors, atomic output."""

import json

import numpy as np
import pytest
from pipeline_helpers import SENTENCES, assert_same_predictions, raw_text, read_jsonl

from hf_mtl import cli
from hf_mtl.errors import DataError, ModelError

TEXTS = [raw_text(words) for words, _, _ in SENTENCES]


def run_cli(capsys, *argv):
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_predict_txt_keeps_every_line_exactly(capsys, model_dir, pipe, tmp_path):
    lines = [TEXTS[0], "", "  Paris, Paris and Paris again: (Apple) sued Apple!  ", TEXTS[3]]
    source = tmp_path / "input.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "predictions.jsonl"

    # float32 on both sides: the comparison crosses batch sizes (2 here, the default in `pipe`), which bf16 would blur
    argv = ["predict", "--model", model_dir, "--input", source, "--output", output, "--batch-size", 2, "--no-bf16"]
    status, _, err = run_cli(capsys, *argv)

    assert status == 0, err
    results = read_jsonl(output)
    assert [result["text"] for result in results] == lines
    assert_same_predictions(results, pipe(lines, bf16=False), score_tolerance=1e-5)
    for result in results:
        assert all(result["text"][entity["start"] : entity["end"]] == entity["text"] for entity in result["ner"])
    assert [entity["text"] for entity in results[2]["ner"]] == ["Paris", "Paris", "Paris", "Apple", "Apple"]


def test_predict_jsonl_text_and_tokens_with_tags(capsys, model_dir, pipe, tmp_path):
    words, tags, topic = SENTENCES[1]
    source = tmp_path / "input.jsonl"
    rows = [{"text": TEXTS[0], "id": 1}, {"tokens": words.split()}]
    source.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"

    argv = ["predict", "--model", model_dir, "--input", source, "--output", output, "--tags", "--no-bf16"]
    status, _, err = run_cli(capsys, *argv)

    assert status == 0, err
    first, second = read_jsonl(output)
    assert_same_predictions([first], [pipe(TEXTS[0], return_tags=True, bf16=False)], score_tolerance=1e-5)
    assert second["text"] == words and second["words"] == words.split() and second["tags"]["ner"] == tags.split()
    assert second["topic"]["label"] == topic


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "input.jsonl: the file is empty"),
        ("\n\n", "input.jsonl: the file has only blank lines"),
        ('{"text": "ok"}\n{"tokens": "not a list"}\n', 'input.jsonl, line 2: expected an object with "text"'),
        ('{"text": "ok"}\nnot json\n', "input.jsonl, line 2: not valid JSON"),
    ],
)
def test_predict_input_errors_are_one_line(capsys, model_dir, tmp_path, content, message):
    source = tmp_path / "input.jsonl"
    source.write_text(content, encoding="utf-8")
    output = tmp_path / "predictions.jsonl"

    status, _, err = run_cli(capsys, "predict", "--model", model_dir, "--input", source, "--output", output)

    assert status == 2
    assert err.startswith("error: --input ") and message in err and err.count("\n") == 1
    assert not output.exists()


def test_empty_txt_names_the_file(capsys, model_dir, tmp_path):
    source = tmp_path / "empty.txt"
    source.write_text("", encoding="utf-8")
    output = tmp_path / "o.jsonl"
    status, _, err = run_cli(capsys, "predict", "--model", model_dir, "--input", source, "--output", output)
    assert status == 2 and err == f"error: --input {source}: the file is empty, there is nothing to process\n"


def test_usage_and_model_errors_are_one_line(capsys, tmp_path, monkeypatch):
    source = tmp_path / "input.txt"
    source.write_text("Apple\n", encoding="utf-8")
    missing = tmp_path / "no-model"

    status, _, err = run_cli(capsys, "predict", "--model", missing, "--input", source, "--output", tmp_path / "o.jsonl")
    assert status == 2 and err == f"error: model {missing}: no such folder\n"

    status, _, err = run_cli(capsys, "predict", "--input", source)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: hf-mtl predict: the following arguments are required: --model, --output")

    monkeypatch.setenv("HF_MTL_DEBUG", "1")
    with pytest.raises(ModelError):
        cli.main(["embed", "--model", str(missing), "--input", str(source), "--output", str(tmp_path / "e.npy")])


def test_failed_predict_leaves_the_old_output_untouched(capsys, model_dir, tmp_path, monkeypatch):
    source = tmp_path / "input.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    output.write_text("previous run\n", encoding="utf-8")
    calls = []

    def failing_block(pipe, records, **kwargs):
        calls.append(len(records))
        if len(calls) == 2:
            raise DataError("simulated failure in the second block")
        return [{"text": record} for record in records]

    monkeypatch.setattr(cli, "BLOCK_SIZE", 3)
    monkeypatch.setattr(cli, "predict_block", failing_block)
    status, _, err = run_cli(capsys, "predict", "--model", model_dir, "--input", source, "--output", output)

    assert status == 2 and "simulated failure" in err
    assert output.read_text(encoding="utf-8") == "previous run\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input.txt", "predictions.jsonl"]


def test_embed_writes_one_row_per_line(capsys, model_dir, pipe, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    output = tmp_path / "embeddings.npy"

    argv = ["embed", "--model", model_dir, "--input", source, "--output", output, "--normalize", "--no-bf16"]
    status, _, err = run_cli(capsys, *argv)

    assert status == 0, err
    embeddings = np.load(output)
    assert embeddings.shape == (len(TEXTS), 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embeddings, pipe.embed(TEXTS, normalize=True, bf16=False), atol=1e-5)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("hf-mtl ")


def test_predict_a_5000_word_line_tags_every_word(capsys, model_dir, tmp_path):
    words = [f"{word}," if index % 11 == 0 else word for index, word in enumerate(("Anna visited Paris and Lagos " * 1000).split())]
    source = tmp_path / "long.txt"
    source.write_text(" ".join(words) + "\n", encoding="utf-8")
    output = tmp_path / "long.jsonl"
    status, _, err = run_cli(capsys, "predict", "--model", model_dir, "--input", source, "--output", output, "--tags")
    assert status == 0, err
    [result] = read_jsonl(output)
    assert len(result["words"]) >= 5000 and len(result["tags"]["ner"]) == len(result["words"])


def test_predict_input_that_is_not_utf8_is_one_line(capsys, model_dir, tmp_path):
    source = tmp_path / "latin1.txt"
    source.write_bytes("Anna visited Paris\nZürich is nice\n".encode("latin-1"))
    status, _, err = run_cli(capsys, "predict", "--model", model_dir, "--input", source, "--output", tmp_path / "o.jsonl")
    assert status == 2 and err.startswith(f"error: {source}:2: not UTF-8") and err.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists()
