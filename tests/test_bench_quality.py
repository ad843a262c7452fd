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


# ---------------------------------------------------------------------------------------------------------------------
# the continual and distillation settings (issue 29): the rehearsal share, the stop before a row whose starting or
# teacher model is missing, the starting model's scores in a result, and their tables; no training runs

ENVIRONMENT = {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "cpu_capability": "AVX512", "native_bf16": True,
               "python": "3", "torch": "2", "transformers": "5", "platform": "Linux"}


def fake_snips(shared: Path, train_lines: int) -> Path:
    """A JointBERT SNIPS folder under `shared`/snips: line i of each train file names i (seq.out keeps JointBERT's
    trailing space), dev and test a few lines of their own."""
    for split, count in (("train", train_lines), ("dev", 5), ("test", 6)):
        folder = shared / "snips" / split
        folder.mkdir(parents=True)
        (folder / "seq.in").write_text("".join(f"{split} utterance {i}\n" for i in range(count)), encoding="utf-8")
        (folder / "seq.out").write_text("".join(f"O O B-n{i} \n" for i in range(count)), encoding="utf-8")
        (folder / "label").write_text("".join(f"Intent{i}\n" for i in range(count)), encoding="utf-8")
    return shared / "snips"


def kept_indices(train: Path) -> dict:
    """file -> the source line numbers its lines carry (each fake line names its own)."""
    lines = {name: (train / name).read_text(encoding="utf-8").splitlines() for name in ("seq.in", "seq.out", "label")}
    return {"seq.in": [int(line.rsplit(" ", 1)[1]) for line in lines["seq.in"]],
            "seq.out": [int(line.split()[2].removeprefix("B-n")) for line in lines["seq.out"]],
            "label": [int(line.removeprefix("Intent")) for line in lines["label"]]}


# 37 lines: round(3.7) = 4 (not floor's 3); 43: round(4.3) = 4 (not ceil's 5)
@pytest.mark.parametrize("train_lines", [37, 43])
def test_snips_rehearsal_split_keeps_a_seeded_tenth_of_train_aligned_and_copies_dev_and_test(
        monkeypatch, tmp_path, train_lines):
    quality = load_bench_script(monkeypatch, "quality")
    source = fake_snips(tmp_path / "shared", train_lines)
    monkeypatch.setattr(quality, "SHARED", tmp_path / "shared")

    first = quality.snips_rehearsal_split(tmp_path / "runs" / "first")
    second = quality.snips_rehearsal_split(tmp_path / "runs" / "second")
    assert first == tmp_path / "runs" / "first"
    indices = kept_indices(first / "train")
    # the same utterances in the three files, in the file's order, no repeats
    assert indices["seq.in"] == indices["seq.out"] == indices["label"]
    kept = indices["label"]
    assert len(kept) == 4 and kept == sorted(set(kept)) and all(0 <= i < train_lines for i in kept)
    assert kept != list(range(4))  # a sample, not the head of the file
    for name in ("seq.in", "seq.out", "label"):  # seeded: a second folder holds the same bytes
        assert (first / "train" / name).read_bytes() == (second / "train" / name).read_bytes()
    source_lines = (source / "train" / "seq.out").read_text(encoding="utf-8").splitlines()
    assert (first / "train" / "seq.out").read_text(encoding="utf-8") == "".join(
        source_lines[i] + "\n" for i in kept)  # whole lines, trailing space included
    for split in ("dev", "test"):
        for name in ("seq.in", "seq.out", "label"):
            assert (first / split / name).read_bytes() == (source / split / name).read_bytes(), (split, name)
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["first", "second"]  # no staging left


def test_snips_rehearsal_split_is_written_once_and_rebuilt_when_incomplete(monkeypatch, tmp_path):
    quality = load_bench_script(monkeypatch, "quality")
    fake_snips(tmp_path / "shared", 30)
    monkeypatch.setattr(quality, "SHARED", tmp_path / "shared")
    out = quality.snips_rehearsal_split(tmp_path / "rehearsal")
    written = (out / "train" / "label").read_text(encoding="utf-8")

    (out / "train" / "label").write_text("edited\n", encoding="utf-8")
    quality.snips_rehearsal_split(out)
    assert (out / "train" / "label").read_text(encoding="utf-8") == "edited\n"  # complete: not rewritten

    (out / "test" / "label").unlink()  # an incomplete folder is made again, whole
    quality.snips_rehearsal_split(out)
    assert (out / "train" / "label").read_text(encoding="utf-8") == written
    assert (out / "test" / "label").is_file()


