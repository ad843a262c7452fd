"""`hf-mtl serve`'s app over real HTTP on a tiny random model: TEI's route shapes, every head, dynamic batching
equal to the pipeline, huggingface_hub's InferenceClient, and a battery of bad requests the server survives."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from pipeline_helpers import SENTENCES, build_scaled_tiny_model, raw_text
from serve_helpers import SERVE_TASKS, ThreadedServer, assert_same_outputs, in_flight, wait_healthy

pytest.importorskip("fastapi", reason="the serve extra is not installed")
requests = pytest.importorskip("requests")

from hf_mtl import MultiTaskPipeline  # noqa: E402
from hf_mtl.serving import ServeSettings  # noqa: E402

SHORT = [raw_text(words) for words, _, _ in SENTENCES]
LONG = " ".join(SHORT * 4)  # over the tiny encoder's 128 positions: read in word windows


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tokenizer):
    return build_scaled_tiny_model(tmp_path_factory.mktemp("serve"), tokenizer, SERVE_TASKS)


@pytest.fixture(scope="module")
def pipe(model_folder):
    return MultiTaskPipeline(str(model_folder), bf16=False)


@pytest.fixture(scope="module")
def server(model_folder):
    # A small token budget, so that concurrent requests are cut into several forward batches.
    with ThreadedServer(ServeSettings(model=str(model_folder), bf16=False, max_batch_tokens=600)) as server:
        yield server


def post(server, path, body, status=200):
    response = requests.post(server.url + path, json=body, timeout=120)
    assert response.status_code == status, response.text[:500]
    return response.json()


def test_embed_and_similarity_are_tei_shaped_and_equal_the_pipeline(server, pipe):
    one = post(server, "/embed", {"inputs": SHORT[0]})
    assert np.asarray(one).shape == (1, 32)  # a single string still gives a 2-D list
    many = np.asarray(post(server, "/embed", {"inputs": SHORT[:3] + [LONG]}))
    np.testing.assert_allclose(many, pipe.embed(SHORT[:3] + [LONG], normalize=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    raw = np.asarray(post(server, "/embed", {"inputs": [SHORT[1]], "normalize": False}))
    np.testing.assert_allclose(raw[0], pipe.embed(SHORT[1], normalize=False), atol=1e-5)
    scores = post(server, "/similarity", {"inputs": {"source_sentence": SHORT[0], "sentences": SHORT[1:4]}})
    np.testing.assert_allclose(scores, pipe.similarity([SHORT[0]], SHORT[1:4])[0], atol=1e-5)


def test_predict_follows_tei_input_grammar(server, pipe):
    single = post(server, "/predict", {"inputs": SHORT[0]})
    assert [item["label"] for item in single][0] == pipe(SHORT[0])["topic"]["label"]
    assert sorted(item["label"] for item in single) == sorted(SERVE_TASKS[0]["labels"])  # every label, best first
    assert [item["score"] for item in single] == sorted((item["score"] for item in single), reverse=True)
    assert sum(item["score"] for item in single) == pytest.approx(1.0, abs=1e-5)
    assert single[0]["score"] == pytest.approx(pipe(SHORT[0])["topic"]["score"], abs=1e-5)

    pair = post(server, "/predict", {"inputs": [SHORT[0], SHORT[1]]})  # two strings: ONE pair
    expected_pair = pipe({"text": SHORT[0], "text_pair": SHORT[1]})["topic"]
    assert isinstance(pair[0], dict) and pair[0]["label"] == expected_pair["label"]
    assert pair[0]["score"] == pytest.approx(expected_pair["score"], abs=1e-5)

    batch = post(server, "/predict", {"inputs": [[SHORT[2]], [SHORT[0], SHORT[1]]]})
    assert len(batch) == 2 and batch[0][0]["label"] == pipe(SHORT[2])["topic"]["label"]
    assert batch[1][0]["label"] == pair[0]["label"]
    assert batch[1][0]["score"] == pytest.approx(pair[0]["score"], abs=1e-5)

    raw = post(server, "/predict", {"inputs": SHORT[0], "raw_scores": True})
    logits = {item["label"]: item["score"] for item in raw}
    probabilities = np.exp(list(logits.values())) / np.exp(list(logits.values())).sum()
    assert dict(zip(logits, probabilities)) == pytest.approx({i["label"]: i["score"] for i in single}, abs=1e-5)


def test_every_head_has_its_route(server, pipe):
    expected = pipe(SHORT[1])
    flags = post(server, "/heads/flags/predict", {"inputs": SHORT[1]})  # every label's sigmoid, best first
    over = [item for item in flags if item["score"] >= 0.5]
    assert [item["label"] for item in over] == [item["label"] for item in expected["flags"]]
    rating = post(server, "/heads/rating/predict", {"inputs": SHORT[1]})
    assert list(rating[0]) == ["score"] and rating[0]["score"] == pytest.approx(expected["rating"]["score"], abs=1e-4)

    tagged = post(server, "/heads/ner/tag", {"inputs": [SHORT[1], SHORT[3]]})
    for entities, text in zip(tagged, [SHORT[1], SHORT[3]]):
        reference = pipe(text)["ner"]
        assert entities and [entity["word"] for entity in entities] == [entity["text"] for entity in reference]
        assert [(e["entity_group"], e["start"], e["end"]) for e in entities] == [
            (e["entity"], e["start"], e["end"]) for e in reference]
        assert all(text[e["start"]:e["end"]] == e["word"] for e in entities)

    everything = post(server, "/predict_all", {"inputs": [SHORT[1], {"text": SHORT[2], "text_pair": SHORT[3]}, LONG]})
    assert_same_outputs(everything, pipe([SHORT[1], {"text": SHORT[2], "text_pair": SHORT[3]}, LONG]))
    one = post(server, "/predict_all", {"inputs": SHORT[4], "return_tags": True})
    assert one["tags"]["ner"] == pipe(SHORT[4], return_tags=True)["tags"]["ner"]


def test_info_health_metrics_docs_and_page(server):
    info = requests.get(server.url + "/info", timeout=10).json()
    assert [(task["name"], task["kind"]) for task in info["tasks"]] == [
        ("topic", "single_label_classification"), ("flags", "multi_label_classification"), ("rating", "regression"),
        ("ner", "token_classification")]
    assert info["default_head"] == "topic" and info["backend"] == "torch" and info["model_dtype"] == "float32"
    assert info["max_input_length"] == 128 and info["max_client_batch_size"] == 32
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    post(server, "/predict_all", {"inputs": SHORT[0]})
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    for name in ("hf_mtl_request_total", "hf_mtl_batch_size_bucket", "hf_mtl_queue_duration_seconds_count",
                 "hf_mtl_inference_duration_seconds_count", "hf_mtl_request_failure"):
        assert name in metrics
    assert 'hf_mtl_request_total{route="/predict_all"}' in metrics
    schema = requests.get(server.url + "/openapi.json", timeout=10).json()
    assert {"/embed", "/predict", "/similarity", "/predict_all", "/heads/{task}/tag"} <= set(schema["paths"])
    assert requests.get(server.url + "/docs", timeout=10).status_code == 200
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and '<script src="/page/app.js">' in page.text
    for asset in ("/", "/page/app.js", "/page/style.css"):
        text = requests.get(server.url + asset, timeout=10).text
        assert text and "http://" not in text and "https://" not in text  # no CDN: the page works offline


def test_concurrent_clients_get_the_pipelines_outputs(server, pipe, monkeypatch):
    """Requests of many clients share batches; each one's outputs are the pipeline's on its own inputs."""
    batcher, rounds = server.app.state.serve.batcher, []
    run_round = batcher._run_round

    def recorded_round(jobs):
        if not rounds:  # the first round waits for a queue to form, so that the next ones surely mix requests
            deadline = time.monotonic() + 30
            while batcher.queue_size < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
        rounds.append(len(jobs))
        return run_round(jobs)

    monkeypatch.setattr(batcher, "_run_round", recorded_round)
    pool = SHORT + [LONG, {"text": SHORT[0], "text_pair": SHORT[5]}]
    requests_made = [[pool[(seed * 3 + offset) % len(pool)] for offset in range(1 + seed % 3)] for seed in range(48)]
    expected = [pipe(inputs) for inputs in requests_made]
    expected_embeddings = pipe.embed(SHORT, normalize=True)  # TEI normalises by default

    def call(index):
        if index % 4 == 3:  # embeddings in the same rounds as the predictions
            return requests.post(server.url + "/embed", json={"inputs": SHORT}, timeout=120).json()
        return requests.post(server.url + "/predict_all", json={"inputs": requests_made[index]}, timeout=120).json()

    with ThreadPoolExecutor(max_workers=16) as executor:
        results = list(executor.map(call, range(len(requests_made))))
    assert max(rounds) > 1 and len(rounds) < len(requests_made)  # requests did share rounds
    for index, result in enumerate(results):
        if index % 4 == 3:
            np.testing.assert_allclose(result, expected_embeddings, atol=1e-5)
        else:
            assert_same_outputs(result, expected[index])


@pytest.mark.slow
def test_a_one_megabyte_text_is_windowed_like_the_pipeline(server, pipe):
    text = (" ".join(SHORT) + " ") * (1_000_000 // (len(" ".join(SHORT)) + 1))
    assert len(text) > 990_000
    got = post(server, "/heads/topic/predict", {"inputs": text})
    expected = pipe(text)["topic"]
    assert got[0]["label"] == expected["label"] and got[0]["score"] == pytest.approx(expected["score"], abs=1e-5)


def test_huggingface_hub_inference_client(server, pipe, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    # CI runs offline (HF_HUB_OFFLINE=1), which huggingface_hub applies to every URL, this loopback server's too.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    embedding = InferenceClient(model=server.url + "/embed").feature_extraction(SHORT[0])
    assert embedding.shape == (1, 32)
    np.testing.assert_allclose(embedding[0], pipe.embed(SHORT[0], normalize=True), atol=1e-5)
    classified = InferenceClient(model=server.url + "/predict").text_classification(SHORT[0])
    expected = pipe(SHORT[0])["topic"]
    best = classified[0] if isinstance(classified, list) else classified
    assert best.label == expected["label"] and best.score == pytest.approx(expected["score"], abs=1e-5)


TEN_MB = b'{"inputs": "' + b"a" * 10_000_000 + b'"}'
BAD_REQUESTS = [
    # (route, body: JSON-able or raw bytes, status, error_type)
    ("/embed", {"inputs": []}, 400, "empty"),
    ("/embed", {"inputs": ""}, 400, "empty"),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": []}}, 400, "empty"),
    ("/predict_all", TEN_MB, 413, "validation"),
    ("/embed", {"inputs": ["a"] * 100_000}, 413, "validation"),
    ("/predict", {"inputs": [["a"]] * 33}, 413, "validation"),
    ("/embed", {"inputs": "word " * 400, "truncate": False}, 413, "validation"),
    ("/embed", {"inputs": 5}, 422, "validation"),
    ("/embed", {"text": "a"}, 422, "validation"),
    ("/embed", {"inputs": "a", "normalize": [1]}, 422, "validation"),
    ("/predict", {"inputs": [["a", "b", "c"]]}, 422, "validation"),
    ("/predict", {"inputs": [[[["deeply"]]]]}, 422, "validation"),
    ("/predict", b'{"inputs": "\\ud800 lone surrogate"}', 422, "tokenizer"),
    ("/predict_all", {"inputs": {"text": "a", "label": "b"}}, 422, "validation"),
    ("/predict_all", {"inputs": {"text_pair": "b"}}, 422, "validation"),
    ("/predict_all", b"not json at all", 422, "validation"),
    ("/predict_all", b'{"inputs": "caf\xe9 \xff\xfe"}', 422, "validation"),  # invalid UTF-8
    ("/predict_all", b"[" * 100_000 + b"]" * 100_000, 422, "validation"),  # nesting deeper than any parser's stack
    ("/predict_all", b"", 422, "validation"),
    ("/similarity", {"inputs": "a"}, 422, "validation"),
    ("/heads/nope/predict", {"inputs": "a"}, 422, "validation"),
    ("/heads/ner/predict", {"inputs": "a"}, 422, "validation"),  # a token task has no /predict
    ("/heads/topic/tag", {"inputs": "a"}, 422, "validation"),
]


@pytest.mark.parametrize("route, body, status, error_type", BAD_REQUESTS,
                         ids=[f"{route}-{index}" for index, (route, *_) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_tei_errors_and_the_server_stays_healthy(server, route, body, status, error_type):
    if isinstance(body, bytes):
        response = requests.post(server.url + route, data=body, headers={"Content-Type": "application/json"},
                                 timeout=120)
    else:
        response = requests.post(server.url + route, json=body, timeout=120)
    assert response.status_code == status, response.text[:300]
    payload = response.json()
    assert set(payload) == {"error", "error_type"} and payload["error_type"] == error_type and payload["error"]
    assert len(response.content) < 2000  # the error never echoes the input
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    assert post(server, "/predict", {"inputs": "still answering"})[0]["label"]


def test_a_chunked_body_over_the_limit_and_unknown_routes(server):
    def chunks():
        for _ in range(30):
            yield b"a" * 100_000

    response = requests.post(server.url + "/embed", data=chunks(), timeout=60)  # no Content-Length
    assert response.status_code == 413 and response.json()["error_type"] == "validation"
    assert requests.get(server.url + "/embed", timeout=10).status_code == 405
    missing = requests.post(server.url + "/nowhere", json={}, timeout=10)
    assert missing.status_code == 404 and set(missing.json()) == {"error", "error_type"}
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_overload_is_answered_429(model_folder):
    with ThreadedServer(ServeSettings(model=str(model_folder), bf16=False, max_concurrent_requests=1)) as server:
        text = "Angela Merkel met Emmanuel Macron in Berlin. " * 20_000  # ~900 kB: busy for a while
        slow = threading.Thread(target=requests.post, args=(server.url + "/predict_all",),
                                kwargs={"json": {"inputs": text}, "timeout": 300})
        slow.start()
        deadline = time.monotonic() + 60
        while in_flight(server.url) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        response = requests.post(server.url + "/predict", json={"inputs": "one more"}, timeout=60)
        slow.join()
        assert response.status_code == 429
        assert response.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
        assert requests.post(server.url + "/predict", json={"inputs": "one more"}, timeout=60).status_code == 200


def test_health_is_503_until_the_model_is_warm(model_folder, monkeypatch):
    from hf_mtl.serving.app import ServerState

    release, original = threading.Event(), ServerState.load

    def held_load(self):
        release.wait(60)
        original(self)

    monkeypatch.setattr(ServerState, "load", held_load)
    with ThreadedServer(ServeSettings(model=str(model_folder), bf16=False), wait_ready=False) as server:
        health = requests.get(server.url + "/health", timeout=10)
        assert health.status_code == 503 and health.json()["error_type"] == "unhealthy"
        assert requests.post(server.url + "/predict", json={"inputs": "a"}, timeout=10).status_code == 503
        release.set()
        wait_healthy(server.url, time.monotonic() + 60)
        assert requests.post(server.url + "/predict", json={"inputs": "a"}, timeout=10).status_code == 200


def test_default_precision_follows_the_cpu_and_caches_its_measurement(pipe, tmp_path, monkeypatch):
    from hf_mtl.serving import precision

    monkeypatch.setenv("HF_MTL_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_MTL_NATIVE_BF16", "0")
    assert precision.choose_bf16(pipe, "torch", None)[0] is False  # emulated bf16: float32 without measuring
    assert precision.choose_bf16(pipe, "torch", True)[0] is True
    monkeypatch.setenv("HF_MTL_NATIVE_BF16", "1")
    measured = []
    monkeypatch.setattr(precision, "measure", lambda pipe: measured.append(1) or {"float32": 1.0, "bf16": 0.5})
    bf16, why = precision.choose_bf16(pipe, "torch", None)
    assert bf16 is True and "2.00x" in why and len(measured) == 1
    assert precision.choose_bf16(pipe, "torch", None)[0] is True and len(measured) == 1  # read from the cache
    cache = json.loads((tmp_path / "serve_precision.json").read_text())
    key = precision.machine_key(pipe, "torch")
    cache[key] = {"float32": 1.0, "bf16": 1.08}  # bf16 no faster: float32 stays the default
    (tmp_path / "serve_precision.json").write_text(json.dumps(cache))
    assert precision.choose_bf16(pipe, "torch", None)[0] is False
    assert precision.choose_bf16(pipe, "onnx", None)[0] is False


def test_a_bi_encoder_head_scores_pairs_on_predict_all_and_is_not_a_predict_head(tmp_path, tokenizer):
    tasks = [{"name": "sim", "type": "sentence_similarity", "loss": "cosent"}, SERVE_TASKS[0]]
    folder = build_scaled_tiny_model(tmp_path / "model", tokenizer, tasks)
    pair = {"text": "Paris is lovely in spring", "text_pair": "Lyon is pretty in May"}
    expected = MultiTaskPipeline(str(folder), bf16=False)([pair, "Paris is lovely"])
    with ThreadedServer(ServeSettings(model=str(folder), bf16=False)) as server:
        both = post(server, "/predict_all", {"inputs": [pair, "Paris is lovely"]})
        assert both[0]["sim"]["score"] == pytest.approx(expected[0]["sim"]["score"], abs=1e-5)
        assert "sim" not in both[1] and both[1]["topic"]["label"] == expected[1]["topic"]["label"]
        assert requests.get(server.url + "/info", timeout=10).json()["default_head"] == "topic"
        post(server, "/heads/sim/predict", {"inputs": "Paris"}, status=422)
