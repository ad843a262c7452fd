"""CI smoke test of the quality benchmark (bench/quality.py --smoke): a few dozen steps, never the full benchmark."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SHARED_DATA, load_bench_script

QUALITY = REPO_ROOT / "bench" / "quality.py"


def run_quality(*args, timeout=120):
    return subprocess.run([sys.executable, str(QUALITY), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_rows_read_the_chosen_recipe_and_earlier_rows_keep_recipe_v1(monkeypatch):
    """The rows run before the recipe search stay reproducible after the recipe file changed."""
    quality = load_bench_script(monkeypatch, "quality")
    v1, chosen = quality.snips_recipe_v1(), quality.snips_recipe()
    assert v1["num_train_epochs"] == 6 and not any(task.get("crf") for task in v1["tasks"])
    assert any(task.get("crf") for task in chosen["tasks"] if task["type"] == "token_classification")
    for seed in (1, 2, 3):
        assert quality.ROWS[f"snips_recipe_seed{seed}"]["config"]() == dict(chosen, seed=seed)
        assert quality.ROWS[f"snips_mtl_seed{seed}"]["config"]() == dict(v1, seed=seed)
    for name in ("snips_slots_only", "snips_full_ft", "snips_dev_crf", "pairs_snips_mtl"):
        (slots,) = [task for task in quality.ROWS[name]["config"]()["tasks"] if task["name"] == "slots"]
        assert slots.get("crf", False) == (name == "snips_dev_crf"), name
    assert quality.ROWS["snips_slots_only"]["config"]()["num_train_epochs"] == 6


def test_seed_families_group_the_rows_that_differ_only_by_the_seed(monkeypatch):
    quality = load_bench_script(monkeypatch, "quality")
    families = quality.seed_families()
    chosen = quality.snips_recipe()
    for prefix, task in (("snips_recipe_intent_only", "intent"), ("snips_recipe_slots_only", "slots")):
        assert families[f"{prefix}_seed1"] == [f"{prefix}_seed{seed}" for seed in (1, 2, 3)]
        for seed in (1, 2, 3):
            assert quality.ROWS[f"{prefix}_seed{seed}"]["config"]() == dict(quality.only_tasks(chosen, {task}), seed=seed)
    # the stock intent classifier reads the intent-only row's config: its kind keeps the two families apart
    assert families["snips_recipe_hf_seqcls_seed1"] == [f"snips_recipe_hf_seqcls_seed{seed}" for seed in (1, 2, 3)]
    (stock_slots,) = quality.ROWS["snips_recipe_hf_tokcls_seed1"]["config"]()["tasks"]
    assert "crf" not in stock_slots and quality.ROWS["snips_recipe_hf_tokcls_seed1"]["config"]()["num_train_epochs"] == 12
    for first in ("conll_ag_mtl_topic_w05", "conll_ner_only", "ag_topic_only"):  # seed 1 carries no suffix
        assert families[first] == [first, f"{first}_seed2", f"{first}_seed3"]
    for names in families.values():
        assert sorted(quality.ROWS[name]["config"]()["seed"] for name in names) == [1, 2, 3], names
    assert "snips_dev_e12_crf" not in families and "snips_full_ft" not in families  # single rows, other settings
    assert quality.ROWS["conll_ag_mtl_per_row"]["config"]()["loss_reduction"] == "per_row"
    assert quality.ROWS["conll_ag_mtl_topic_w05_seed2"]["config"]()["loss_weights"] == {"topic": 0.5}


def test_table_adds_a_mean_row_for_a_seed_family_with_two_results(monkeypatch, tmp_path):
    quality = load_bench_script(monkeypatch, "quality")
    environment = {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "cpu_capability": "AVX512",
                   "native_bf16": True, "python": "3", "torch": "2", "transformers": "5", "platform": "Linux"}
    for name, seed, ner_f1, seconds in (("conll_ner_only", 1, 0.85, 400.0), ("conll_ner_only_seed2", 2, 0.87, 420.0),
                                        ("ag_topic_only", 1, None, 300.0)):
        result = {"row": name, "seed": seed, "command": f"run {name}", "started_utc": f"2026-12-0{seed}",
                  "environment": environment, "precision": "bf16", "train_seconds": seconds, "test_seconds": 20.0,
                  "metrics": {"test_ner_f1": ner_f1, "eval_ner_f1": ner_f1, "test_topic_accuracy": 0.9}}
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
    for seed in (1, 2):  # a slots-only row's file has a sentence accuracy; the table shows it for joint rows only
        result = {"row": f"snips_recipe_slots_only_seed{seed}", "seed": seed, "command": "run", "started_utc": "2026",
                  "environment": environment, "precision": "bf16", "train_seconds": 700.0, "test_seconds": 2.0,
                  "metrics": {"test_slots_f1": 0.96, "sentence_accuracy": 0.9}}
        (tmp_path / f"snips_recipe_slots_only_seed{seed}.json").write_text(json.dumps(result))
    table = quality.table_markdown(tmp_path).splitlines()
    mean_rows = {cells[0]: cells for cells in ([cell.strip() for cell in line.strip("|").split("|")]
                                              for line in table if "(mean ± std" in line)}
    # one family with a single result (ag_topic_only) gets no mean row
    assert sorted(mean_rows) == ["**conll_ner_only (mean ± std over seeds 1, 2)**",
                                 "**snips_recipe_slots_only (mean ± std over seeds 1, 2)**"]
    cells = mean_rows["**conll_ner_only (mean ± std over seeds 1, 2)**"]
    assert cells[2:8] == ["86.00 ± 1.41", "90.00 ± 0.00", "86.00 ± 1.41", "–", "410 ± 14", "20.0 ± 0.0"]
    assert cells[9] == "M1 bf16, M1 bf16"
    assert mean_rows["**snips_recipe_slots_only (mean ± std over seeds 1, 2)**"][2:5] == ["–", "96.00 ± 0.00", "–"]


def test_machine_label_names_the_cpu_family_and_model_where_recorded(monkeypatch):
    quality = load_bench_script(monkeypatch, "quality")
    env = quality.environment()
    cpuinfo = Path("/proc/cpuinfo")
    if not (cpuinfo.exists() and "cpu family" in cpuinfo.read_text()):
        pytest.skip("no x86 /proc/cpuinfo here: nothing to record the family from")
    assert re.fullmatch(r"cpu family \d+ model \d+", env["cpu_family_model"]), env
    assert quality.machine_label(env).startswith(f"{env['cpu']} ({env['cpu_family_model']}), ")
    older = {key: value for key, value in env.items() if key != "cpu_family_model"}  # results written before it
    assert quality.machine_label(older).startswith(f"{env['cpu']}, {env['cpu_count']} CPU cores")


def test_list_names_every_row():
    listed = run_quality("--list", "--results-dir", str(REPO_ROOT / "bench" / "results"))
    assert listed.returncode == 0, listed.stderr
    for row in ("snips_recipe_seed1", "snips_recipe_seed3", "snips_mtl_seed1", "snips_mtl_seed3", "snips_intent_only",
                "snips_slots_only", "snips_hf_seqcls", "snips_hf_tokcls", "snips_mtl_frozen", "conll_ag_mtl_proportional", "conll_ag_mtl_temperature",
                "conll_ner_only", "ag_topic_only", "conll_ag_mtl_frozen", "snips_full_ft", "snips_lora_r8",
                "snips_lora_r16"):
        assert row in listed.stdout


@pytest.mark.parametrize("row", ["snips_recipe_seed1", "snips_hf_tokcls", "snips_lora_r8"])
def test_smoke_writes_a_result_file(row, tmp_path, tiny_encoder):
    if not (SHARED_DATA / "snips").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project's own checkouts)")
    if row == "snips_lora_r8":
        pytest.importorskip("peft", reason="peft is not installed (pip install 'hf_mtl[peft]')")
    results = tmp_path / "results"
    done = run_quality("--smoke", "--smoke-row", row, "--model", str(tiny_encoder), "--results-dir", str(results))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((results / f"{row}.json").read_text())
    assert result["row"] == row and result["smoke"] is True
    assert result["steps"] == 24
    assert result["train_seconds"] > 0 and result["test_seconds"] > 0
    metrics = result["metrics"]
    assert 0 <= metrics["test_slots_f1"] <= 1
    assert 0 <= metrics["sentence_accuracy"] <= 1 and metrics["sentences"] == 32
    if row != "snips_hf_tokcls":
        assert 0 <= metrics["test_intent_accuracy"] <= 1
        assert result["peak_rss_mib"] > 100 and result["seconds_per_step"] > 0
    if row == "snips_lora_r8":  # adapters and heads train; the tiny encoder's 1M weights stay frozen
        assert 0 < result["trainable_parameters"] < result["total_parameters"] / 10, result
        assert result["config"]["lora"] == {"r": 8, "alpha": 16}
