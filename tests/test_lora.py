"""LoRA on the shared encoder (hf_mtl[peft]): what trains, what is saved (merged weights + adapter), reloading,
resuming, the best checkpoint, continuing from a LoRA-trained folder, and config errors. In-process, tiny encoder."""

import json
import sys

import pytest
import torch
from train_fixtures import joint_config, run_config, training_root, weights, write_joint_data

pytest.importorskip("peft", reason="peft is not installed (pip install 'hf_mtl[peft]')")

ADAPTED = (".attention.self.query.weight", ".attention.self.value.weight")  # peft's default for BERT


def lora_run_config(encoder, data, output, **overrides):
    settings = dict(max_steps=6, save_strategy="steps", save_steps=3, learning_rate=5e-3, do_predict=False,
                    lora={"r": 4, "alpha": 8})
    settings.update(overrides)
    return joint_config(encoder, data, output, **settings)


def initial_weights(encoder) -> dict:
    from safetensors.torch import load_file

    return {f"encoder.{key}": value for key, value in load_file(str(encoder / "model.safetensors")).items()
            if not key.startswith("pooler.")}  # mean pooling: the model has no pooler


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tokenizer):
    root, encoder, data = training_root(tmp_path_factory, tokenizer, "lora")
    output = root / "out"
    run_config(lora_run_config(encoder, data, output), root)
    return root, encoder, data, output


