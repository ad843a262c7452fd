"""The bad-input battery: every user error ends the command with exit status 2, ONE `error: ...` line naming the place,
no traceback, and nothing created or changed: the whole working folder (a previous run's output_dir, the model folder,
the data, the config) hashes the same before and after, and no new file appears beside it (no lock, no staging folder).

One block per class of bad input, after the first battery's cases: 1 outputs not atomic, 2 values that make no sense,
3 names that collide, 4 model folders that do not match themselves, 5 outputs that destroy inputs, 6 columns of the
wrong kind, 7 two writers of one output, 8 messages that name the right thing. Each case is a function
`case_<name>(base, tmp)` returning `(command, expected fragments of the error line)`, where command is `train(config)`
(run through `hf_mtl.train.cli_main`) or `cli([...])` (`hf_mtl.cli.main`).
"""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import filelock
import pytest
from conftest import REPO_ROOT
from train_fixtures import joint_config, run_config, save_tiny_encoder, write_joint_data

from hf_mtl import cli
from hf_mtl.atomic_files import sibling_path
from hf_mtl.precision import cpu_has_native_bf16
from hf_mtl.train import cli_main


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("battery")
    encoder = save_tiny_encoder(root / "encoder", tokenizer)
    data = write_joint_data(root / "data", sizes=(24, 8, 8))
    previous = root / "previous"  # a finished run: the output_dir every case starts from, and a model folder
    run_config(joint_config(encoder, data, previous, max_steps=2), root)
    return {
        "root": root,
        "encoder": encoder,
        "distilbert": save_tiny_encoder(root / "distilbert", tokenizer, model_type="distilbert"),
        "data": data,
        "previous": previous,
    }


def train(config, *extra):
    return ("train", config, list(extra))


def cli_command(*argv):
    return ("cli", None, [str(arg) for arg in argv])


def out(tmp):
    return tmp / "out"


def config_for(b, tmp, **overrides):
    return joint_config(b["encoder"], b["data"], out(tmp), **overrides)


def jsonl(folder, rows):
    """A JSON Lines train split of `rows` (dicts, or raw lines as strings)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (folder / "train.jsonl").write_text("".join(line + "\n" for line in lines))
    return {"path": str(folder), "format": "json", "data_files": {"train": "train.jsonl"}}


def with_rows(b, tmp, rows, **overrides):
    config = config_for(b, tmp, do_eval=False, do_predict=False, **overrides)
    config["datasets"]["demo"] = jsonl(tmp / "d", rows)
    return config


def model_copy(b, tmp, name="model"):
    """A copy of the previous run's folder, to damage or to read."""
    return Path(shutil.copytree(b["previous"], tmp / name))


def edit_json(path, change):
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def text_input(tmp, name="input.txt"):
    path = tmp / name
    path.write_text("anna visited paris\nomar left acme\n", encoding="utf-8")
    return path


def predict(model, tmp, *extra):
    return cli_command("predict", "--model", model, "--input", text_input(tmp), "--output", tmp / "predictions.jsonl",
                       *extra)


GOOD_ROW = {"tokens": ["anna", "visited", "paris"], "tags": ["B-PER", "O", "B-LOC"], "topic": "sports"}
OTHER_ROW = {"tokens": ["omar", "left", "acme"], "tags": ["B-PER", "O", "B-ORG"], "topic": "business"}


def jointbert(folder, seq_in, seq_out, labels):
    (folder / "train").mkdir(parents=True, exist_ok=True)
    for name, lines in (("seq.in", seq_in), ("seq.out", seq_out), ("label", labels)):
        (folder / "train" / name).write_text("".join(line + "\n" for line in lines))
    return {"path": str(folder), "format": "jointbert"}


def slot_tasks():
    return [{"name": "intent", "type": "sequence_classification", "dataset": "demo"},
            {"name": "slots", "type": "token_classification", "dataset": "demo"}]


# ---- the first battery ------------------------------------------------------------------------------------------------
def case_unknown_key(b, tmp):
    return train(dict(config_for(b, tmp), freeze_everything=True)), ["freeze_everything"]


def case_malformed_json(b, tmp):
    return train('{\n  "model_name_or_path": "x",\n  "tasks": [,]\n}'), ["config.json:3:"]


def case_missing_data_path(b, tmp):
    return train(joint_config(b["encoder"], tmp / "nowhere", out(tmp))), ["nowhere"]


def case_unknown_format(b, tmp):
    config = config_for(b, tmp)
    config["datasets"]["demo"]["format"] = "xml"
    return train(config), ["datasets.demo.format", "xml"]


def case_missing_column(b, tmp):
    config = config_for(b, tmp)
    config["tasks"][0]["label_column"] = "category"
    return train(config), ["category", "topic"]


def case_jsonl_length_mismatch(b, tmp):
    config = config_for(b, tmp)
    config["datasets"]["demo"] = jsonl(tmp / "d", [GOOD_ROW, OTHER_ROW, dict(GOOD_ROW, tags=["B-PER", "O"])])
    return train(config), ["train.jsonl:3", "3 words but 2 tags"]


def case_conll_missing_tag(b, tmp):
    (tmp / "c").mkdir()
    (tmp / "c" / "train.txt").write_text("Anna B-PER\nvisited O\n\nOmar B-PER\nleft\n")
    config = config_for(b, tmp, do_eval=False, do_predict=False)
    config["datasets"] = {"demo": {"path": str(tmp / "c" / "train.txt"), "format": "conll"}}
    config["tasks"] = [config["tasks"][1]]
    return train(config), ["train.txt:5"]


def case_jointbert_line_mismatch(b, tmp):
    spec = jointbert(tmp / "j", ["play some jazz", "book a table"], ["O O B-genre", "O O"], ["Play", "Book"])
    config = config_for(b, tmp, do_eval=False, do_predict=False)
    config["datasets"], config["tasks"] = {"demo": spec}, slot_tasks()
    return train(config), ["seq.out:2"]


def case_jointbert_line_counts(b, tmp):
    spec = jointbert(tmp / "j", ["play some jazz", "book a table"], ["O O B-genre"], ["Play", "Book"])
    config = config_for(b, tmp, do_eval=False, do_predict=False)
    config["datasets"], config["tasks"] = {"demo": spec}, slot_tasks()
    return train(config), ["seq.in", "seq.out", "line count"]


