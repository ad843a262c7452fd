"""run_mtl end to end on a tiny random encoder and tiny joint data: outputs, freezing, LR groups, loss weighting."""

import json
import logging
import math

import pytest
import torch
from train_fixtures import NER_LABELS, TOPICS, joint_config, run_config, weights, write_joint_data
from transformers import AutoModel

from hf_mtl import MultiTaskModel
from hf_mtl.errors import ConfigError
from hf_mtl.train import parse_arguments, resolve_model_path
from hf_mtl.freezing import optimizer_parameter_groups
from hf_mtl.trainer import MultiTaskTrainer

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_joint_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained_start(tmp_path_factory, encoder_dir, tokenizer):
    """An hf_mtl model folder whose heads match the tiny data's labels: the known starting point of freezing tests."""
    tasks = [
        {"name": "topic", "type": "sequence_classification", "labels": TOPICS},
        {"name": "ner", "type": "token_classification", "labels": NER_LABELS},
    ]
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("start")
    MultiTaskModel.from_encoder(str(encoder_dir), tasks=tasks).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_joint_run_writes_every_output(tmp_path, encoder_dir, data_dir):
    output = tmp_path / "out"
    config = joint_config(encoder_dir, data_dir, output, save_strategy="steps", save_steps=2, eval_strategy="steps",
                          eval_steps=2)
    results = run_config(config, tmp_path)

    for name in ("model.safetensors", "config.json", "configuration_mtl.py", "modeling_mtl.py", "tokenizer.json",
                 "train_results.json", "eval_results.json", "test_results.json", "all_results.json",
                 "trainer_state.json", "test_predictions.jsonl"):
        assert (output / name).is_file(), name
    assert not list(output.glob("*.bin"))
    eval_results = json.loads((output / "eval_results.json").read_text())
    for key in ("eval_topic_accuracy", "eval_topic_macro_f1", "eval_ner_f1", "eval_ner_precision", "eval_ner_recall",
                "eval_ner_accuracy", "eval_score"):
        assert 0.0 <= eval_results[key] <= 1.0, key
    assert eval_results["eval_score"] == pytest.approx((eval_results["eval_topic_accuracy"] + eval_results["eval_ner_f1"]) / 2)
    assert results["test_samples"] == 16
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    assert any("loss_topic" in entry and "loss_ner" in entry for entry in history)
    lines = (output / "test_predictions.jsonl").read_text().splitlines()
    assert len(lines) == 16
    first = json.loads(lines[0])
    assert len(first["ner"]["pred"]) == len(first["words"]) == len(first["ner"]["gold"])
    # intermediate checkpoints are loadable models too
    checkpoint = AutoModel.from_pretrained(output / "checkpoint-2")
    assert checkpoint.config.task_names == ["topic", "ner"]
    reloaded = AutoModel.from_pretrained(output)
    assert reloaded.config.get_task("ner")["labels"] == NER_LABELS


