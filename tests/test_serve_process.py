"""`hf-mtl serve` as users run it: a process that finishes its requests on SIGTERM and exits 0, several workers,
and options or models it refuses before starting."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from pipeline_helpers import build_scaled_tiny_model
from serve_helpers import SERVE_TASKS, in_flight, wait_healthy

pytest.importorskip("uvicorn", reason="the serve extra is not installed")
requests = pytest.importorskip("requests")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tokenizer):
    return build_scaled_tiny_model(tmp_path_factory.mktemp("serve-process"), tokenizer, SERVE_TASKS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_folder, log, *options):
    """`hf-mtl serve` in a process of its own, its output in the file `log` (a pipe nobody reads could fill up)."""
    port = free_port()
    command = [sys.executable, "-m", "hf_mtl.cli", "serve", "--model", str(model_folder), "--port", str(port),
               "--no-bf16", "--log-level", "warning", *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, time.monotonic() + 180)
    except AssertionError:
        process.kill()
        process.wait()
        raise AssertionError(f"the server did not start: {log.read_text()[-2000:]}") from None
    return process, url


@pytest.mark.subprocess
def test_sigterm_finishes_the_request_in_flight_and_exits_0(model_folder, tmp_path):
    process, url = start_server(model_folder, tmp_path / "serve.log")
    text = "Angela Merkel met Emmanuel Macron in Berlin. " * 20_000  # ~900 kB: seconds of work
    answers = []
    client = threading.Thread(target=lambda: answers.append(
        requests.post(url + "/predict_all", json={"inputs": text}, timeout=300)))
    client.start()
    deadline = time.monotonic() + 60
    while in_flight(url) < 1:
        assert time.monotonic() < deadline, "the request never arrived"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    client.join(timeout=300)
    assert process.wait(timeout=120) == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert answers and answers[0].status_code == 200
    result = answers[0].json()
    assert result["text"] == text and result["topic"]["label"] in SERVE_TASKS[0]["labels"] and result["ner"]
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=5)


def answer_when_loaded(url, body, deadline=120):
    """The JSON answer of a POST, asking again while the worker that takes it is still loading (503)."""
    started = time.monotonic()
    while True:
        response = requests.post(url, json=body, timeout=60)
        if response.status_code != 503 or time.monotonic() - started > deadline:
            assert response.status_code == 200, response.text
            return response.json()
        time.sleep(0.5)


@pytest.mark.subprocess
def test_several_workers_serve_the_same_routes(model_folder, tmp_path):
    process, url = start_server(model_folder, tmp_path / "serve.log", "--workers", "2")
    try:
        answers = {answer_when_loaded(url + "/predict", {"inputs": "Paris is lovely"})[0]["label"] for _ in range(6)}
        assert len(answers) == 1 and answers <= set(SERVE_TASKS[0]["labels"])
        assert requests.get(url + "/info", timeout=10).json()["tasks"][0]["name"] == "topic"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, (tmp_path / "serve.log").read_text()[-2000:]


@pytest.mark.parametrize("options, message", [
    (["--model", "no/such/folder/here"], "no such folder"),
    (["--port", "70000"], "--port must be between 1 and 65535"),
    (["--max-batch-tokens", "0"], "--max-batch-tokens must be at least 1"),
    (["--default-head", "ner"], "--default-head ner: not a sentence task of the model (topic, flags, rating)"),
])
def test_refused_before_serving(model_folder, options, message, capsys):
    from hf_mtl import cli

    argv = ["serve", "--model", str(model_folder), *options]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_end_of_a_run_prints_the_commands_that_use_the_model(capsys):
    import shlex

    from hf_mtl.cli import build_parser
    from hf_mtl.train import print_next_steps

    print_next_steps("outputs/my run")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model saved in outputs/my run"
    commands = {line.split(":", 1)[0].strip(): shlex.split(line.split(":", 1)[1].split("(")[0]) for line in lines[1:]}
    assert set(commands) == {"predict", "serve"}
    for name, command in commands.items():
        assert command[0] == "hf-mtl"
        parsed = build_parser().parse_args(command[1:])
        assert parsed.command == name and parsed.model == "outputs/my run"