def case_tag_with_underscore(b, tmp):
    config = config_for(b, tmp)
    config["datasets"]["demo"] = jsonl(tmp / "d", [GOOD_ROW, dict(OTHER_ROW, tags=["B_PER", "O", "B-ORG"])])
    return train(config), ["train.jsonl:2", "B_PER"]


def case_tag_without_prefix(b, tmp):
    config = config_for(b, tmp)
    config["datasets"]["demo"] = jsonl(tmp / "d", [dict(GOOD_ROW, tags=["PER", "O", "B-LOC"]), OTHER_ROW])
    return train(config), ["train.jsonl:1", "PER"]


def case_empty_train_split(b, tmp):
    config = config_for(b, tmp)
    config["datasets"]["demo"] = jsonl(tmp / "d", [])
    return train(config), ["train"]


def case_not_utf8(b, tmp):
    config = config_for(b, tmp)
    config["datasets"]["demo"] = jsonl(tmp / "d", [GOOD_ROW])
    (tmp / "d" / "train.jsonl").write_bytes(b'{"tokens": ["caf\xe9"], "tags": ["O"], "topic": "x"}\n')
    return train(config), ["train.jsonl", "UTF-8"]


def case_duplicate_task_names(b, tmp):
    config = config_for(b, tmp)
    config["tasks"][1]["name"] = "topic"
    return train(config), ["tasks[1].name", "topic"]


def case_undeclared_dataset(b, tmp):
    config = config_for(b, tmp)
    config["tasks"][1]["dataset"] = "conll"
    return train(config), ["tasks[1].dataset", "conll"]


def case_labels_missing_a_train_label(b, tmp):
    config = config_for(b, tmp)
    config["tasks"][0]["labels"] = ["business", "politics", "sports"]
    return train(config), ["topic", "technology", "labels"]


def case_freeze_unknown_head(b, tmp):
    return train(config_for(b, tmp, freeze_heads=["intent"])), ["freeze_heads", "intent"]


def case_everything_frozen(b, tmp):
    return train(config_for(b, tmp, freeze_encoder=True, freeze_heads=["topic", "ner"])), ["whole network is frozen"]


def case_pooler_without_pooler(b, tmp):
    return train(joint_config(b["distilbert"], b["data"], out(tmp), pooling="pooler")), ["pooling", "distilbert"]


def case_max_seq_length_too_long(b, tmp):
    return train(config_for(b, tmp, max_seq_length=4096)), ["max_seq_length", "128"]


def case_missing_model(b, tmp):
    return train(joint_config(tmp / "no_model", b["data"], out(tmp))), ["model_name_or_path", "no_model"]


def case_unknown_packaged_model(b, tmp):
    return train(config_for(b, tmp, model_name_or_path="package:bert-huge")), ["package:bert-huge"]


def case_bad_override(b, tmp):
    return train(config_for(b, tmp), "--num_train_epochs", "many"), ["num_train_epochs", "many"]


def case_unknown_override(b, tmp):
    return train(config_for(b, tmp), "--epochs", "3"), ["--epochs"]


def case_bad_sampling(b, tmp):
    return train(config_for(b, tmp, task_sampling="random")), ["task_sampling", "random"]


# ---- 1. outputs are not atomic: failures after the model exists leave output_dir as it was -------------------------
def case_eval_without_validation_split(b, tmp):
    config = config_for(b, tmp, validation_split_percentage=0)
    del config["datasets"]["demo"]["data_files"]["validation"]
    return train(config), ["do_eval", "validation split", "validation_split_percentage"]


def case_predict_without_test_split(b, tmp):
    config = config_for(b, tmp)
    del config["datasets"]["demo"]["data_files"]["test"]
    return train(config), ["do_predict", "test split"]


def case_loss_overflows_during_training(b, tmp):
    # Finite settings whose product is not: the weighted loss is inf at the first step, after Trainer created its
    # folders; the run stops before a backward pass and leaves output_dir as it was.
    return train(config_for(b, tmp, loss_weights={"ner": 1e308, "topic": 1e308})), ["training step 1", "inf"]


def case_diverging_loss_in_a_fresh_output_dir(b, tmp):
    shutil.rmtree(out(tmp))  # Trainer makes output_dir in __init__: a failed run must not leave it behind
    return train(config_for(b, tmp, loss_weights={"ner": 1e308, "topic": 1e308})), ["training step 1"]


def case_diverging_loss_with_tensorboard_logs(b, tmp):
    shutil.rmtree(out(tmp))  # nor the TensorBoard runs/ it started writing
    config = config_for(b, tmp, loss_weights={"ner": 1e308, "topic": 1e308}, report_to="tensorboard")
    return train(config), ["training step 1"]


# ---- 2. values that pass the schema but make no sense ---------------------------------------------------------------
def case_nan_loss_weight(b, tmp):
    return train(config_for(b, tmp, loss_weights={"ner": float("nan")})), ["loss_weights.ner", "nan"]


def case_negative_loss_weight(b, tmp):
    return train(config_for(b, tmp, loss_weights={"ner": -1.0})), ["loss_weights.ner", ">= 0"]


def case_all_loss_weights_zero(b, tmp):
    return train(config_for(b, tmp, loss_weights={"ner": 0, "topic": 0})), ["loss_weights", "weight 0"]


def case_loss_weight_of_unknown_task(b, tmp):
    return train(config_for(b, tmp, loss_weights={"intent": 2.0})), ["loss_weights.intent"]


def case_infinite_class_weight(b, tmp):
    config = config_for(b, tmp)
    config["tasks"][0]["class_weights"] = [float("inf"), 1.0, 1.0, 1.0]
    return train(config), ["tasks[0].class_weights", "finite"]


def case_class_weights_all_zero(b, tmp):
    config = config_for(b, tmp)
    config["tasks"][0]["class_weights"] = [0, 0, 0, 0]
    return train(config), ["tasks[0].class_weights", "one > 0"]


def case_negative_learning_rate(b, tmp):
    return train(config_for(b, tmp, learning_rate=-1e-3)), ["learning_rate", "> 0", "-0.001"]


def case_zero_learning_rate(b, tmp):
    return train(config_for(b, tmp, learning_rate=0)), ["learning_rate", "> 0"]


def case_infinite_learning_rate(b, tmp):
    return train(config_for(b, tmp, learning_rate=float("inf"))), ["learning_rate", "inf"]


def case_negative_head_learning_rate(b, tmp):
    return train(config_for(b, tmp, head_learning_rate=-0.01)), ["head_learning_rate"]


