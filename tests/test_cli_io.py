"""`hf-mtl predict` / `embed` inputs and outputs: JSON Lines for embed, checked strings, `-` for standard input and
output, and a predict that resumes after a kill."""

import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT
from pipeline_helpers import SENTENCES, assert_same_predictions, raw_text, read_jsonl

from hf_mtl import cli

TEXTS = [raw_text(words) for words, _, _ in SENTENCES]


def run_cli(capsys, *argv):
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def fake_stdin(monkeypatch, content: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content), encoding="utf-8"))


def partial_files(output):
    return output.parent / f".{output.name}.hf_mtl-partial", output.parent / f".{output.name}.hf_mtl-partial.json"


# ---- embed reads .jsonl as predict does ----------------------------------------------------------------------------
def test_embed_jsonl_embeds_the_text_and_the_joined_tokens(capsys, model_dir, pipe, tmp_path):
    source = tmp_path / "input.jsonl"
    rows = [{"text": TEXTS[0], "id": 7}, {"tokens": TEXTS[3].split()}]
    source.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    output = tmp_path / "embeddings.npy"

    status, _, err = run_cli(capsys, "embed", "--model", model_dir, "--input", source, "--output", output, "--no-bf16")

    assert status == 0, err
    embeddings = np.load(output)
    assert embeddings.shape == (2, 384)  # one row per non-blank line, not the JSON text of each line
    np.testing.assert_allclose(embeddings, pipe.embed([TEXTS[0], TEXTS[3]], bf16=False), atol=1e-5)


def test_embed_refuses_a_pair_naming_the_line(capsys, model_dir, tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text('{"text": "a"}\n{"text": "a", "text_pair": "b"}\n', encoding="utf-8")
    output = tmp_path / "e.npy"
    status, _, err = run_cli(capsys, "embed", "--model", model_dir, "--input", source, "--output", output)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --input {source}, line 2: \"text_pair\"") and "its own line" in err
    assert not output.exists()


# ---- strings that are not text -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line, place",
    [('{"text": "ok \\ud800 then"}', '"text" holds a lone surrogate'),
     ('{"text": "ok", "text_pair": "\\udfff"}', '"text_pair" holds a lone surrogate'),
     ('{"tokens": ["ok", "x\\ud83d"]}', '"tokens"[1] holds a lone surrogate')],
)
def test_a_lone_surrogate_is_one_line_naming_the_line(capsys, model_dir, tmp_path, line, place):
    source = tmp_path / "input.jsonl"
    source.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    status, _, err = run_cli(capsys, "predict", "--model", model_dir, "--input", source, "--output", output)
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: --input {source}, line 2: {place}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input.jsonl"]


