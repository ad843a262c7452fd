"""bench/memory.py without running a case: its synthetic rows have the case's exact length, its configs are valid
run configs, and its table names every case (the measured figures are in bench/results/memory.json)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, load_bench_script

MEMORY = REPO_ROOT / "bench" / "memory.py"


@pytest.fixture
def memory(monkeypatch):
    """bench/memory.py as a module."""
    return load_bench_script(monkeypatch, "memory")


def test_list_names_every_case():
    listed = subprocess.run([sys.executable, str(MEMORY), "--list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    for engine in ("one", "ddp", "fsdp", "lora"):
        assert f"minilm_{engine}_b8_s128" in listed.stdout and f"bert_large_{engine}_b4_s128" in listed.stdout


@pytest.mark.parametrize("seq", [64, 256])
def test_synthetic_rows_have_exactly_the_sequence_length(memory, tmp_path, tokenizer, seq):
    folder = memory.synthetic_data(tmp_path, rows=3, seq=seq)
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert len(tokenizer(row["tokens"], is_split_into_words=True)["input_ids"]) == seq
        assert len(row["tags"]) == len(row["tokens"])


def test_case_config_is_a_valid_run_config(memory, tmp_path):
    from hf_mtl.train import parse_arguments

    config = memory.case_config(memory.CASES["minilm_lora_b8_s128"], tmp_path, tmp_path / "out")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    model_args, data_args, training_args = parse_arguments([str(path)])
    assert training_args.lora["r"] == 8 and data_args.max_seq_length == 128
    assert training_args.per_device_train_batch_size == 8 and training_args.max_steps == memory.STEPS


def test_table_shows_measured_and_missing_cases(memory):
    name = "minilm_fsdp_b8_s128"
    result = dict(memory.CASES[name], processes=2, peak_rss_mib_per_process=[1300.4, 1290.0],
                  rss_at_train_start_mib_per_process=[900.0, 880.2], trainable_parameters="22,566,916",
                  environment={"cpu": "CPU", "cpu_count": 2, "python": "3", "torch": "2", "transformers": "5",
                               "torch_threads": 2, "native_bf16": True, "cpu_bf16_flags": ["avx512_bf16"]})
    table = memory.table_markdown({name: result})
    assert table.startswith("Machine: CPU, 2 CPU cores, native bf16 (avx512_bf16), torch threads 2;")
    assert f"| {name} | minilm | fsdp | 2 | 8 | 128 | 22,566,916 | 900 / 880 | 1,300 / 1,290 |" in table
    assert "| bert_large_fsdp_b4_s128 | bert_large | fsdp | | 4 | 128 | not run | | |" in table