def case_nan_encoder_learning_rate(b, tmp):
    return train(config_for(b, tmp, encoder_learning_rate=float("nan"))), ["encoder_learning_rate", "nan"]


def case_layerwise_decay_zero(b, tmp):
    return train(config_for(b, tmp, layerwise_lr_decay=0.0)), ["layerwise_lr_decay"]


def case_zero_train_batch_size(b, tmp):
    return train(config_for(b, tmp, per_device_train_batch_size=0)), ["per_device_train_batch_size", ">= 1"]


def case_zero_eval_batch_size(b, tmp):
    return train(config_for(b, tmp, per_device_eval_batch_size=0)), ["per_device_eval_batch_size"]


def case_zero_accumulation_steps(b, tmp):
    return train(config_for(b, tmp, gradient_accumulation_steps=0)), ["gradient_accumulation_steps", ">= 1"]


def case_zero_epochs(b, tmp):
    return train(config_for(b, tmp, max_steps=-1, num_train_epochs=0)), ["num_train_epochs"]


def case_negative_weight_decay(b, tmp):
    return train(config_for(b, tmp, weight_decay=-0.1)), ["weight_decay"]


def case_adam_beta_above_one(b, tmp):
    return train(config_for(b, tmp, adam_beta1=1.5)), ["adam_beta1", "< 1"]


def case_nan_max_grad_norm(b, tmp):
    return train(config_for(b, tmp, max_grad_norm=float("nan"))), ["max_grad_norm"]


def case_negative_warmup(b, tmp):
    return train(config_for(b, tmp, warmup_steps=-5)), ["warmup_steps"]


def case_label_smoothing_one(b, tmp):
    return train(config_for(b, tmp, label_smoothing_factor=1.0)), ["label_smoothing_factor"]


def case_classifier_dropout_above_one(b, tmp):
    return train(config_for(b, tmp, classifier_dropout=1.5)), ["classifier_dropout"]


def case_negative_freeze_layers(b, tmp):
    return train(config_for(b, tmp, freeze_layers=-1)), ["freeze_layers", ">= 0"]


def case_zero_pad_multiple(b, tmp):
    return train(config_for(b, tmp, pad_to_multiple_of=0)), ["pad_to_multiple_of"]


def case_zero_max_train_samples(b, tmp):
    return train(config_for(b, tmp, max_train_samples=0)), ["max_train_samples"]


def case_validation_percentage_100(b, tmp):
    return train(config_for(b, tmp, validation_split_percentage=100)), ["validation_split_percentage"]


def case_zero_sampling_temperature(b, tmp):
    return train(config_for(b, tmp, task_sampling="temperature", sampling_temperature=0)), ["sampling_temperature"]


def case_negative_seed(b, tmp):
    return train(config_for(b, tmp, seed=-1)), ["seed", ">= 0"]


def case_zero_logging_steps(b, tmp):
    return train(config_for(b, tmp, logging_steps=0)), ["logging_steps"]


def case_unknown_scheduler(b, tmp):
    return train(config_for(b, tmp, lr_scheduler_type="cosinus")), ["lr_scheduler_type", "cosinus", "cosine"]


def case_unknown_eval_strategy(b, tmp):
    return train(config_for(b, tmp, eval_strategy="sometimes")), ["eval_strategy", "sometimes"]


def case_unknown_optimizer(b, tmp):
    return train(config_for(b, tmp, optim="adamw_fancy")), ["optim", "adamw_fancy"]


def case_unknown_attention(b, tmp):
    return train(config_for(b, tmp, attn_implementation="fancy")), ["attn_implementation", "fancy", "sdpa"]


def case_unknown_reporting_integration(b, tmp):
    return train(config_for(b, tmp, report_to="foo")), ["report_to", "'foo'", "tensorboard"]


def case_reporting_integration_not_installed(b, tmp):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    return train(config_for(b, tmp, report_to="wandb")), ["report_to", "'wandb'", "not installed"]


def case_unknown_pooling(b, tmp):
    return train(config_for(b, tmp, pooling="average")), ["pooling", "average", "mean"]


def case_unknown_loss_weighting(b, tmp):
    return train(config_for(b, tmp, loss_weighting="learned")), ["loss_weighting", "learned"]


def case_unknown_loss_reduction(b, tmp):
    return train(config_for(b, tmp, loss_reduction="mean")), ["loss_reduction", "'mean'", "per_row"]


def case_unknown_best_metric(b, tmp):
    config = config_for(b, tmp, metric_for_best_model="eval_f1", load_best_model_at_end=True, eval_strategy="steps",
                        eval_steps=2, save_strategy="steps", save_steps=2)
    return train(config), ["metric_for_best_model", "eval_f1", "ner_f1"]


def case_unfreeze_schedule_unknown_key(b, tmp):
    config = config_for(b, tmp, unfreeze_schedule={"start_frozen_layers": 1, "every_steps": 2})
    return train(config), ["unfreeze_schedule.every_steps"]


def case_unfreeze_every_zero_steps(b, tmp):
    config = config_for(b, tmp, unfreeze_schedule={"start_frozen_layers": 1, "unfreeze_every_steps": 0})
    return train(config), ["unfreeze_schedule.unfreeze_every_steps", ">= 1"]


def case_unfreeze_both_intervals(b, tmp):
    schedule = {"start_frozen_layers": 1, "unfreeze_every_steps": 2, "unfreeze_every_epochs": 1}
    return train(config_for(b, tmp, unfreeze_schedule=schedule)), ["unfreeze_schedule", "exactly one"]


def case_fractional_batch_size(b, tmp):
    return train(config_for(b, tmp, per_device_train_batch_size=8.5)), ["per_device_train_batch_size", "integer"]


def case_boolean_max_steps(b, tmp):
    return train(config_for(b, tmp, max_steps=True)), ["max_steps", "integer", "True"]


def case_learning_rate_as_a_word(b, tmp):
    return train(config_for(b, tmp, learning_rate="fast")), ["config.json: learning_rate", "a number", "fast"]


# ---- 3. names that collide ------------------------------------------------------------------------------------------
def reserved_task_name(b, tmp, name, index=0):
    config = config_for(b, tmp)
    config["tasks"][index]["name"] = name
    return train(config), [f"tasks[{index}].name", repr(name), "reserved"]


def case_task_named_text(b, tmp):
    return reserved_task_name(b, tmp, "text")


def case_task_named_words(b, tmp):
    return reserved_task_name(b, tmp, "words", index=1)


def case_task_named_tags(b, tmp):
    return reserved_task_name(b, tmp, "tags", index=1)


