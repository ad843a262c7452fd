"""CI smoke test of bench/crf_backends.py: a tiny random encoder with SNIPS intent + CRF slot heads, seconds."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, SHARED_DATA, load_bench_script

SCRIPT = REPO_ROOT / "bench" / "crf_backends.py"


def test_smoke_compares_every_backend_and_writes_its_section(tmp_path, tiny_encoder, monkeypatch):
    if not (SHARED_DATA / "snips").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project's own checkouts)")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from transformers import AutoTokenizer

    from hf_mtl import MultiTaskModel

    benchlib = load_bench_script(monkeypatch, "benchlib")
    intents, tags = benchlib.snips_labels()
    tasks = benchlib.snips_tasks(intents, tags)
    tasks[1]["crf"] = True
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(str(tiny_encoder), tasks=tasks)
    with torch.no_grad():  # emissions and transitions far from ties, so that backends decide alike
        model.heads["slots"].classifier.weight.normal_(std=2.0)
        model.heads["slots"].crf.transitions.normal_(std=2.0)
    model.save_pretrained(tmp_path / "crf")
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(tmp_path / "crf")
    out, markdown = tmp_path / "crf.json", tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\n## Speed\n\nkept\n", encoding="utf-8")

    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1", "--crf-model", str(tmp_path / "crf"),
                           "--export-dir", str(tmp_path / "export"), "--out", str(out), "--markdown", str(markdown)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["export"]["crf_tasks"] == ["slots"]
    assert (tmp_path / "export" / "crf" / "crf.safetensors").is_file()
    assert json.loads((tmp_path / "export" / "softmax" / "config.json").read_text())["tasks"][1].get("crf") is None
    rows = {(row["method"], row["split"]): row for row in result["agreement"]}
    assert rows[("onnx_fp32", "test")]["sentences_predicted_differently"] == 0
    assert rows[("onnx_fp32", "test")]["reached"] is True
    int8 = rows[("onnx_int8", "dev")]
    assert int8["slot_f1_difference"] == pytest.approx(int8["slot_f1"] - int8["torch_fp32_slot_f1"])
    openvino_installed = "error" not in rows[("openvino_fp32", "test")]
    ratios = {row["crf"]: row for row in result["throughput"]["ratios"]}
    onnx = ratios["onnx_fp32"]
    methods = result["throughput"]["methods"]
    assert onnx["ratio"] == pytest.approx(methods["onnx_fp32"]["sentences_per_second"]
                                          / methods["onnx_fp32_softmax"]["sentences_per_second"])
    assert (ratios["openvino_fp32"]["ratio"] is not None) is openvino_installed
    text = markdown.read_text()
    assert "kept" in text and "<!-- crf-backends:begin -->" in text and "| onnx_fp32 | test | 64 | 0 |" in text
