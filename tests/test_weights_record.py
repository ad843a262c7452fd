"""What `save_pretrained` records in the safetensors header (each task's kind and labels, the encoder's type and depth)
is there for every way a folder is written: a plain save (tests/test_verified_loading.py), a training run's final
save and its checkpoints, and a LoRA run's merged weights. And the heads' last layer stays float32 under bf16
autocast, so regression scores are not rounded to bf16."""

import json

import pytest
import torch
from conftest import tiny_model
from train_fixtures import joint_config, run_config, training_root

from hf_mtl import MultiTaskModel


def record_of(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as weights:
        metadata = weights.metadata()
    assert metadata["format"] == "pt"
    return json.loads(metadata["hf_mtl"])


def expected_record(folder) -> dict:
    config = json.loads((folder / "config.json").read_text())
    kinds = {"sequence_classification": "single_label_classification", "token_classification": "token_classification"}
    return {
        "encoder": {"model_type": "bert", "num_hidden_layers": 2},
        "tasks": [{"name": task["name"], "kind": kinds[task["type"]], "labels": task["labels"]}
                  for task in config["tasks"]],
    }


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.training
def test_a_trained_folder_and_its_checkpoints_carry_the_record(tmp_path_factory, tokenizer, lora):
    overrides = dict(max_steps=2, save_strategy="steps", save_steps=2, do_eval=False, do_predict=False)
    if lora:
        pytest.importorskip("peft", reason="peft is not installed (pip install 'hf_mtl[peft]')")
        overrides["lora"] = {"r": 4, "alpha": 8}
    root, encoder, data = training_root(tmp_path_factory, tokenizer, "record")
    output = root / "out"
    run_config(joint_config(encoder, data, output, **overrides), root)
    expected = expected_record(output)
    assert [task["name"] for task in expected["tasks"]] == ["topic", "ner"]
    assert record_of(output / "model.safetensors") == expected
    assert record_of(output / "checkpoint-2" / "model.safetensors") == expected
    MultiTaskModel.from_pretrained(output)  # and the record matches the folder's config


# ---- the heads' last layer in float32 under autocast ---------------------------------------------------------------

TASKS = [
    {"name": "score", "type": "sequence_classification", "problem_type": "regression", "target_mean": 3.0,
     "target_std": 0.7},
    {"name": "topic", "type": "sequence_classification", "labels": ["a", "b", "c"]},
    {"name": "ner", "type": "token_classification", "labels": ["O", "B-PER", "I-PER"]},
]


def on_the_bf16_grid(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.bfloat16).float() == values


def test_bf16_autocast_does_not_round_the_heads_outputs_to_bf16():
    model = tiny_model(TASKS)
    input_ids = torch.randint(1000, 5000, (8, 12))
    input_ids[:, 0] = 101
    with torch.no_grad():
        reference = model(input_ids=input_ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(input_ids=input_ids).logits
    for name, logits in mixed.items():
        assert logits.dtype == torch.float32, name
    scores, expected = mixed["score"].reshape(-1), reference["score"].reshape(-1)
    # Only the encoder's bf16 noise remains: close to float32, and not rounded to bf16's 8-bit mantissa.
    torch.testing.assert_close(scores, expected, rtol=1e-2, atol=0)
    assert not on_the_bf16_grid(scores).any(), scores.tolist()
    assert not on_the_bf16_grid(mixed["ner"]).all()
    assert len(set(scores.tolist())) == 8  # eight inputs, eight scores


def test_a_model_cast_to_bf16_still_runs_its_heads():
    model = tiny_model(TASKS)
    model.to(torch.bfloat16)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[101, 2054, 2003, 102]])).logits
    assert logits["topic"].dtype == torch.bfloat16 and logits["topic"].shape == (1, 3)


def test_save_pretrained_with_push_to_hub_uploads_a_recorded_copy(tmp_path, monkeypatch):
    # transformers uploads inside its save_pretrained, before the record could be written: the push goes through
    # `push_to_hub`, which saves again (through the recording save_pretrained).
    pushed = []
    monkeypatch.setattr(MultiTaskModel, "push_to_hub", lambda self, repo_id, **kwargs: pushed.append((repo_id, kwargs)))
    model = tiny_model(TASKS[1:])
    model.save_pretrained(tmp_path / "mine", push_to_hub=True, commit_message="first", private=True)
    model.save_pretrained(tmp_path / "other", push_to_hub=True, repo_id="org/name")
    assert pushed == [("mine", {"commit_message": "first", "private": True}), ("org/name", {})]
    assert record_of(tmp_path / "mine" / "model.safetensors")["tasks"][0]["name"] == "topic"