def case_task_named_like_a_module_method(b, tmp):
    return reserved_task_name(b, tmp, "type")


def case_task_named_training(b, tmp):
    return reserved_task_name(b, tmp, "training", index=1)


# ---- 4. model folders that do not match themselves ----------------------------------------------------------------
def case_model_without_tokenizer_json(b, tmp):
    model = model_copy(b, tmp)
    (model / "tokenizer.json").unlink()
    return predict(model, tmp), [f"model {model}", "tokenizer", "5 tokens", "30,522"]


def case_tokenizer_of_another_model(b, tmp):
    from transformers import AutoTokenizer

    model = model_copy(b, tmp)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.add_tokens([f"newword{index}" for index in range(20)])  # ids beyond the encoder's embeddings
    tokenizer.save_pretrained(model)
    return cli_command("embed", "--model", model, "--input", text_input(tmp), "--output", tmp / "e.npy"), [
        f"model {model}", "30,542 tokens", "30,522"]


def case_config_labels_differ_from_head(b, tmp):
    model = model_copy(b, tmp)
    edit_json(model / "config.json", lambda config: config["tasks"][0]["labels"].append("weather"))
    return predict(model, tmp), [f"model {model}", "heads.topic.classifier", "[4, 32] in the checkpoint"]


def case_config_task_renamed(b, tmp):
    model = model_copy(b, tmp)
    edit_json(model / "config.json", lambda config: config["tasks"][0].update(name="subject"))
    return predict(model, tmp), [f"model {model}", "heads.subject", "missing", "heads.topic"]


def case_config_task_added(b, tmp):
    model = model_copy(b, tmp)
    extra = {"name": "sentiment", "type": "sequence_classification", "labels": ["neg", "pos"]}
    edit_json(model / "config.json", lambda config: config["tasks"].append(extra))
    return cli_command("export-task", "--model", model, "--task", "ner", "--output", tmp / "ner"), [
        "heads.sentiment", "missing"]


def case_truncated_weights(b, tmp):
    model = model_copy(b, tmp)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return predict(model, tmp), [f"{weights}: the weights file is damaged"]


def case_garbage_weights(b, tmp):
    model = model_copy(b, tmp)
    (model / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    return cli_command("export-sentence-transformers", "--model", model, "--output", tmp / "st"), [
        "model.safetensors: the weights file is damaged"]


def case_no_weights_file(b, tmp):
    model = model_copy(b, tmp)
    (model / "model.safetensors").unlink()
    return predict(model, tmp), [f"model {model}", "no model.safetensors"]


def case_damaged_tokenizer_json(b, tmp):
    model = model_copy(b, tmp)
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": {')
    return predict(model, tmp), [f"model {model}", "cannot load its tokenizer"]


def case_model_config_without_tasks(b, tmp):
    model = model_copy(b, tmp)
    edit_json(model / "config.json", lambda config: config.pop("tasks"))
    return predict(model, tmp), ["config.json", "declares no tasks"]


def case_model_path_is_a_file(b, tmp):
    return predict(b["previous"] / "model.safetensors", tmp), ["model.safetensors", "is a file"]


def case_malformed_model_config(b, tmp):
    model = model_copy(b, tmp)
    (model / "config.json").write_text('{"model_type": "hf_mtl",\n  "tasks": [}\n')
    return predict(model, tmp), ["config.json:2:", "malformed JSON"]


def case_plain_encoder_given_to_predict(b, tmp):
    return predict(b["encoder"], tmp), [f"model {b['encoder']}", "not an hf_mtl", "'bert'"]


def case_continue_training_from_damaged_weights(b, tmp):
    model = model_copy(b, tmp)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return train(joint_config(model, b["data"], out(tmp))), [f"{weights}: the weights file is damaged"]


def case_continue_training_without_tokenizer_json(b, tmp):
    model = model_copy(b, tmp)
    (model / "tokenizer.json").unlink()
    return train(joint_config(model, b["data"], out(tmp))), [f"model {model}", "tokenizer"]


def case_encoder_folder_without_tokenizer_json(b, tmp):
    encoder = Path(shutil.copytree(b["encoder"], tmp / "encoder"))
    (encoder / "tokenizer.json").unlink()
    return train(joint_config(encoder, b["data"], out(tmp))), [f"model {encoder}", "tokenizer"]


def case_continue_training_from_mismatched_folder(b, tmp):
    model = model_copy(b, tmp)
    edit_json(model / "config.json", lambda config: config["tasks"][1]["labels"].append("B-MISC"))
    config = joint_config(model, b["data"], out(tmp))
    config["tasks"][1]["labels"] = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "B-MISC"]
    return train(config), [f"model {model}", "heads.ner.classifier"]


# ---- 5. outputs that destroy inputs -----------------------------------------------------------------------------------
def case_predict_output_is_its_input(b, tmp):
    source = text_input(tmp)
    return cli_command("predict", "--model", b["previous"], "--input", source, "--output", source), [
        f"--output {source}", "input"]


def case_embed_output_is_its_input(b, tmp):
    source = text_input(tmp, "input.npy")
    return cli_command("embed", "--model", b["previous"], "--input", source, "--output", source), [
        f"--output {source}", "input"]


def case_export_task_into_the_model_folder(b, tmp):
    model = model_copy(b, tmp)
    return cli_command("export-task", "--model", model, "--task", "ner", "--output", model), [
        f"--output {model}", "input"]


def case_export_sentence_transformers_into_the_model_folder(b, tmp):
    model = model_copy(b, tmp)
    return cli_command("export-sentence-transformers", "--model", model, "--output", model), [f"--output {model}"]


def case_export_into_a_folder_holding_the_model(b, tmp):
    model = model_copy(b, tmp, "models/mine")
    return cli_command("export-sentence-transformers", "--model", model, "--output", tmp / "models"), [
        f"--output {tmp / 'models'}", f"holds {model}"]


def case_embed_output_is_the_model_weights(b, tmp):
    model = model_copy(b, tmp)
    return cli_command("embed", "--model", model, "--input", text_input(tmp), "--output",
                       model / "model.safetensors"), ["--output", "part of the input folder"]


def case_export_into_a_folder_of_the_model(b, tmp):
    model = model_copy(b, tmp)
    return cli_command("export-sentence-transformers", "--model", model, "--output", model / "plots"), [
        "plots", "part of the input folder"]