def test_snips_rehearsal_split_refuses_train_files_of_different_lengths(monkeypatch, tmp_path):
    quality = load_bench_script(monkeypatch, "quality")
    source = fake_snips(tmp_path / "shared", 20)
    (source / "train" / "label").write_text("Intent0\n" * 19, encoding="utf-8")
    monkeypatch.setattr(quality, "SHARED", tmp_path / "shared")
    with pytest.raises(SystemExit, match="differ in length") as stop:
        quality.snips_rehearsal_split(tmp_path / "rehearsal")
    assert str(source / "train") in str(stop.value)
    assert not (tmp_path / "rehearsal").exists()


@pytest.fixture
def runs_nothing(monkeypatch, tmp_path):
    """bench/quality.py with its repository root in tmp_path and a runner that records the rows instead of training."""
    quality = load_bench_script(monkeypatch, "quality")
    monkeypatch.setattr(quality, "ROOT", tmp_path)
    ran = []

    def record(row, run_dir, extra_args, model):
        ran.append((row["name"], run_dir))
        return {"metrics": {"test_ner_f1": 0.5}}

    monkeypatch.setattr(quality, "run_mtl_row", record)
    monkeypatch.setattr(quality, "run_hf_row", record)
    quality.ran = ran
    return quality


def trained_folder(root: Path, name: str) -> None:
    (root / "bench" / "runs" / name).mkdir(parents=True, exist_ok=True)
    (root / "bench" / "runs" / name / "config.json").write_text("{}")


def test_a_continual_row_stops_before_running_when_its_starting_model_is_missing(runs_nothing, tmp_path):
    quality = runs_nothing
    results, runs = tmp_path / "results", tmp_path / "runs"
    (tmp_path / "bench" / "runs" / "snips_recipe_crf" / "checkpoint-10").mkdir(parents=True)  # no config.json: no model
    for name in ("continual_none", "continual_rehearsal"):
        with pytest.raises(SystemExit) as stop:
            quality.run_row(name, results, runs)
        message = str(stop.value)
        assert message.startswith(f"{name} starts from or learns from trained models that are not there yet")
        assert ("  bench/runs/snips_recipe_crf: python run_mtl.py bench/configs/snips_minilm.json "
                "--output_dir bench/runs/snips_recipe_crf") in message
    assert quality.ran == [] and not results.exists() and not runs.exists()

    trained_folder(tmp_path, "snips_recipe_crf")
    quality.run_row("continual_none", results, runs)
    assert quality.ran == [("continual_none", runs / "continual_none")]
    assert json.loads((results / "continual_none.json").read_text())["metrics"] == {"test_ner_f1": 0.5}


def test_a_distillation_row_names_only_its_missing_teachers(runs_nothing, tmp_path):
    quality = runs_nothing
    trained_folder(tmp_path, "conll_ner_only")
    with pytest.raises(SystemExit) as stop:
        quality.run_row("conll_ag_distill_seed2", tmp_path / "results", tmp_path / "runs")
    lines = str(stop.value).splitlines()[1:]
    assert lines == ["  bench/runs/ag_topic_only: python bench/quality.py --results-dir /tmp/teachers "
                     "--row ag_topic_only"]
    assert quality.ran == []
    # a row whose result exists is skipped before the check: nothing to make
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "conll_ag_distill_seed2.json").write_text("{}")
    assert quality.run_row("conll_ag_distill_seed2", tmp_path / "results", tmp_path / "runs") == (
        tmp_path / "results" / "conll_ag_distill_seed2.json")


