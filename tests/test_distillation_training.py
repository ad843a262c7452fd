"""Distillation in real runs: teachers are not saved, a killed run resumes to bit-identical weights with its
teachers, two processes (DDP, FSDP) and LoRA train with them."""

import json
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import (KILLED_RUN, NER_LABELS, TOPICS, accelerate_launch, joint_config, run_config, run_process,
                            training_root, weights, write_config)

from conftest import tiny_encoder_config

FSDP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp.yaml"


def save_stock_teacher(folder: Path, tokenizer, model_class: str, labels: list, seed: int) -> str:
    """A tiny stock classifier (random, seeded) whose id2label lists `labels` reversed: its logits must be reordered."""
    import transformers

    labels = list(reversed(labels))
    config = tiny_encoder_config(num_labels=len(labels), id2label=dict(enumerate(labels)),
                                 label2id={label: index for index, label in enumerate(labels)})
    config.architectures = [f"Bert{model_class}"]
    torch.manual_seed(seed)
    getattr(transformers, f"AutoModel{model_class.removeprefix('Bert')}").from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    """A tiny encoder and data, a trained hf_mtl folder ("self" teacher) and two stock teachers."""
    root, encoder, data = training_root(tmp_path_factory, tokenizer, "distill")
    (root / "harness.py").write_text(KILLED_RUN)
    run_config(joint_config(encoder, data, root / "start", max_steps=6, do_predict=False), root)
    teachers = {
        "topic": save_stock_teacher(root / "topic_teacher", tokenizer, "ForSequenceClassification", TOPICS, seed=1),
        "ner": save_stock_teacher(root / "ner_teacher", tokenizer, "ForTokenClassification", NER_LABELS, seed=2),
    }
    return root, encoder, data, teachers


def distilled_config(setup, output, **overrides):
    root, encoder, data, teachers = setup
    settings = dict(max_steps=6, save_strategy="steps", save_steps=2, do_eval=False, do_predict=False,
                    learning_rate=5e-3, distillation={"teachers": teachers, "alpha": 0.7, "temperature": 2.0})
    settings.update(overrides)
    return joint_config(encoder, data, output, **settings)


@pytest.mark.subprocess
def test_killed_distilled_run_resumes_to_bit_identical_weights(setup):
    """Dropout stays on, so an exact match also proves the RNG state; the teachers' logits must come back the same."""
    root = setup[0]
    finished = root / "distilled_uninterrupted"
    path = write_config(root, "distilled_uninterrupted", distilled_config(setup, finished))
    result = run_process([sys.executable, str(root / "harness.py"), path])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distillation (alpha 0.7, temperature 2.0): topic <- " in result.stdout + result.stderr

    killed_output = root / "distilled_killed"
    path = write_config(root, "distilled_killed", distilled_config(setup, killed_output))
    killed = run_process([sys.executable, str(root / "harness.py"), path], {"KILL_AT_STEP": "2"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_process([sys.executable, "run_mtl.py", path, "--resume_from_checkpoint", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference, final = weights(finished), weights(killed_output)
    assert final.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(tensor, final[name]), name
    # Only the student is saved: the same weights as a run without teachers has, nothing of the teachers.
    plain = root / "plain"
    run_config(joint_config(setup[1], setup[2], plain, max_steps=1, do_eval=False, do_predict=False), root)
    assert final.keys() == weights(plain).keys()
    assert not any("teacher" in path.name for path in killed_output.iterdir())


@pytest.mark.training
def test_distillation_moves_the_student_toward_its_teacher(setup):
    """alpha 1: the teachers alone train the tasks (gold ignored); the student's topic predictions end closer to
    the stock topic teacher's than those of the same run without distillation."""
    from transformers import AutoModelForSequenceClassification

    from hf_mtl import MultiTaskModel

    root, encoder, data, teachers = setup
    common = dict(max_steps=30, learning_rate=5e-3, head_learning_rate=3e-2, save_strategy="no", do_eval=False,
                  do_predict=False)
    teacher_only = {"teachers": teachers, "alpha": 1.0}
    run_config(distilled_config(setup, root / "alpha1", distillation=teacher_only, **common), root)
    run_config(joint_config(encoder, data, root / "undistilled", **common), root)
    teacher = AutoModelForSequenceClassification.from_pretrained(teachers["topic"]).eval()
    order = [teacher.config.label2id[label] for label in TOPICS]  # the run's labels: sorted topics
    ids = torch.randint(1000, 3000, (16, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = teacher(input_ids=ids).logits[:, order].softmax(-1)
        distances = {}
        for name in ("alpha1", "undistilled"):
            student = MultiTaskModel.from_pretrained(root / name).eval()
            predicted = student(input_ids=ids).logits["topic"].softmax(-1)
            distances[name] = (predicted - target).abs().sum(-1).mean().item()
    assert distances["alpha1"] < 0.5 * distances["undistilled"], distances


@pytest.mark.multiprocess
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_processes_distil_from_self(setup, engine):
    root, encoder, data, _ = setup
    output = root / f"two_{engine}"
    config = distilled_config(setup, output, model_name_or_path=str(root / "start"), save_strategy="no",
                              distillation={"teachers": {"topic": "self", "ner": "self"}}, max_steps=4,
                              per_device_train_batch_size=4, ddp_timeout=120, do_eval=True)
    path = write_config(root, f"two_{engine}", config)
    launcher = accelerate_launch(2) if engine == "ddp" else accelerate_launch(config_file=FSDP_CONFIG)
    result = run_process(launcher + ["run_mtl.py", path], timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "world size 2" in log and f"topic <- {root / 'start'}" in log
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 4
    # The starting model was scored on both ranks before training (the drift's baseline), its old tasks only.
    start_scores = json.loads((output / "start_results.json").read_text())
    assert {"eval_topic_accuracy", "eval_ner_f1"} <= set(start_scores)
    start, final = weights(root / "start"), weights(output)
    assert final.keys() == start.keys()
    assert not torch.equal(start["heads.topic.classifier.weight"], final["heads.topic.classifier.weight"])


@pytest.mark.training
def test_lora_run_distils_from_self(setup):
    pytest.importorskip("peft", reason="peft is not installed (pip install 'hf_mtl[peft]')")
    root = setup[0]
    output = root / "lora"
    run_config(distilled_config(setup, output, model_name_or_path=str(root / "start"), save_strategy="no",
                                lora={"r": 4, "alpha": 8}, distillation={"teachers": {"ner": "self"}}), root)
    start, final = weights(root / "start"), weights(output)
    query = "encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(start[query], final[query])  # adapters merged into the saved weights
    key = "encoder.encoder.layer.0.attention.output.dense.weight"  # not adapted: frozen under LoRA
    assert torch.equal(start[key], final[key])
    assert json.loads((output / "training_args.json").read_text())["distillation"]["teachers"] == {"ner": "self"}