def case_predict_output_is_a_hard_link_to_its_input(b, tmp):
    source = text_input(tmp)
    os.link(source, tmp / "alias.txt")
    return cli_command("predict", "--model", b["previous"], "--input", source, "--output", tmp / "alias.txt"), [
        "alias.txt", "input"]


def case_predict_output_through_a_symlink(b, tmp):
    (tmp / "real.jsonl").write_text("kept\n")
    (tmp / "link.jsonl").symlink_to(tmp / "real.jsonl")
    return cli_command("predict", "--model", b["previous"], "--input", text_input(tmp), "--output",
                       tmp / "link.jsonl"), ["--output", "link.jsonl", "symbolic link"]


def case_export_output_through_a_symlink(b, tmp):
    (tmp / "real").mkdir()
    (tmp / "link").symlink_to(tmp / "real", target_is_directory=True)
    return cli_command("export-sentence-transformers", "--model", b["previous"], "--output", tmp / "link"), [
        "--output", "symbolic link"]


def case_export_over_a_folder_that_is_not_a_model(b, tmp):
    (tmp / "notes").mkdir()
    (tmp / "notes" / "todo.txt").write_text("keep me\n")
    return cli_command("export-task", "--model", b["previous"], "--task", "ner", "--output", tmp / "notes"), [
        f"--output {tmp / 'notes'}", "not a model folder", "todo.txt"]


def case_predict_output_is_a_folder(b, tmp):
    return cli_command("predict", "--model", b["previous"], "--input", text_input(tmp), "--output", tmp), [
        "--output", "is a folder"]


def case_train_output_dir_is_the_model(b, tmp):
    model = model_copy(b, tmp)
    return train(joint_config(model, b["data"], model)), [f"output_dir {model}", "input"]


def case_train_output_dir_holds_the_data(b, tmp):
    data = Path(shutil.copytree(b["data"], tmp / "work" / "data"))
    return train(joint_config(b["encoder"], data, tmp / "work")), [f"output_dir {tmp / 'work'}"]


def case_train_output_dir_holds_the_config(b, tmp):
    run = Path(shutil.copytree(b["previous"], tmp / "run"))
    (run / "run.json").write_text(json.dumps(joint_config(b["encoder"], b["data"], run)))
    return ("train-argv", None, [str(run / "run.json")]), [f"output_dir {run}", "holds", "run.json"]


def case_train_output_dir_is_not_a_run_folder(b, tmp):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("\\section{keep}\n")
    return train(joint_config(b["encoder"], b["data"], tmp / "mine")), [
        f"output_dir {tmp / 'mine'}", "not an hf_mtl run folder", "thesis.tex"]


def case_train_output_dir_is_a_file(b, tmp):
    (tmp / "file").write_text("x\n")
    return train(joint_config(b["encoder"], b["data"], tmp / "file")), ["output_dir", "is a file"]


def case_train_output_dir_is_a_symlink(b, tmp):
    (tmp / "link").symlink_to(out(tmp), target_is_directory=True)
    return train(joint_config(b["encoder"], b["data"], tmp / "link")), ["output_dir", "symbolic link"]


# ---- 6. columns of the wrong kind -------------------------------------------------------------------------------------
def case_list_column_as_single_label(b, tmp):
    rows = [dict(GOOD_ROW, topic=["sports"]), dict(OTHER_ROW, topic=["business", "politics"])]
    return train(with_rows(b, tmp, rows)), ["column 'topic'", "tasks[0].label_column", "multi_label_classification"]


def case_list_among_single_labels(b, tmp):
    rows = [GOOD_ROW, dict(OTHER_ROW, topic=["B-MISC", "O"])]
    return train(with_rows(b, tmp, rows)), ["train.jsonl:2", "label_column", "multi_label_classification"]


def case_int_among_string_labels(b, tmp):
    return train(with_rows(b, tmp, [GOOD_ROW, dict(OTHER_ROW, topic=3)])), ["train.jsonl:2", "label", "3"]


def case_null_word(b, tmp):
    rows = [GOOD_ROW, dict(OTHER_ROW, tokens=["omar", None, "acme"])]
    return train(with_rows(b, tmp, rows)), ["train.jsonl:2", "tokens_column", "word 2 is null"]


def case_number_as_word(b, tmp):
    rows = [GOOD_ROW, dict(OTHER_ROW, tokens=["omar", 7, "acme"])]
    return train(with_rows(b, tmp, rows)), ["train.jsonl:2", "word 2", "7"]


def case_null_tag(b, tmp):
    rows = [GOOD_ROW, dict(OTHER_ROW, tags=["B-PER", None, "B-ORG"])]
    return train(with_rows(b, tmp, rows)), ["train.jsonl:2", "tags_column", "tag 2 is null"]


def case_float_labels(b, tmp):
    rows = [dict(GOOD_ROW, topic=1.5), dict(OTHER_ROW, topic=2.5)]
    return train(with_rows(b, tmp, rows)), ["column 'topic'", "float64"]


def case_object_labels(b, tmp):
    rows = [dict(GOOD_ROW, topic={"name": "sports"}), dict(OTHER_ROW, topic={"name": "business"})]
    return train(with_rows(b, tmp, rows)), ["column 'topic'", "not labels"]


def case_tags_as_one_string(b, tmp):
    rows = [dict(GOOD_ROW, tags="B-PER O B-LOC"), dict(OTHER_ROW, tags="B-PER O B-ORG")]
    return train(with_rows(b, tmp, rows)), ["column 'tags'", "tasks[1].tags_column", "one tag per word"]


def case_text_column_holding_lists(b, tmp):
    config = with_rows(b, tmp, [GOOD_ROW, OTHER_ROW])
    config["tasks"] = [{"name": "topic", "type": "sequence_classification", "dataset": "demo",
                        "text_column": "tokens", "label_column": "topic"}]
    return train(config), ["column 'tokens'", "text_column", "lists"]


# ---- 7. two writers of one output -------------------------------------------------------------------------------------
def held_lock(target):
    lock = filelock.FileLock(str(sibling_path(target, "lock")), timeout=0)
    lock.acquire()
    sibling_path(target, "lock").write_text("pid 4242 on elsewhere\n")
    return lock


def case_train_into_a_locked_output_dir(b, tmp):
    return ("locked", out(tmp), train(config_for(b, tmp))), ["output_dir", "another hf_mtl run", "pid 4242"]


def case_predict_into_a_locked_output(b, tmp):
    return ("locked", tmp / "predictions.jsonl", predict(b["previous"], tmp)), ["--output", "pid 4242"]


