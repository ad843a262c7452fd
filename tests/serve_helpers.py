"""`hf-mtl serve` in-process for the tests: the app under uvicorn in a thread, on a free loopback port."""

import threading
import time

import requests

SERVE_TASKS = [
    {"name": "topic", "type": "sequence_classification", "labels": ["business", "politics", "other"]},
    {"name": "flags", "type": "sequence_classification", "problem_type": "multi_label_classification",
     "labels": ["urgent", "local", "personal"]},
    {"name": "rating", "type": "sequence_classification", "problem_type": "regression"},
    {"name": "ner", "type": "token_classification", "labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]},
]


class ThreadedServer:
    """`with ThreadedServer(settings) as server:` serves on `server.url` once `/health` answers 200."""

    def __init__(self, settings, wait_ready=True):
        import uvicorn

        from hf_mtl.serving import create_app

        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.wait_ready = wait_ready

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 120
        while not (self.server.started and self.server.servers):
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        if self.wait_ready:
            wait_healthy(self.url, deadline)
        return self

    def __exit__(self, *exc_info):
        self.server.should_exit = True
        self.thread.join(timeout=60)


def wait_healthy(url: str, deadline: float) -> None:
    while True:
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the server did not become healthy"
        time.sleep(0.05)


def in_flight(url: str) -> float:
    """The server's `hf_mtl_requests_in_flight` gauge, read from /metrics."""
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("hf_mtl_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("/metrics has no hf_mtl_requests_in_flight")


def assert_same_outputs(results, expected, tolerance=1e-5):
    """`assert_same_predictions`, with regression scores (`{"score": x}`, no label) compared up to `tolerance` too."""
    import pytest
    from pipeline_helpers import assert_same_predictions

    results = [results] if isinstance(results, dict) else results
    expected = [expected] if isinstance(expected, dict) else expected
    stripped = []
    for result, reference in zip(results, expected):
        for key, value in reference.items():
            if isinstance(value, dict) and set(value) == {"score"}:
                assert result[key]["score"] == pytest.approx(value["score"], abs=tolerance, rel=tolerance)
        stripped.append([{key: value for key, value in output.items() if not (isinstance(value, dict)
                          and set(value) == {"score"})} for output in (result, reference)])
    assert_same_predictions([pair[0] for pair in stripped], [pair[1] for pair in stripped], score_tolerance=tolerance)