def test_a_surrogate_pair_is_text(capsys, model_dir, tmp_path):
    source = tmp_path / "input.jsonl"
    source.write_text('{"text": "Anna \\ud83d\\ude00 visited Paris"}\n', encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    status, _, err = run_cli(capsys, "predict", "--model", model_dir, "--input", source, "--output", output)
    assert status == 0, err
    assert read_jsonl(output)[0]["text"] == "Anna \U0001F600 visited Paris"


# ---- standard input and output -------------------------------------------------------------------------------------
def test_predict_from_stdin_to_stdout(capsysbinary, monkeypatch, model_dir, pipe):
    lines = [TEXTS[0], "", TEXTS[3]]
    fake_stdin(monkeypatch, ("\n".join(lines) + "\n").encode("utf-8"))

    status = cli.main(["predict", "--model", str(model_dir), "--input", "-", "--output", "-", "--no-bf16"])

    captured = capsysbinary.readouterr()
    assert status == 0, captured.err
    results = [json.loads(line) for line in captured.out.decode("utf-8").splitlines()]
    assert [result["text"] for result in results] == lines  # stdout holds the results and nothing else
    assert_same_predictions(results, pipe(lines, bf16=False), score_tolerance=1e-5)


def test_predict_reads_json_lines_from_stdin_with_input_format(capsysbinary, monkeypatch, model_dir, tmp_path):
    fake_stdin(monkeypatch, b'{"text": "Anna visited Paris"}\n{"tokens": ["Omar", "left"]}\n')
    output = tmp_path / "predictions.jsonl"

    status = cli.main(["predict", "--model", str(model_dir), "--input", "-", "--input-format", "jsonl", "--output",
                       str(output)])

    assert status == 0, capsysbinary.readouterr().err
    assert [result["text"] for result in read_jsonl(output)] == ["Anna visited Paris", "Omar left"]
    assert capsysbinary.readouterr().out == b""


def test_stdin_that_is_not_utf8_names_stdin_and_the_line(capsys, monkeypatch, model_dir, tmp_path):
    fake_stdin(monkeypatch, "fine\nZürich\n".encode("latin-1"))
    status, _, err = run_cli(capsys, "predict", "--model", model_dir, "--input", "-", "--output", tmp_path / "o.jsonl")
    assert status == 2 and err.startswith("error: <stdin>:2: not UTF-8") and err.count("\n") == 1


def test_embed_to_stdout_writes_npy_bytes(capsysbinary, model_dir, pipe, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")

    status = cli.main(["embed", "--model", str(model_dir), "--input", str(source), "--output", "-", "--no-bf16"])

    captured = capsysbinary.readouterr()
    assert status == 0, captured.err
    embeddings = np.load(io.BytesIO(captured.out))
    np.testing.assert_allclose(embeddings, pipe.embed(TEXTS[:3], bf16=False), atol=1e-5)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input.txt"]


@pytest.mark.subprocess
def test_stdin_and_stdout_through_a_real_pipe(model_dir, tmp_path):
    command = [sys.executable, "-m", "hf_mtl.cli", "predict", "--model", str(model_dir), "--input", "-", "--output", "-"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, input="Anna visited Paris\nOmar left Acme\n".encode(), capture_output=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    results = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert [result["text"] for result in results] == ["Anna visited Paris", "Omar left Acme"]
    assert os.listdir(tmp_path) == []  # nothing staged or locked beside a "-" file


@pytest.mark.parametrize(
    "extra, message",
    [(["--input", "-", "--output", "o.jsonl", "--resume"], "--resume: needs --input to be a file"),
     (["--input", "in.txt", "--output", "-", "--resume"], "--resume: needs --output to be a file")],
)
def test_resume_needs_files(capsys, model_dir, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("Anna\n", encoding="utf-8")
    status, _, err = run_cli(capsys, "predict", "--model", model_dir, *extra)
    assert status == 2 and err.startswith(f"error: {message}")


# ---- a predict that survives a kill -------------------------------------------------------------------------------
def interrupting_block(monkeypatch, after_blocks: int, interruption):
    """`predict_block` that runs `after_blocks` blocks, then calls `interruption()` (raises or signals)."""
    calls = []
    real = cli.predict_block

    def block(pipe, records, **kwargs):
        calls.append(list(records))
        if len(calls) == after_blocks + 1:
            interruption()
        return real(pipe, records, **kwargs)

    monkeypatch.setattr(cli, "predict_block", block)
    return calls


def ctrl_c():
    raise KeyboardInterrupt


@pytest.mark.parametrize("interruption", [ctrl_c, lambda: os.kill(os.getpid(), signal.SIGTERM)], ids=["ctrl-c", "sigterm"])
def test_interrupted_predict_resumes_where_it_stopped(capsys, model_dir, tmp_path, monkeypatch, interruption):
    lines = [TEXTS[index % len(TEXTS)] for index in range(7)]
    source = tmp_path / "input.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    partial, record = partial_files(output)
    argv = ["predict", "--model", model_dir, "--input", source, "--output", output, "--no-bf16", "--batch-size", 2]
    monkeypatch.setattr(cli, "BLOCK_SIZE", 2)

    interrupting_block(monkeypatch, 2, interruption)
    status, _, err = run_cli(capsys, *argv)

    assert status == 130 and err.strip().endswith(
        f"interrupted: 4 of 7 predictions are kept in {partial}; run the same command with --resume to continue")
    assert not output.exists() and len(partial.read_text(encoding="utf-8").splitlines()) == 4 and record.is_file()

    calls = interrupting_block(monkeypatch, 99, ctrl_c)
    status, _, err = run_cli(capsys, *argv, "--resume")

    assert status == 0, err
    assert "4 of 7 predictions already in" in err
    assert calls == [lines[4:6], lines[6:]]  # only what was missing
    assert not partial.exists() and not record.exists()
    expected = output.with_name("straight.jsonl")
    assert run_cli(capsys, "predict", "--model", model_dir, "--input", source, "--output", expected, "--no-bf16",
                   "--batch-size", 2)[0] == 0
    assert_same_predictions(read_jsonl(output), read_jsonl(expected), score_tolerance=1e-5)


def test_resume_cuts_a_half_written_line_and_refuses_a_changed_input(capsys, model_dir, tmp_path, monkeypatch):
    source = tmp_path / "input.txt"
    source.write_text("\n".join(TEXTS[:5]) + "\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    partial, record = partial_files(output)
    argv = ["predict", "--model", model_dir, "--input", source, "--output", output, "--no-bf16"]
    monkeypatch.setattr(cli, "BLOCK_SIZE", 2)
    interrupting_block(monkeypatch, 1, ctrl_c)
    assert run_cli(capsys, *argv)[0] == 130
    with open(partial, "ab") as handle:
        handle.write(b'{"text": "half a li')  # killed in the middle of a write

    calls = interrupting_block(monkeypatch, 99, ctrl_c)
    status, _, err = run_cli(capsys, *argv, "--resume")
    assert status == 0, err
    assert [len(block) for block in calls] == [2, 1]
    assert [result["text"] for result in read_jsonl(output)] == TEXTS[:5]

    interrupting_block(monkeypatch, 1, ctrl_c)
    assert run_cli(capsys, *argv)[0] == 130
    kept = partial.read_bytes()
    source.write_text("\n".join(TEXTS[:6]) + "\n", encoding="utf-8")  # the input changed since
    status, _, err = run_cli(capsys, *argv, "--resume")
    assert status == 2 and err.startswith(f"error: --resume: the partial predictions {partial} were made with another "
                                          "input")
    assert partial.read_bytes() == kept  # still there for the user to decide

    status, _, err = run_cli(capsys, *argv)  # without --resume: starts over
    assert status == 0 and "replacing the partial predictions" in err
    assert [result["text"] for result in read_jsonl(output)] == TEXTS[:6] and not partial.exists()


KILLED_PREDICT = """
import os, signal, sys
from hf_mtl import cli
cli.BLOCK_SIZE = 2
real = cli.predict_block
calls = []
def block(pipe, records, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(pipe, records, **kwargs)
cli.predict_block = block
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.subprocess
def test_a_killed_predict_leaves_its_partial_output_for_resume(capsys, model_dir, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    partial, _ = partial_files(output)
    argv = ["predict", "--model", str(model_dir), "--input", str(source), "--output", str(output), "--no-bf16"]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    killed = subprocess.run([sys.executable, "-c", KILLED_PREDICT, *argv], capture_output=True, cwd=REPO_ROOT,
                            env=env, timeout=300)

    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not output.exists()
    assert [json.loads(line)["text"] for line in partial.read_text(encoding="utf-8").splitlines()] == TEXTS[:4]
    status, _, err = run_cli(capsys, *argv, "--resume")
    assert status == 0, err
    assert [result["text"] for result in read_jsonl(output)] == TEXTS
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input.txt", "predictions.jsonl"]