def case_export_into_a_locked_folder(b, tmp):
    command = cli_command("export-sentence-transformers", "--model", b["previous"], "--output", tmp / "st")
    return ("locked", tmp / "st", command), ["--output", "another hf_mtl run"]


# ---- 8. messages that name the right thing ------------------------------------------------------------------------
def case_freeze_heads_as_a_string(b, tmp):
    return train(config_for(b, tmp, freeze_heads="topic")), ["freeze_heads", "a list of strings", "'topic'"]


def case_latin1_config(b, tmp):
    raw = json.dumps(config_for(b, tmp), indent=1).replace('"seed": 7', '"seed": 7, "run_name": "café"')
    return train(raw.encode("latin-1")), ["config.json:", "not UTF-8"]


def case_config_is_a_folder(b, tmp):
    (tmp / "folder.json").mkdir()
    return ("train-argv", None, [str(tmp / "folder.json")]), ["folder.json", "is a folder"]


def case_config_is_a_list(b, tmp):
    return train(json.dumps([config_for(b, tmp)])), ["config.json", "JSON object"]


def case_jsonl_syntax_error_after_blank_lines(b, tmp):
    rows = [GOOD_ROW, "", "", OTHER_ROW, '{"tokens": ["x"], "tags": ["O"]', GOOD_ROW]
    return train(with_rows(b, tmp, rows)), ["train.jsonl:5:", "not valid JSON"]


def case_jsonl_row_that_is_not_an_object(b, tmp):
    return train(with_rows(b, tmp, [GOOD_ROW, "", OTHER_ROW, "[1, 2]"])), ["train.jsonl:4", "object"]


def case_batch_size_as_a_word(b, tmp):
    return train(config_for(b, tmp, per_device_train_batch_size="eight")), [
        "config.json: per_device_train_batch_size", "an integer", "eight"]


def case_negative_learning_rate_on_the_command_line(b, tmp):
    return train(config_for(b, tmp), "--learning_rate", "-1"), ["learning_rate", "> 0"]


def case_predict_input_is_a_folder(b, tmp):
    (tmp / "texts").mkdir()
    return cli_command("predict", "--model", b["previous"], "--input", tmp / "texts", "--output",
                       tmp / "predictions.jsonl"), ["--input", "texts", "is a folder"]


def case_tasks_not_a_list(b, tmp):
    return train(config_for(b, tmp, tasks={"name": "topic"})), ["tasks", "list"]


def case_model_name_null(b, tmp):
    return train(config_for(b, tmp, model_name_or_path=None)), ["model_name_or_path", "a string", "None"]


# ---- III.E: command-line inputs, standard input and output, resumed predictions --------------------------------------
def jsonl_input(tmp, *lines):
    path = tmp / "input.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def case_predict_lone_surrogate(b, tmp):
    source = jsonl_input(tmp, '{"text": "anna visited paris"}', '{"text": "omar \\ud800 left"}')
    return cli_command("predict", "--model", b["previous"], "--input", source, "--output", tmp / "p.jsonl"), [
        f"--input {source}, line 2", '"text"', "lone surrogate"]


def case_embed_jsonl_pair(b, tmp):
    source = jsonl_input(tmp, '{"text": "anna", "text_pair": "omar"}')
    return cli_command("embed", "--model", b["previous"], "--input", source, "--output", tmp / "e.npy"), [
        f"--input {source}, line 1", "text_pair"]


def case_embed_jsonl_without_text(b, tmp):
    source = jsonl_input(tmp, '{"sentence": "anna visited paris"}')
    return cli_command("embed", "--model", b["previous"], "--input", source, "--output", tmp / "e.npy"), [
        f"--input {source}, line 1", '"text"', '"tokens"']


def case_predict_resume_to_stdout(b, tmp):
    return cli_command("predict", "--model", b["previous"], "--input", text_input(tmp), "--output", "-",
                       "--resume"), ["--resume", "standard output"]


def case_predict_resume_after_the_input_changed(b, tmp):
    source, output = text_input(tmp), tmp / "predictions.jsonl"
    (tmp / ".predictions.jsonl.hf_mtl-partial").write_text('{"text": "anna visited paris"}\n', encoding="utf-8")
    record = {"input": {"path": str(source), "size": 1, "mtime_ns": 1}, "input-format": None, "tags": False,
              "bf16": cpu_has_native_bf16(), "backend": "torch", "onnx-file": None}  # only the input differs
    record["model"] = cli.model_identity(str(b["previous"]))
    (tmp / ".predictions.jsonl.hf_mtl-partial.json").write_text(json.dumps(record), encoding="utf-8")
    return cli_command("predict", "--model", b["previous"], "--input", source, "--output", output, "--resume"), [
        "--resume", ".predictions.jsonl.hf_mtl-partial", "another input", "without --resume"]


def case_evaluate_data_without_labels(b, tmp):
    source = jsonl_input(tmp, '{"tokens": ["anna", "visited", "paris"]}')
    return cli_command("evaluate", "--model", b["previous"], "--data", source), [
        f"--data {source}", "no column holds labels", "'topic'", "--config"]


def case_evaluate_unknown_task(b, tmp):
    return cli_command("evaluate", "--model", b["previous"], "--data", b["data"] / "test.jsonl", "--task", "pos"), [
        "--task pos", "no such task", "topic, ner"]


def case_evaluate_output_is_the_model(b, tmp):
    return cli_command("evaluate", "--model", out(tmp), "--data", b["data"] / "test.jsonl", "--output", out(tmp)), [
        f"--output {out(tmp)}"]


def case_info_of_a_plain_encoder(b, tmp):
    return cli_command("info", b["encoder"]), [f"model {b['encoder']}", "not an hf_mtl model folder", "'bert'"]


# ---- III.B: model folders edited by hand (the weights record what they were saved as) ------------------------------
def case_config_with_fewer_encoder_layers(b, tmp):
    model = model_copy(b, tmp)
    edit_json(model / "config.json", lambda config: config["encoder"].update(num_hidden_layers=1))
    return predict(model, tmp), [f"model {model}", "encoder weights in the checkpoint that config.json's encoder does "
                                 "not have", "encoder.encoder.layer.1.", "num_hidden_layers is 1 in config.json but 2"]


def case_sentence_task_turned_into_token_task(b, tmp):
    model = model_copy(b, tmp)
    edit_json(model / "config.json", lambda config: config["tasks"][0].update(type="token_classification"))
    return predict(model, tmp), [f"model {model}", "task 'topic': kind 'token_classification' in config.json, "
                                 "'single_label_classification' in the weights"]


