"""CI smoke test of the speed benchmark (bench/speed.py --smoke, and the modules beside it that it runs): a tiny random
encoder, seconds, never the benchmark."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, SHARED_DATA, load_bench_script

SPEED = REPO_ROOT / "bench" / "speed.py"
INFERENCE = ["hf_mtl_pipeline_default", "hf_mtl_pipeline_fp32", "hf_mtl_pipeline_bf16", "hf_mtl_compiled_fp32",
             "hf_mtl_compiled_bf16", "hf_mtl_onnx_fp32", "hf_mtl_onnx_int8", "hf_two_models_fp32",
             "hf_two_models_bf16", "hf_pipelines_fp32", "hf_pipelines_bf16"]
TRAINING = [f"{method}_{precision}" for precision in ("fp32", "bf16") for method in
            ("hf_mtl_joint", "hf_mtl_joint_foreach_adamw", "hf_mtl_joint_fused_adamw", "hf_mtl_joint_compiled",
             "hf_two_models")]
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"


def run_speed(*args, timeout=240):
    return subprocess.run([sys.executable, str(SPEED), *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def trained_snips_model(benchlib, encoder, folder):
    """The tiny encoder with SNIPS intent + slot heads, saved as a training run leaves its model."""
    from transformers import AutoTokenizer

    from hf_mtl import MultiTaskModel

    model = MultiTaskModel.from_encoder(str(encoder), tasks=benchlib.snips_tasks(*benchlib.snips_labels()))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(encoder).save_pretrained(folder)
    return folder


def test_smoke_writes_results_and_replaces_its_markdown_section(tmp_path, tiny_encoder, bench):
    if not (SHARED_DATA / "snips").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project's own checkouts)")
    out, markdown = tmp_path / "out" / "speed.json", tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nQuality intro.\n\n## Results\n\nkept as it is\n", encoding="utf-8")
    args = ("--smoke", "--threads", "1", "--model", tiny_encoder, "--out", out, "--markdown", markdown,
            "--export-dir", tmp_path / "export")
    trained = trained_snips_model(bench("benchlib"), tiny_encoder, tmp_path / "trained")

    done = run_speed(*args, "--backends", "torch,compiled,onnx", "--trained-model", trained, "--profile", timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["environment"]["torch_threads"] == 1
    assert {p["precision"] for p in result["peak"]} == {"fp32", "bf16"}
    assert all(p["gflops"] > 0 for p in result["peak"])
    assert result["bf16"]["emulated"] is (not result["environment"]["native_bf16"])

    inference = result["inference"]
    assert sorted(inference) == sorted(INFERENCE)
    for key, row in inference.items():
        assert "error" not in row, (key, row.get("error"))
        assert row["sentences"] > 0 and row["sentences_per_second"] > 0, key
        assert row["computed_tokens"] >= row["real_tokens"] > 0, key
        assert row["model_gflops"] > 0, key
        # int8 has no measured peak to divide by
        assert (row["share_of_peak"] is None) if row["precision"] == "int8" else (row["share_of_peak"] > 0), key
        assert row["peak_rss_mib"] > 0 and row["load_seconds"] > 0 and row["first_call_seconds"] > 0, key
        assert ("first_call_seconds_warm_cache" in row) is key.startswith("hf_mtl_compiled"), key
    # Two stock models compute twice the FLOPs of one joint pass over the same tokens.
    assert inference["hf_two_models_fp32"]["model_gflop"] > inference["hf_mtl_pipeline_fp32"]["model_gflop"]
    # Every backend gets the same padded batches from the shared preprocessing, so the same tokens and FLOPs.
    for key in ("hf_mtl_compiled_fp32", "hf_mtl_onnx_fp32", "hf_mtl_onnx_int8"):
        for field in ("computed_tokens", "real_tokens", "forward_passes", "model_gflop"):
            assert inference[key][field] == inference["hf_mtl_pipeline_fp32"][field], (key, field)
    assert result["export"]["file_mib"].keys() == {"model.onnx", "model_int8.onnx"}

    for name, ratio in result["ratios"].items():
        ours, theirs = inference[ratio["ours"]], inference[ratio["theirs"]]
        assert ratio["ratio"] == pytest.approx(ours["sentences_per_second"] / theirs["sentences_per_second"]), name
        assert ratio["reached"] is (ratio["ratio"] >= ratio["target"]), name

    assert sorted(result["training"]) == sorted(TRAINING)
    for key, row in result["training"].items():
        assert "error" not in row, (key, row.get("error"))
        assert row["tokens_per_second"] > 0 and row["steps"] > 0, key
        assert row["computed_tokens"] >= row["real_tokens"] > 0, key
    padding = result["padding"]
    assert padding["pad_to_128"] > padding["training_group_by_length_32"] >= 1
    assert padding["inference_length_sorted_64"] >= 1
    assert all(row["first_step_seconds"] > 0 for row in result["training"].values())
    assert result["bf16_accuracy"]["fp32"]["sentences"] == result["bf16_accuracy"]["bf16"]["sentences"] == 128
    agreement = {(row["method"], row["split"]): row for row in result["backend_accuracy"]}
    assert set(agreement) == {("hf_mtl_pipeline_bf16", "dev"), ("hf_mtl_compiled_bf16", "dev"),
                              ("hf_mtl_onnx_fp32", "test"), ("hf_mtl_onnx_int8", "dev")}
    for row in agreement.values():
        assert row["sentences"] == 128 and 0 <= row["sentences_predicted_differently"] <= 128
        if row["split"] == "test":  # an fp32 export must predict exactly as torch fp32
            assert row["reached"] is (row["sentences_predicted_differently"] == 0)
        else:
            worst = max(abs(row["intent_difference"]), abs(row["slot_f1_difference"]))
            assert row["target"] == (0.3 if row["method"].endswith("int8") else 0.2)
            assert row["reached"] is (worst <= row["target"])
    assert "predictions" not in json.dumps(result)
    profile = (out.parent / "speed_profile.txt").read_text()
    assert "self CPU" in profile and "ONNX Runtime: operator kernel time" in profile
    assert profile.count("\n== ") == 5 and "== hf_mtl_onnx_int8 (" in profile  # default, torch, compiled, 2 onnx

    first = markdown.read_text(encoding="utf-8")
    assert first.count(BEGIN) == 1 and first.count(END) == 1 and first.count("## Speed") == 1
    assert first.startswith("# Benchmarks\n\nQuality intro.\n\n## Results\n\nkept as it is\n")
    section = first[first.index(BEGIN):first.index(END)]
    assert "| hf_two_models | fp32 |" in section and "| hf_mtl_joint | bf16 |" in section
    assert "| hf_mtl_onnx_fp32 | test | 128 |" in section and "| hf_mtl_onnx | int8 |" in section

    again = run_speed(*args, "--backends", "torch")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    second = markdown.read_text(encoding="utf-8")
    assert second.count(BEGIN) == 1 and second.count(END) == 1 and second.count("## Speed") == 1
    assert second[:second.index(BEGIN)] == first[:first.index(BEGIN)]
    assert second != first  # the section is the new run's (its date and timings), not the old one
    assert "skipped" in json.loads(out.read_text())["bf16_accuracy"] and "hf_mtl_onnx" not in second
    assert json.loads(out.read_text())["environment"]["date"] in second


@pytest.fixture
def bench(monkeypatch):
    """bench/<name>.py as a module: speed (the run's plan), speed_report (summary, ratios, markdown), speed_inference
    (the methods and their turns), speed_training (steps, length-grouped batches), benchlib (SNIPS rows and labels)."""
    return lambda name: load_bench_script(monkeypatch, name)


def test_inference_results_join_timings_memory_and_errors(bench):
    report = bench("speed_report")

    def timed(method, seconds_all):
        job = dict(kind="infer", method=method, precision="fp32", sentences=100)
        return dict(job=job, sentences=100, seconds=sorted(seconds_all)[1], seconds_all=seconds_all,
                    sentences_per_second=100 / sorted(seconds_all)[1])

    ours, theirs = timed("hf_mtl_pipeline", [1.0, 1.5, 1.2]), timed("hf_two_models", [2.0, 2.7, 2.4])
    fp32 = [dict(method="hf_mtl_pipeline", precision="fp32"), dict(method="hf_two_models", precision="fp32")]
    bf16 = [dict(method="hf_pipelines", precision="bf16")]
    results = [
        dict(job=dict(kind="infer", methods=fp32, sentences=100),
             methods={"hf_mtl_pipeline_fp32": ours, "hf_two_models_fp32": theirs}),
        dict(job=dict(kind="infer", methods=bf16, sentences=8), error="RuntimeError: no bf16"),
        dict(job=dict(kind="memory", method="hf_two_models", precision="fp32"), peak_rss_mib=420.0),
        dict(job=dict(kind="memory", method="hf_mtl_pipeline", precision="fp32"), error="E"),
        dict(job=dict(kind="train", method="hf_two_models", precision="fp32"), tokens_per_second=1.0),
    ]
    inference = report.inference_results(results)

    assert sorted(inference) == ["hf_mtl_pipeline_fp32", "hf_pipelines_bf16", "hf_two_models_fp32"]
    assert inference["hf_two_models_fp32"]["peak_rss_mib"] == 420.0
    assert inference["hf_mtl_pipeline_fp32"]["peak_rss_mib"] is None  # its memory job failed: shown as "–"
    assert inference["hf_pipelines_bf16"]["error"] == "RuntimeError: no bf16"
    assert inference["hf_pipelines_bf16"]["job"]["sentences"] == 8

    ratio = report.ratio(inference, "hf_mtl_pipeline_fp32", "hf_two_models_fp32", 1.9)
    assert ratio["ratio"] == pytest.approx(2.4 / 1.2) and ratio["reached"] is True
    assert ratio["per_repeat"] == pytest.approx([2.0, 1.8, 2.0])
    assert report.ratio(inference, "hf_mtl_pipeline_fp32", "hf_pipelines_bf16", 3)["ratio"] is None


def test_inference_methods_take_turns_block_by_block(bench, monkeypatch):
    inference = bench("speed_inference")
    calls = []

    class Recorder:  # stands in for PassRecorder: no model behind the fake methods
        def __init__(self, model):
            self.passes, self.shape = [], {"non_embedding_params": 1}

        def totals(self):
            return dict(real_tokens=10, computed_tokens=11, forward_passes=1, largest_batch=4, flops=1e9)

    def method(name, fails_on_block=None):
        def build(job):
            def run(rows):
                calls.append((name, rows[0]["index"]))
                if rows[0]["index"] == fails_on_block:
                    raise RuntimeError("out of memory")
            return run, [object()], dict(precision=job["precision"], settings="fake")
        return build

    monkeypatch.setattr(inference, "BLOCK_SENTENCES", 3)
    monkeypatch.setattr(inference, "PassRecorder", Recorder)
    monkeypatch.setattr(inference, "read_snips", lambda split: [dict(index=i) for i in range(9)])
    methods = {"a": method("a"), "b": method("b"), "c": method("c", fails_on_block=3)}
    monkeypatch.setattr(inference, "INFER_METHODS", methods)
    job = dict(kind="infer", sentences=9, repeats=2, methods=[dict(method=m, precision="fp32") for m in "abc"])
    results = inference.run_inference(job)["methods"]

    timed = calls[3:]  # after one warm-up call per method
    # Repeat 1: block 0 a b c; block 3 b c a (c fails there and leaves the rotation); block 6 a b.
    # Repeat 2 starts one place further: b a; a b; b a.
    assert timed[:3] == [("a", 0), ("b", 0), ("c", 0)]
    assert timed[3:6] == [("b", 3), ("c", 3), ("a", 3)]
    assert timed[6:8] == [("a", 6), ("b", 6)]
    assert timed[8:] == [("b", 0), ("a", 0), ("a", 3), ("b", 3), ("b", 6), ("a", 6)]
    assert results["c_fp32"]["error"] == "RuntimeError: out of memory"
    assert len(results["a_fp32"]["seconds_all"]) == 2 and results["a_fp32"]["seconds"] > 0
    assert results["a_fp32"]["sentences"] == 9 and results["a_fp32"]["padding_ratio"] == pytest.approx(1.1)


def test_length_grouped_batches_cover_every_row_once(bench):
    training = bench("speed_training")
    lengths = [(index * 37) % 29 + 3 for index in range(3300)]
    batches = training.length_grouped_batches(lengths, 32)
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    assert all(len(batch) <= 32 for batch in batches)
    megabatch = batches[: training.MEGABATCH_MULT]  # longest first within a mega-batch
    assert [lengths[batch[0]] for batch in megabatch] == sorted((lengths[batch[0]] for batch in megabatch), reverse=True)
    assert 1 <= training.padding_of(batches, lengths) < training.padding_of([list(range(len(lengths)))], lengths)


def test_crf_rows_are_planned_only_with_a_crf_model_and_compared_with_softmax(bench, tmp_path):
    speed, report = bench("speed"), bench("speed_report")
    args = speed.parse_args(["--backends", "torch"])
    methods = {method["method"] for job in speed.plan(args, native=True) if job["kind"] == "infer"
               for method in job["methods"]}
    assert "hf_mtl_pipeline" in methods and "hf_mtl_pipeline_crf" not in methods
    args = speed.parse_args(["--backends", "torch", "--crf-model", str(tmp_path)])
    jobs = speed.plan(args, native=True)
    crf = [method for job in jobs if job["kind"] == "infer" for method in job["methods"]
           if method["method"] == "hf_mtl_pipeline_crf"]
    assert sorted(method["precision"] for method in crf) == ["bf16", "fp32"]
    assert all(job["crf_trained"] == str(tmp_path) for job in jobs)
    timings = {"hf_mtl_pipeline_fp32": dict(sentences_per_second=100.0, sentences=10, seconds_all=[0.1]),
               "hf_mtl_pipeline_crf_fp32": dict(sentences_per_second=90.0, sentences=10, seconds_all=[1 / 9])}
    target = report.TARGETS["crf_vs_softmax"]
    cost = report.ratio(timings, "hf_mtl_pipeline_crf_fp32", "hf_mtl_pipeline_fp32", target)
    assert cost["ratio"] == pytest.approx(0.9) and cost["reached"] is True
    # The CRF ratios exist only where their rows were planned (the smoke run without --crf-model reads every ratio).
    def crf_ratios(argv):
        summary = report.summarize(speed.parse_args(argv), {"native_bf16": True}, [], {}, {}, {})
        return sorted(name for name in summary["ratios"] if "crf" in name)

    assert crf_ratios(["--backends", "torch"]) == []
    assert crf_ratios(["--backends", "torch", "--crf-model", str(tmp_path)]) == [
        "pipeline_crf_bf16_vs_softmax_bf16", "pipeline_crf_fp32_vs_softmax_fp32"]