@pytest.mark.training
def test_lora_trains_adapters_and_heads_and_saves_merged_weights(lora_run):
    from transformers import AutoModel

    _, encoder, _, output = lora_run
    initial, trained = initial_weights(encoder), weights(output)
    plain = set(initial) | {key for key in trained if key.startswith("heads.")}
    assert set(trained) == plain  # plain keys: no base_layer / lora_A / lora_B in model.safetensors
    for key, value in initial.items():
        assert torch.equal(trained[key], value) != key.endswith(ADAPTED), key  # only the adapted projections moved
    assert json.loads((output / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_mtl.MultiTaskModel"
    adapter_config = json.loads((output / "lora_adapter" / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
    assert set(adapter_config["target_modules"]) == {"query", "value"}
    assert adapter_config["base_model_name_or_path"] == str(encoder)
    card = (output / "README.md").read_text()
    assert '"r": 4' in card  # the model card reports the LoRA settings

    # the adapter is peft's format: on the base encoder it gives the merged model's encoder
    from peft import PeftModel

    merged = AutoModel.from_pretrained(str(output)).eval()
    adapted = PeftModel.from_pretrained(AutoModel.from_pretrained(str(encoder), add_pooling_layer=False),
                                        str(output / "lora_adapter")).eval()
    ids = torch.tensor([[101, 2054, 2003, 1996, 3835, 102]])
    with torch.no_grad():
        expected = merged.encoder(input_ids=ids).last_hidden_state
        assert torch.allclose(adapted(input_ids=ids).last_hidden_state, expected, atol=1e-5)


@pytest.mark.training
def test_lora_checkpoint_resumes_to_bit_identical_weights(lora_run):
    root, encoder, data, output = lora_run
    resumed = root / "resumed"
    config = lora_run_config(encoder, data, resumed)
    assert (output / "checkpoint-3" / "lora_adapter" / "adapter_model.safetensors").is_file()
    run_config(config, root, "--resume_from_checkpoint", str(output / "checkpoint-3"))
    final, uninterrupted = weights(resumed), weights(output)
    for key, tensor in uninterrupted.items():
        assert torch.equal(tensor, final[key]), key


@pytest.mark.training
def test_lora_checkpoint_of_another_base_model_is_refused(lora_run, tokenizer):
    from conftest import save_tiny_encoder

    from hf_mtl.errors import ModelError

    root, _, data, output = lora_run
    other = root / "other_encoder"
    save_tiny_encoder(other, tokenizer, seed=123)
    with pytest.raises(ModelError, match="does not match this run's base model"):
        run_config(lora_run_config(other, data, root / "wrong"), root,
                   "--resume_from_checkpoint", str(output / "checkpoint-3"))


@pytest.mark.training
def test_lora_best_checkpoint_is_loaded_at_the_end(lora_run):
    """load_best_model_at_end reads the best checkpoint's adapter: with the highest eval loss as "best" (the first
    checkpoint here), the final model is that checkpoint's, not the last step's."""
    root, encoder, data, _ = lora_run
    output = root / "best"
    config = lora_run_config(encoder, data, output, eval_strategy="steps", eval_steps=3, load_best_model_at_end=True,
                             metric_for_best_model="eval_loss", greater_is_better=True)
    run_config(config, root)
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"].endswith("checkpoint-3")
    final, best = weights(output), weights(output / "checkpoint-3")
    assert not all(torch.equal(best[key], tensor) for key, tensor in weights(output / "checkpoint-6").items())
    for key, tensor in best.items():
        assert torch.allclose(tensor, final[key], atol=1e-6), key


@pytest.mark.training
def test_lora_respects_freeze_layers_and_heads(lora_run):
    root, encoder, data, _ = lora_run
    output = root / "frozen"
    run_config(lora_run_config(encoder, data, output, freeze_layers=1, freeze_heads=["topic"]), root)
    initial, trained = initial_weights(encoder), weights(output)
    for key, value in initial.items():
        moved = key.endswith(ADAPTED) and ".layer.1." in key  # layer 0 and its adapters are frozen
        assert torch.equal(trained[key], value) != moved, key
    halfway = weights(output / "checkpoint-3")
    assert torch.equal(trained["heads.topic.classifier.weight"], halfway["heads.topic.classifier.weight"])
    assert not torch.equal(trained["heads.ner.classifier.weight"], halfway["heads.ner.classifier.weight"])


@pytest.mark.training
def test_continuing_from_a_lora_folder_starts_from_its_merged_weights(lora_run):
    """A new run on the LoRA-trained folder (a new adapter, on the key projections only this time): the query and
    value projections it keeps frozen are the folder's merged ones."""
    root, _, data, output = lora_run
    continued = root / "continued"
    run_config(lora_run_config(output, data, continued, lora={"r": 2, "target_modules": ["key"]}), root)
    before, after = weights(output), weights(continued)
    for key, tensor in before.items():
        if key.startswith("encoder."):  # the heads train on
            assert torch.equal(after[key], tensor) != key.endswith(".attention.self.key.weight"), key
    adapter_config = json.loads((continued / "lora_adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(output)


@pytest.mark.parametrize("lora, message", [
    ({"rank": 8}, r"lora: unknown keys \['rank'\]"),
    ({"r": 0}, "lora.r: expected a positive integer"),
    ({"dropout": 1.5}, r"lora.dropout: expected a number in \[0, 1\)"),
    ({"target_modules": "query"}, "lora.target_modules: expected a list"),
    ({"target_modules": ["no_such_layer"]}, "lora.target_modules: "),
    ("[1]", "lora: expected an object"),
])
def test_lora_config_errors(tmp_path, tiny_encoder, lora, message):
    from hf_mtl.errors import ConfigError

    config = joint_config(tiny_encoder, write_joint_data(tmp_path / "data"), tmp_path / "out", lora=lora)
    with pytest.raises(ConfigError, match=message):
        run_config(config, tmp_path)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_lora_without_peft_is_a_config_error(tmp_path, tiny_encoder, monkeypatch):
    from hf_mtl.errors import ConfigError

    monkeypatch.setitem(sys.modules, "peft", None)
    config = joint_config(tiny_encoder, tmp_path / "data", tmp_path / "out", lora=True)
    with pytest.raises(ConfigError, match=r"lora: needs peft: pip install 'hf_mtl\[peft\]'"):
        run_config(config, tmp_path)