def case_token_labels_reordered(b, tmp):
    model = model_copy(b, tmp)
    edit_json(model / "config.json", lambda config: config["tasks"][1]["labels"].reverse())
    return cli_command("export-task", "--model", model, "--task", "ner", "--output", tmp / "ner"), [
        f"model {model}", "task 'ner': labels ['I-PER'", "in config.json, ['O'", "in the weights"]


# ---- III.D: resuming a changed run, damaged checkpoints, push_to_hub preflight ---------------------------------------
def resumable(b, tmp, **overrides):
    """A copy of a run with checkpoint-2 (trained once per module), and the config that resumes it with `overrides`."""
    source = b["root"] / "resumable"
    settings = dict(max_steps=2, save_strategy="steps", save_steps=2, do_eval=False, do_predict=False)
    if not source.exists():
        run_config(joint_config(b["encoder"], b["data"], source, **settings), b["root"])
    run = Path(shutil.copytree(source, tmp / "resumable"))
    config = joint_config(b["encoder"], b["data"], run, **{**settings, "resume_from_checkpoint": True, **overrides})
    return run, config


def case_resume_with_reordered_labels(b, tmp):
    run, config = resumable(b, tmp)
    config["tasks"][0]["labels"] = ["technology", "sports", "politics", "business"]
    return train(config), [f"resume_from_checkpoint {run / 'checkpoint-2'}", "tasks.topic.labels: checkpoint"]


def case_resume_with_changed_pooling(b, tmp):
    run, config = resumable(b, tmp, pooling="max")
    return train(config), ["resume_from_checkpoint", "pooling: checkpoint 'mean', run 'max'"]


def case_resume_with_an_added_task(b, tmp):
    run, config = resumable(b, tmp)
    config["tasks"].append({"name": "topic2", "type": "sequence_classification", "dataset": "demo",
                            "label_column": "topic"})
    return train(config), ["resume_from_checkpoint", "tasks: checkpoint ['topic', 'ner'], run ['topic', 'ner', 'topic2']"]


def case_resume_with_crf_turned_on(b, tmp):
    run, config = resumable(b, tmp)
    config["tasks"][1]["crf"] = True
    return train(config), ["resume_from_checkpoint", "tasks.ner.crf: checkpoint None, run True"]


def case_resume_with_another_encoder(b, tmp):
    run, config = resumable(b, tmp, model_name_or_path=str(b["distilbert"]))
    return train(config), ["resume_from_checkpoint", "encoder.model_type: checkpoint 'bert', run 'distilbert'"]


def case_resume_with_a_changed_learning_rate(b, tmp):
    run, config = resumable(b, tmp)
    return train(config, "--learning_rate", "3e-3"), ["resume_from_checkpoint", "learning_rate: checkpoint 0.001, run 0.003"]


def case_resume_when_every_checkpoint_is_damaged(b, tmp):
    run, config = resumable(b, tmp)
    optimizer = run / "checkpoint-2" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    return train(config), [f"resume_from_checkpoint: every checkpoint in {run} is damaged"]


def case_resume_from_a_named_damaged_checkpoint(b, tmp):
    run, config = resumable(b, tmp)
    (run / "checkpoint-2" / "scheduler.pt").write_bytes(b"")
    config["resume_from_checkpoint"] = str(run / "checkpoint-2")
    return train(config), [f"resume_from_checkpoint {run / 'checkpoint-2'}: the checkpoint is damaged", "scheduler.pt"]


def case_push_to_hub_offline(b, tmp):
    return train(config_for(b, tmp, push_to_hub=True)), ["push_to_hub: HF_HUB_OFFLINE is set"]


# ---- III.F: token tasks with plain (POS) or BIOES tags ---------------------------------------------------------------


def case_pos_tags_in_a_bio_task(b, tmp):
    rows = [GOOD_ROW, dict(OTHER_ROW, tags=["PROPN", "VERB", "PROPN"])]
    return train(with_rows(b, tmp, rows)), [
        "train.jsonl:2", "tasks[1].tags_column", "tag 'PROPN'", "(tag_format 'BIO')", '"tag_format": "plain"']


def case_bioes_tags_in_a_bio_task(b, tmp):
    rows = [GOOD_ROW, dict(OTHER_ROW, tags=["S-PER", "O", "S-ORG"])]
    return train(with_rows(b, tmp, rows)), ["train.jsonl:2", "tag 'S-PER'", '"tag_format": "BIOES"']


def case_unknown_tag_format(b, tmp):
    config = config_for(b, tmp)
    config["tasks"][1]["tag_format"] = "IOBES"
    return train(config), ["tasks[1].tag_format", "'IOBES'", "'BIO', 'BIOES', 'plain'"]


def case_iob1_data_for_plain_tags(b, tmp):
    config = config_for(b, tmp)
    config["datasets"]["demo"]["tag_scheme"] = "iob1"
    config["tasks"][1]["tag_format"] = "plain"
    return train(config), ["datasets.demo.tag_scheme", "tasks[1] ('ner')", "tag_format 'plain'"]


# ---- III.C: outputs onto special files, something planted at the lock path --------------------------------------------
# A FIFO or device is only looked at (tree_hash does not open it either): renaming a file over it would replace it.
def predict_into(b, tmp, output):
    return cli_command("predict", "--model", b["previous"], "--input", text_input(tmp), "--output", output)


def case_predict_output_is_a_fifo(b, tmp):
    os.mkfifo(tmp / "pipe")
    return predict_into(b, tmp, tmp / "pipe"), ["--output", "pipe", "named pipe (FIFO)", "regular file"]