@pytest.mark.parametrize("with_start", [True, False])
def test_run_mtl_row_reads_the_starting_models_scores_as_start_metrics(monkeypatch, tmp_path, with_start):
    """run_mtl_row on the files a run_mtl.py run leaves (faked: no process starts): `start_results.json`'s eval/test
    numbers become `start_*` metrics beside the end's, which they never overwrite."""
    import os
    from types import SimpleNamespace

    quality = load_bench_script(monkeypatch, "quality")
    run_dir = tmp_path / "runs" / "continual_none"
    end = {"test_intent_accuracy": 0.97, "test_slots_f1": 0.955, "test_ner_f1": 0.84, "test_runtime": 3.0}
    start = {"eval_intent_accuracy": 0.99, "test_intent_accuracy": 0.9857, "test_slots_f1": 0.965,
             "test_note": "not a number", "epoch": 0}
    commands = []

    def fake_run(command, cwd, stdout, stderr):
        commands.append(command)
        files = {"train_results.json": {"train_runtime": 50.0}, "test_results.json": end,
                 "eval_results.json": {"eval_ner_f1": 0.9, "eval_intent_accuracy": 0.96},
                 "trainer_state.json": {"global_step": 10, "epoch": 2.0, "log_history": []},
                 "training_args.json": {"bf16": False}, **({"start_results.json": start} if with_start else {})}
        for name, content in files.items():
            (run_dir / name).write_text(json.dumps(content))
        (run_dir / "test_predictions.jsonl").write_text(
            json.dumps({"words": ["a"], "intent": {"gold": "x", "pred": "x"}}) + "\n")
        return SimpleNamespace(pid=4321)

    monkeypatch.setattr(quality.subprocess, "Popen", fake_run)
    monkeypatch.setattr(os, "wait4", lambda pid, options: (pid, 0, SimpleNamespace(ru_maxrss=2048)))
    outcome = quality.run_mtl_row(quality.ROWS["continual_none"], run_dir)
    assert commands and commands[0][1] == "run_mtl.py"
    metrics = outcome["metrics"]
    starts = {key: value for key, value in metrics.items() if key.startswith("start_")}
    if not with_start:
        assert starts == {}
        assert quality.drift_cell({"metrics": metrics}, "test_slots_f1") == "95.50"  # the end alone
        return
    assert starts == {"start_eval_intent_accuracy": 0.99, "start_test_intent_accuracy": 0.9857,
                      "start_test_slots_f1": 0.965}
    assert metrics["test_intent_accuracy"] == 0.97 and metrics["eval_intent_accuracy"] == 0.96
    assert quality.drift_cell({"metrics": metrics}, "test_intent_accuracy") == "98.57 → 97.00 (-1.57)"
    assert outcome["seconds_per_step"] == 5.0 and outcome["peak_rss_mib"] == 2.0


def write_result(results: Path, name: str, seed=1, metrics=None, **fields) -> None:
    result = {"row": name, "seed": seed, "command": f"run {name}", "started_utc": "2026-12-01",
              "environment": ENVIRONMENT, "precision": "bf16", "train_seconds": 100.0, "test_seconds": 10.0,
              "metrics": metrics or {}, **fields}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(result))


def table_rows(markdown: str, section: str) -> dict:
    """The first cell -> the cells of every table line of one `### section` of the generated markdown."""
    lines = markdown.split(f"### {section}", 1)[1].split("\n### ", 1)[0].splitlines()
    return {cells[0]: cells for cells in ([cell.strip() for cell in line.strip().strip("|").split("|")]
                                          for line in lines if line.startswith("|") and not line.startswith("|---"))}


def test_continual_table_shows_the_drift_and_the_gap_to_ner_alone(monkeypatch, tmp_path):
    quality = load_bench_script(monkeypatch, "quality")
    results = tmp_path / "results"
    write_result(results, "conll_ner_only", metrics={"test_ner_f1": 0.85})
    write_result(results, "conll_ner_only_seed2", seed=2, metrics={"test_ner_f1": 0.87})
    write_result(results, "continual_none", seconds_per_step=0.4321, train_seconds=1234.4, metrics={
        "test_intent_accuracy": 0.97, "start_test_intent_accuracy": 0.9857, "test_slots_f1": 0.9612,
        "start_test_slots_f1": 0.965, "test_ner_f1": 0.8512})
    write_result(results, "continual_freeze_heads", metrics={  # slots improved; NER above the reference
        "test_intent_accuracy": 0.98, "start_test_intent_accuracy": 0.98, "test_slots_f1": 0.9700,
        "start_test_slots_f1": 0.9650, "test_ner_f1": 0.8720})
    write_result(results, "continual_frozen_layers", metrics={  # a result without start_results.json
        "test_intent_accuracy": 0.9, "test_slots_f1": 0.8, "test_ner_f1": 0.7})
    markdown = quality.table_markdown(results)
    rows = table_rows(markdown, "Continual")
    assert list(rows) == ["row", *[name for name in quality.ROWS if name.startswith("continual_")],
                          "*target (one protection)*"]
    assert list(rows)[1:6] == ["continual_none", "continual_freeze_heads", "continual_frozen_layers",
                               "continual_distill_self", "continual_distill_self_w01"]
    assert rows["continual_none"][2:] == ["98.57 → 97.00 (-1.57)", "96.50 → 96.12 (-0.38)", "85.12", "-0.88",
                                          "1234", "0.432", "M1 bf16", "`run continual_none`"]
    assert rows["continual_freeze_heads"][2:6] == ["98.00 → 98.00 (+0.00)", "96.50 → 97.00 (+0.50)", "87.20",
                                                   "+1.20"]
    assert rows["continual_frozen_layers"][2:6] == ["90.00", "80.00", "70.00", "-16.00"]
    assert rows["continual_distill_self"][2:] == ["not run", "", "", "", "", "", "",
                                                  "`python bench/quality.py --threads 2 --row continual_distill_self`"]
    assert all(len(cells) == len(quality.CONTINUAL_COLUMNS) for cells in rows.values())
    assert "mean of the `conll_ner_only` rows (86.00, 2 seeds)" in markdown

    for name in ("conll_ner_only", "conll_ner_only_seed2"):  # no NER-alone result: no gap to show
        (results / f"{name}.json").unlink()
    markdown = quality.table_markdown(results)
    assert table_rows(markdown, "Continual")["continual_none"][4:6] == ["85.12", "–"]
    assert "mean of the `conll_ner_only` rows (–, 0 seeds)" in markdown


