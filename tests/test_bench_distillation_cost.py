"""bench/distillation_cost.py: its summary from hand-made timings, and a run in this process on a tiny random encoder
(seconds, never the benchmark) whose precomputed teacher logits are the ones the teacher gives on the fly."""

import copy
import json
import statistics

import pytest
from conftest import load_bench_script


@pytest.fixture
def cost(monkeypatch):
    """bench/distillation_cost.py as a module."""
    return load_bench_script(monkeypatch, "distillation_cost")


@pytest.mark.parametrize("option", ["--steps", "--rounds", "--rows"])
def test_counts_below_one_are_refused(cost, option, capsys):
    with pytest.raises(SystemExit):
        cost.parse_args([option, "0"])
    assert f"{option} must be at least 1" in capsys.readouterr().err


def test_summary_takes_medians_ratios_to_the_student_and_the_break_even(cost):
    import torch

    batches = [{"input_ids": [[1] * 4] * 3, "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1] * 4])},
               {"input_ids": [[1] * 2] * 2, "attention_mask": torch.tensor([[1, 1], [1, 0]])}]
    task = type("Task", (), {"labels": ["O", "B-PER", "I-PER"]})()
    per_step = {"student": [0.30, 0.20, 0.55], "on_the_fly": [0.50, 0.60, 0.40], "precomputed": [0.35, 0.25, 0.30]}
    summary = cost.summarize(per_step, [1.0, 3.0, 2.0], batches, task)
    methods = summary["methods"]
    assert methods["student"]["ratio_vs_student"] == 1.0
    assert methods["on_the_fly"]["seconds_per_step"] == 0.50
    assert methods["on_the_fly"]["ratio_vs_student"] == pytest.approx(0.50 / 0.30)
    assert methods["precomputed"]["ratio_vs_student"] == pytest.approx(1.0)
    assert methods["precomputed"]["seconds_per_step_all"] == [0.35, 0.25, 0.30]
    precompute = summary["precompute"]
    assert (precompute["seconds"], precompute["rows"], precompute["batches"]) == (2.0, 5, 2)
    assert precompute["seconds_per_row"] == pytest.approx(2.0 / 5)
    assert precompute["bytes_per_row_fp32"] == pytest.approx(12 * 3 * 4 / 5)  # 12 real tokens x 3 labels x 4 bytes
    # one batch's share of the pass (1.0 s) over what the teacher adds per step on the fly (0.50 - 0.30)
    assert summary["break_even_epochs"] == pytest.approx(1.0 / 0.20)

    per_step["precomputed"] = [0.6, 0.6, 0.6]  # stored logits no faster than the teacher: never worth it
    assert cost.summarize(per_step, [1.0], batches, task)["break_even_epochs"] is None
    assert "Break-even: never" in cost.markdown(dict(
        cost.summarize(per_step, [1.0], batches, task), model="m", batch_size=32, precision="fp32", cpu="CPU",
        environment={"torch_threads": 1}, rounds=3, steps=1))


@pytest.mark.bench
def test_run_writes_the_three_methods_relative_to_the_student(cost, tmp_path, tiny_encoder, shared_data, capsys):
    from benchlib import cpu_name

    from hf_mtl.precision import cpu_has_native_bf16

    out = tmp_path / "out" / "cost.json"
    args = ["--steps", "1", "--rounds", "2", "--rows", "64", "--model", str(tiny_encoder), "--out", str(out)]
    assert cost.main(args) == 0
    result = json.loads(out.read_text())
    assert (result["steps"], result["rounds"], result["rows"], result["batch_size"]) == (1, 2, 64, 32)
    assert result["command"] == "python bench/distillation_cost.py " + " ".join(args)
    assert result["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert result["cpu"] and result["cpu"] == cpu_name(result["environment"])
    methods = result["methods"]
    assert list(methods) == list(cost.METHODS) == ["student", "on_the_fly", "precomputed"]
    student = methods["student"]["seconds_per_step"]
    assert methods["student"]["ratio_vs_student"] == 1.0
    for name, method in methods.items():
        assert len(method["seconds_per_step_all"]) == 2 and all(value > 0 for value in method["seconds_per_step_all"])
        assert method["seconds_per_step"] == statistics.median(method["seconds_per_step_all"]), name
        assert method["ratio_vs_student"] == pytest.approx(method["seconds_per_step"] / student), name
    precompute = result["precompute"]
    assert (precompute["rows"], precompute["batches"], len(precompute["seconds_all"])) == (64, 2, 2)
    assert precompute["seconds"] > 0 and precompute["bytes_per_row_fp32"] > 0
    saved = methods["on_the_fly"]["seconds_per_step"] - methods["precomputed"]["seconds_per_step"]
    if saved > 0:
        assert result["break_even_epochs"] == pytest.approx(precompute["seconds_per_batch"] / saved)
    else:
        assert result["break_even_epochs"] is None
    printed = capsys.readouterr().out
    assert "| student step alone (no distillation) |" in printed and "| 1.00x |" in printed
    assert f"wrote {out}" in printed


@pytest.mark.bench
def test_precomputed_logits_are_what_the_teacher_gives_on_the_fly_after_the_student_trained(
        cost, tiny_encoder, shared_data):
    """The `precomputed` method times the same loss as `on_the_fly`: the teacher (a copy of the student, evaluation
    mode) gives the same logits before and after the student's steps, and they are not the student's any more."""
    import torch

    from hf_mtl import MultiTaskModel
    from hf_mtl.precision import cpu_has_native_bf16

    tokenizer, task, rows = cost.encoded_rows(str(tiny_encoder), 64)
    batches = cost.length_grouped_batches(rows, tokenizer, task)
    assert [len(batch["input_ids"]) for batch in batches] == [32, 32]
    widths = [batch["input_ids"].shape[1] for batch in batches]
    assert widths[0] == max(len(row["input_ids"]) for row in rows)  # the longest rows first, as Trainer groups them

    torch.manual_seed(0)
    student = MultiTaskModel.from_encoder(str(tiny_encoder), tasks=[task.head_config()], pooling="mean")
    methods = cost.Methods(student, copy.deepcopy(student), task.name, cpu_has_native_bf16())
    assert not methods.teacher.training and not any(p.requires_grad for p in methods.teacher.parameters())
    per_step, precompute = cost.timed_rounds(methods, batches, steps=2, rounds=1)
    assert len(methods.precomputed) == len(batches) and len(precompute) == 1
    for index, batch in enumerate(batches):
        on_the_fly = methods.teacher_logits(batch)
        assert list(on_the_fly) == [task.name]
        assert torch.equal(methods.precomputed[index][task.name], on_the_fly[task.name]), index
        student.eval()
        with torch.no_grad(), torch.autocast(**methods.autocast):
            moved = student(**{key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")
                               if key in batch}).logits[task.name]
        assert not torch.equal(moved, on_the_fly[task.name])  # the student trained; its teacher did not move
