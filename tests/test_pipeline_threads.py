"""One MultiTaskPipeline shared by threads: every call equals the same call made alone (float32, tiny random model)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import TOPIC_NER_TASKS as TASKS
from pipeline_helpers import SENTENCES, assert_same_predictions, build_scaled_tiny_model, raw_text

from hf_mtl import MultiTaskPipeline, cli

SHORT = [raw_text(words) for words, _, _ in SENTENCES]
# Longer than the tiny encoder's 128 positions: read in windows, truncated in pairs and embeddings.
LONG = [" ".join(SHORT * 3), " ".join(SHORT[::-1] * 4) + " Berlin", "张三在北京工作，李四去了上海。" * 12]

# Each job mixes inputs that the tokenizer reads untruncated (to count tokens) with inputs it truncates (windows,
# pairs, embeddings), so a truncation setting left by another thread's call changes the result.
JOBS = [
    lambda pipe: pipe([LONG[0], SHORT[0], LONG[1], SHORT[3]], return_tags=True),
    lambda pipe: pipe(LONG[1], return_tags=True, max_length=40),
    lambda pipe: pipe(
        [{"text": LONG[0], "text_pair": SHORT[1]}, {"text": SHORT[2], "text_pair": SHORT[4]}], return_tags=True
    ),
    lambda pipe: pipe(SHORT + [LONG[2]], return_tags=True),
    lambda pipe: pipe.embed([LONG[1], SHORT[5], LONG[0]]),
    lambda pipe: pipe.similarity([SHORT[0], LONG[0]], [LONG[1], SHORT[6]]),
]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tokenizer):
    return build_scaled_tiny_model(tmp_path_factory.mktemp("threads"), tokenizer, TASKS)


def assert_same_result(result, expected):
    if isinstance(expected, np.ndarray):
        assert result.shape == expected.shape
        np.testing.assert_allclose(result, expected, atol=1e-5)
    else:
        assert_same_predictions(
            result if isinstance(result, list) else [result],
            expected if isinstance(expected, list) else [expected],
            score_tolerance=1e-5,
        )


def assert_threads_give_the_sequential_results(pipe):
    expected = [job(pipe) for job in JOBS]
    tags = [tag for result in expected[0] for tag in result["tags"]["ner"]]
    assert len(set(tags)) > 2 and len(expected[0][0]["words"]) > 128  # varied tags, windows used
    calls = [index % len(JOBS) for index in range(8 * 20)]
    with ThreadPoolExecutor(max_workers=8) as executor:
        futures = [executor.submit(JOBS[index], pipe) for index in calls]
    wrong = []
    for call, (index, future) in enumerate(zip(calls, futures)):
        try:
            assert_same_result(future.result(), expected[index])
        except Exception as error:  # a wrong result, or a crash (mismatched tensor sizes, an index out of range)
            message = (str(error).strip() or type(error).__name__).splitlines()[0]
            wrong.append(f"call {call} (job {index}): {message[:80]}")
    assert not wrong, f"{len(wrong)} of {len(calls)} threaded calls differ from the sequential results: {wrong[:10]}"


def test_eight_threads_give_the_sequential_results(model_folder):
    assert_threads_give_the_sequential_results(MultiTaskPipeline(str(model_folder), bf16=False))


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_eight_threads_on_an_exported_backend(model_folder, backend):
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[backend])
    exported = model_folder.parent / "exported"
    if not exported.is_dir():
        assert cli.main(["export-onnx", "--model", str(model_folder), "--output", str(exported)]) == 0
    assert_threads_give_the_sequential_results(MultiTaskPipeline(str(exported), backend=backend, bf16=False))