def case_predict_output_is_a_device(b, tmp):
    import stat

    if os.geteuid() != 0:
        pytest.skip("os.mknod needs root")
    os.mknod(tmp / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a copy of /dev/null
    return predict_into(b, tmp, tmp / "null"), ["--output", "null", "character device"]


def case_export_output_is_a_fifo(b, tmp):
    os.mkfifo(tmp / "export")
    command = cli_command("export-task", "--model", b["previous"], "--task", "ner", "--output", tmp / "export")
    return command, ["--output", "export", "named pipe (FIFO)", "not a folder"]


def case_lock_file_path_is_a_symlink(b, tmp):
    victim = text_input(tmp, "victim.txt")
    sibling_path(tmp / "predictions.jsonl", "lock").symlink_to(victim.name)
    return predict(b["previous"], tmp), ["--output", ".predictions.jsonl.hf_mtl-lock", "symbolic link", "remove it"]


def case_train_lock_file_path_is_a_folder(b, tmp):
    sibling_path(out(tmp), "lock").mkdir()
    return train(config_for(b, tmp)), ["output_dir", ".out.hf_mtl-lock", "is a folder", "rm -r"]


def distilled(b, tmp, teachers, **settings):
    return train(config_for(b, tmp, distillation={"teachers": teachers, **settings}))


def case_distillation_alpha_outside_0_1(b, tmp):
    return distilled(b, tmp, {"ner": str(b["previous"])}, alpha=1.5), ["distillation.alpha", "[0, 1]", "1.5"]


def case_distillation_temperature_not_positive(b, tmp):
    return distilled(b, tmp, {"ner": str(b["previous"])}, temperature=0), ["distillation.temperature", "positive"]


def case_distillation_teacher_folder_missing(b, tmp):
    return distilled(b, tmp, {"ner": str(tmp / "teacher")}), ["distillation.teachers.ner", "does not exist"]


def case_distillation_teacher_not_a_model(b, tmp):
    (tmp / "teacher").mkdir()
    (tmp / "teacher" / "notes.txt").write_text("not a model\n")
    return distilled(b, tmp, {"ner": str(tmp / "teacher")}), ["distillation.teachers.ner", "not a model folder"]


def case_distillation_teacher_for_unknown_task(b, tmp):
    return distilled(b, tmp, {"intent": str(b["previous"])}), ["distillation.teachers.intent", "no task 'intent'"]


def case_distillation_self_from_plain_encoder(b, tmp):
    return distilled(b, tmp, {"ner": "self"}), ["distillation.teachers.ner", '"self"', "plain encoder"]


def case_distillation_teacher_with_other_labels(b, tmp):
    from transformers import AutoModelForTokenClassification

    from conftest import tiny_encoder_config

    labels = ["O", "B-MISC", "I-MISC"]
    config = tiny_encoder_config(num_labels=3, id2label=dict(enumerate(labels)),
                                 label2id={label: index for index, label in enumerate(labels)})
    config.architectures = ["BertForTokenClassification"]
    AutoModelForTokenClassification.from_config(config).save_pretrained(tmp / "teacher")
    return distilled(b, tmp, {"ner": str(tmp / "teacher")}), [
        "distillation.teachers.ner", "other labels", "teacher ['O', 'B-MISC', 'I-MISC']", "task ['O', 'B-LOC'"]


CASES = {name[len("case_"):]: function for name, function in globals().items() if name.startswith("case_")}
# Cases whose run gets as far as the model and the Trainer (seconds each, not seconds' fractions): marked `training`.
TRAINING_CASES = {
    "continue_training_from_mismatched_folder", "diverging_loss_in_a_fresh_output_dir",
    "diverging_loss_with_tensorboard_logs", "eval_without_validation_split", "everything_frozen", "freeze_unknown_head",
    "loss_overflows_during_training", "pooler_without_pooler", "predict_without_test_split",
    "resume_from_a_named_damaged_checkpoint",
}


def tree_hash(folder: Path) -> dict:
    """Every path under `folder` (lock and staging siblings included) -> hash of its content, or its link target."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            hashes[relative] = "link:" + os.readlink(path)
        elif path.is_file():
            hashes[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            hashes[relative] = "folder"
    return hashes


def prepare(command, tmp):
    """Write what the command reads (its config file); return a function that runs it and returns its exit status."""
    kind, config, argv = command
    if kind == "cli":
        return lambda: cli.main(argv)
    if kind == "train-argv":
        return lambda: run_train(argv)
    path = tmp / "config.json"
    if isinstance(config, bytes):
        path.write_bytes(config)
    else:
        path.write_text(config if isinstance(config, str) else json.dumps(config))
    return lambda: run_train([str(path), *argv])


def run_train(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    return exit_info.value.code


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.training) if name in TRAINING_CASES else name for name in sorted(CASES)]
)
def test_user_error_is_one_line_exit_2_and_changes_nothing(name, base, tmp_path, capsys):
    shutil.copytree(base["previous"], out(tmp_path))
    command, expected = CASES[name](base, tmp_path)
    lock = None
    if command[0] == "locked":
        _, target, command = command
        lock = held_lock(target)
    run = prepare(command, tmp_path)
    before = tree_hash(tmp_path)
    capsys.readouterr()
    try:
        status = run()
    finally:
        if lock is not None:
            lock.release()
    captured = capsys.readouterr()
    assert status == 2, captured.err[-2000:]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    for fragment in expected:
        assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in captured.err + captured.out
    after = tree_hash(tmp_path)
    assert after == before, {key: (before.get(key), after.get(key)) for key in set(before) | set(after)
                             if before.get(key) != after.get(key)}


SUBPROCESS_COMMANDS = {
    "train": (["run_mtl.py", "{config}"], "error: tasks[1].name"),
    "predict": (["-m", "hf_mtl.cli", "predict", "--model", "{model}", "--input", "{input}", "--output", "{input}"],
                "error: --output"),
    "export": (["-m", "hf_mtl.cli", "export-task", "--model", "{damaged}", "--task", "ner", "--output", "{export}"],
               "the weights file is damaged"),
}


@pytest.mark.parametrize("command", sorted(SUBPROCESS_COMMANDS))
@pytest.mark.subprocess
def test_real_commands_print_one_line_and_exit_2(command, base, tmp_path):
    """The real entry points in a subprocess: exit status 2, one `error:` line, no traceback unless HF_MTL_DEBUG=1."""
    config = config_for(base, tmp_path)
    config["tasks"][1]["name"] = "topic"
    (tmp_path / "config.json").write_text(json.dumps(config))
    damaged = Path(shutil.copytree(base["previous"], tmp_path / "damaged"))
    (damaged / "model.safetensors").write_bytes(b"\0" * 64)
    names = {"config": tmp_path / "config.json", "model": base["previous"], "input": text_input(tmp_path),
             "damaged": damaged, "export": tmp_path / "export"}
    arguments, fragment = SUBPROCESS_COMMANDS[command]
    argv = [sys.executable] + [part.format(**names) for part in arguments]
    before = tree_hash(tmp_path)
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], errors
    assert tree_hash(tmp_path) == before
    if command == "train":
        debug = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                               env=dict(os.environ, HF_MTL_DEBUG="1"))
        assert debug.returncode != 0 and "Traceback" in debug.stderr