def test_freezing_is_exact_parameter_by_parameter(tmp_path, trained_start, data_dir):
    before = weights(trained_start)
    config = joint_config(trained_start, data_dir, tmp_path / "out", freeze_layers=1, freeze_heads=["topic"],
                          do_eval=False, do_predict=False)
    run_config(config, tmp_path)
    after = weights(tmp_path / "out")

    frozen = [name for name in before if name.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.", "heads.topic."))]
    trained = [name for name in before if name not in frozen]
    assert frozen and trained
    for name in frozen:
        assert torch.equal(before[name], after[name]), f"{name} changed although frozen"
    for name in trained:
        assert not torch.equal(before[name], after[name]), f"{name} did not change although trainable"
    recorded = json.loads((tmp_path / "out" / "training_args.json").read_text())  # MultiTaskTrainingArguments
    assert recorded["freeze_layers"] == 1 and recorded["freeze_heads"] == ["topic"]
    assert recorded["freeze_encoder"] is False and recorded["head_learning_rate"] is None


def test_everything_frozen_with_do_train_is_an_error_and_writes_nothing(tmp_path, trained_start, data_dir):
    config = joint_config(trained_start, data_dir, tmp_path / "out", freeze_encoder=True, freeze_heads=["topic", "ner"])
    with pytest.raises(ConfigError, match="whole network is frozen"):
        run_config(config, tmp_path)
    assert not (tmp_path / "out").exists()


def test_freeze_heads_naming_an_unknown_task(tmp_path, trained_start, data_dir):
    config = joint_config(trained_start, data_dir, tmp_path / "out", freeze_heads=["intent"])
    with pytest.raises(ConfigError, match="freeze_heads.*intent"):
        run_config(config, tmp_path)


def test_gradual_unfreezing_releases_top_layers_first(tmp_path, trained_start, data_dir):
    before = weights(trained_start)
    config = joint_config(trained_start, data_dir, tmp_path / "out", do_eval=False, do_predict=False,
                          unfreeze_schedule={"start_frozen_layers": 2, "unfreeze_every_steps": 3})
    run_config(config, tmp_path)
    after = weights(tmp_path / "out")
    # steps 1-3: embeddings + both layers held at lr 0; step 4: the top layer (layer 1) is released.
    for name in before:
        changed = not torch.equal(before[name], after[name])
        if name.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.")):
            assert not changed, name
        elif name.startswith(("encoder.encoder.layer.1.", "heads.")):
            assert changed, name
    recorded = json.loads((tmp_path / "out" / "training_args.json").read_text())
    assert recorded["unfreeze_schedule"] == {"start_frozen_layers": 2, "unfreeze_every_steps": 3}


def test_layerwise_learning_rates_and_no_decay_groups(trained_start):
    model = MultiTaskModel.from_pretrained(trained_start)
    from transformers import Trainer

    decay_names = set(Trainer.get_decay_parameter_names(None, model))
    groups = optimizer_parameter_groups(
        model, learning_rate=1e-3, weight_decay=0.01, decay_parameter_names=decay_names,
        encoder_learning_rate=1e-4, head_learning_rate=5e-3, layerwise_lr_decay=0.5,
    )
    lr_of = {id(parameter): group for group in groups for parameter in group["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["encoder.embeddings.word_embeddings.weight"])]["lr"] == pytest.approx(1e-4 * 0.25)
    assert lr_of[id(named["encoder.encoder.layer.0.attention.self.query.weight"])]["lr"] == pytest.approx(1e-4 * 0.5)
    assert lr_of[id(named["encoder.encoder.layer.1.output.dense.weight"])]["lr"] == pytest.approx(1e-4)
    assert lr_of[id(named["heads.ner.classifier.weight"])]["lr"] == pytest.approx(5e-3)
    assert lr_of[id(named["encoder.encoder.layer.1.output.dense.bias"])]["weight_decay"] == 0.0
    assert lr_of[id(named["encoder.encoder.layer.1.output.LayerNorm.weight"])]["weight_decay"] == 0.0
    assert lr_of[id(named["encoder.encoder.layer.1.output.dense.weight"])]["weight_decay"] == 0.01
    assert sum(len(group["params"]) for group in groups) == len(named)


def test_uncertainty_weighting_per_row_reduction_and_balanced_class_weights_are_saved(tmp_path, encoder_dir, data_dir):
    config = joint_config(encoder_dir, data_dir, tmp_path / "out", loss_weighting="uncertainty", do_eval=False,
                          do_predict=False, loss_reduction="per_row")
    config["tasks"][0]["class_weights"] = "balanced"
    run_config(config, tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path / "out")
    assert reloaded.config.loss_weighting == "uncertainty" and reloaded.config.loss_reduction == "per_row"
    assert torch.count_nonzero(reloaded.task_log_variances) == 2
    weights_topic = reloaded.config.get_task("topic")["class_weights"]
    assert len(weights_topic) == 4 and all(weight > 0 for weight in weights_topic)


def test_bf16_on_cpu_with_gradient_accumulation(tmp_path, encoder_dir, data_dir, monkeypatch):
    # Pretend the CPU has native bf16 so that the autocast path runs on any machine (emulated bf16 is slow but the
    # tiny encoder keeps it cheap).
    monkeypatch.setattr("hf_mtl.machine.cpu_has_native_bf16", lambda: True)
    config = joint_config(encoder_dir, data_dir, tmp_path / "out", bf16=True, gradient_accumulation_steps=2,
                          max_steps=2, do_predict=False)
    results = run_config(config, tmp_path)
    assert math.isfinite(results["train_loss"])
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    # 2 optimizer steps x 2 accumulated batches x 8 rows = 32 of the 48 training rows
    assert state["global_step"] == 2 and state["epoch"] == pytest.approx(32 / 48)
    assert json.loads((tmp_path / "out" / "training_args.json").read_text())["bf16"] is True


def test_bf16_falls_back_to_float32_on_a_cpu_without_native_bf16(tmp_path, encoder_dir, data_dir, monkeypatch, caplog):
    monkeypatch.setattr("hf_mtl.machine.cpu_has_native_bf16", lambda: False)
    seen = {}
    original_step = MultiTaskTrainer.training_step

    def training_step(self, *args, **kwargs):
        seen["mixed_precision"] = self.accelerator.mixed_precision
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(MultiTaskTrainer, "training_step", training_step)
    config = joint_config(encoder_dir, data_dir, tmp_path / "out", bf16=True, max_steps=1, do_predict=False)
    with caplog.at_level(logging.WARNING, logger="hf_mtl"):
        run_config(config, tmp_path)
    assert seen["mixed_precision"] == "no"
    assert json.loads((tmp_path / "out" / "training_args.json").read_text())["bf16"] is False
    assert any("no native bfloat16" in record.getMessage() for record in caplog.records)


def test_command_line_overrides_the_json_and_unknown_keys_are_named(tmp_path, encoder_dir, data_dir):
    config = joint_config(encoder_dir, data_dir, tmp_path / "out")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    model_args, data_args, training_args = parse_arguments(
        [str(path), "--num_train_epochs", "7", "--output_dir", str(tmp_path / "other"), "--freeze_layers", "1"]
    )
    assert training_args.num_train_epochs == 7 and training_args.output_dir == str(tmp_path / "other")
    assert training_args.freeze_layers == 1 and data_args.max_seq_length == 32

    path.write_text(json.dumps(dict(config, freeze_everything=True)))
    with pytest.raises(ConfigError, match="freeze_everything"):
        parse_arguments([str(path)])
    path.write_text('{\n  "model_name_or_path": "x",\n  "tasks": [,]\n}')
    with pytest.raises(ConfigError, match=r"config.json:3:\d+"):
        parse_arguments([str(path)])


def test_adding_a_task_to_a_trained_model_reuses_heads(tmp_path, trained_start, data_dir):
    before = weights(trained_start)
    config = joint_config(trained_start, data_dir, tmp_path / "out", freeze_encoder=True, freeze_heads=["topic", "ner"],
                          do_eval=False, do_predict=False)
    config["tasks"].append({"name": "topic_again", "type": "sequence_classification", "dataset": "demo",
                            "label_column": "topic"})
    run_config(config, tmp_path)
    after = weights(tmp_path / "out")
    for name, tensor in before.items():  # encoder and the reused heads are exactly the trained ones
        assert torch.equal(tensor, after[name]), name
    assert after["heads.topic_again.classifier.weight"].shape == (4, 32)
    assert AutoModel.from_pretrained(tmp_path / "out").config.task_names == ["topic", "ner", "topic_again"]


def test_reused_head_with_other_labels_needs_reinit_head(tmp_path, trained_start, data_dir):
    config = joint_config(trained_start, data_dir, tmp_path / "out", do_eval=False, do_predict=False)
    config["tasks"][0]["labels"] = ["politics", "sports", "business", "technology"]
    with pytest.raises(ConfigError, match=r"tasks\[0\].labels.*reinit_head"):
        run_config(config, tmp_path)
    config["tasks"][0]["reinit_head"] = True
    run_config(config, tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path / "out")
    assert reloaded.config.get_task("topic")["labels"] == ["politics", "sports", "business", "technology"]


def test_a_trained_model_keeps_its_pooling_unless_told_otherwise(tmp_path, encoder_dir, tokenizer, data_dir):
    tasks = [{"name": "topic", "type": "sequence_classification", "labels": TOPICS},
             {"name": "ner", "type": "token_classification", "labels": NER_LABELS}]
    start = tmp_path / "start"
    MultiTaskModel.from_encoder(str(encoder_dir), tasks=tasks, pooling="cls", loss_weighting="uncertainty").save_pretrained(start)
    tokenizer.save_pretrained(start)
    run_config(joint_config(start, data_dir, tmp_path / "out", do_eval=False, do_predict=False), tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path / "out")
    assert reloaded.config.pooling == "cls" and reloaded.config.loss_weighting == "uncertainty"

    config = joint_config(start, data_dir, tmp_path / "out2", pooling="mean", do_eval=False, do_predict=False)
    with pytest.raises(ConfigError, match="pooling.*'cls'"):
        run_config(config, tmp_path)


def test_a_missing_local_model_folder_is_named_instead_of_asked_from_the_hub(tmp_path):
    missing = tmp_path / "models" / "mine"
    with pytest.raises(ConfigError, match=r"model_name_or_path: the folder .*models/mine.* does not exist"):
        resolve_model_path(str(missing))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_path("./no-such-model")
    (tmp_path / "models").mkdir()
    assert resolve_model_path(str(tmp_path / "models")) == str(tmp_path / "models")
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"  # Hub ids pass through untouched
    assert resolve_model_path("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"


def test_drop_last_drops_only_training_rows(tmp_path, encoder_dir, data_dir):
    # 16 validation / test rows in batches of 6: stock Trainer would drop the last 4 of each split.
    config = joint_config(encoder_dir, data_dir, tmp_path / "out", dataloader_drop_last=True,
                          per_device_eval_batch_size=6, max_steps=None, num_train_epochs=1, eval_strategy="epoch",
                          per_device_train_batch_size=10)
    config.pop("max_steps")
    run_config(config, tmp_path)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # 48 training rows in batches of 10: the partial last batch is dropped
    predictions = (tmp_path / "out" / "test_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 16
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_samples"] == 16