def test_distillation_table_shows_rows_seed_means_and_the_references(monkeypatch, tmp_path):
    quality = load_bench_script(monkeypatch, "quality")
    results = tmp_path / "results"
    write_result(results, "conll_ag_distill", best_checkpoint="out/checkpoint-20", steps=40, epochs=2.0,
                 metrics={"test_ner_f1": 0.86, "test_topic_accuracy": 0.91})
    write_result(results, "conll_ag_distill_seed2", seed=2, train_seconds=120.0, test_seconds=12.0,
                 metrics={"test_ner_f1": 0.88, "test_topic_accuracy": 0.93})
    for name, seed, ner in (("conll_ag_mtl_topic_w05", 1, 0.84), ("conll_ag_mtl_topic_w05_seed2", 2, 0.85)):
        write_result(results, name, seed=seed, metrics={"test_ner_f1": ner, "test_topic_accuracy": 0.90})
    write_result(results, "snips_recipe_seed1", metrics={"test_intent_accuracy": 0.98, "test_slots_f1": 0.96})
    write_result(results, "conll_ner_only", metrics={"test_ner_f1": 0.85})
    write_result(results, "ag_topic_only_seed3", seed=3, metrics={"test_topic_accuracy": 0.91})
    write_result(results, "snips_recipe_slots_only_seed2", seed=2, metrics={"test_slots_f1": 0.97})
    rows = table_rows(quality.table_markdown(results), "Distillation")
    assert rows["conll_ag_distill"][2:] == ["86.00", "91.00", "–", "–", "100", "10.0", "1 of 2", "M1 bf16",
                                            "`run conll_ag_distill`"]
    assert rows["conll_ag_distill_seed2"][2:4] == ["88.00", "93.00"]
    for name in ("conll_ag_distill_seed3", "snips_recipe_distill_seed1", "snips_recipe_distill_seed2",
                 "snips_recipe_distill_seed3"):
        assert rows[name][2] == "not run" and rows[name][-1] == f"`python bench/quality.py --threads 2 --row {name}`"
    mean = rows["**conll_ag_distill (mean ± std over seeds 1, 2)**"]
    assert mean[2:7] == ["87.00 ± 1.41", "92.00 ± 1.41", "–", "–", "110 ± 14"]
    assert not any(name.startswith("**snips_recipe_distill") for name in rows)  # no results: no mean row
    without = rows["*without teachers: `conll_ag_mtl_topic_w05`, `snips_recipe`*"]
    assert without[2:6] == ["84.50 ± 0.71", "90.00 ± 0.00", "98.00", "96.00"]
    alone = next(cells for name, cells in rows.items() if name.startswith("*each task alone"))
    # each reference is its whole seed family's: the seed-3 topic and seed-2 slots results count
    assert alone[2:6] == ["85.00", "91.00", "–", "97.00"]
    assert all(len(cells) == len(quality.DISTILLATION_COLUMNS) for cells in rows.values())
