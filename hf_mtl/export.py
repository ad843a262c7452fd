"""Export parts of a multi-task model as stock folders that need neither hf_mtl nor `trust_remote_code`."""

import copy
import json
import os

from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from .configuration_mtl import encoder_has_pooler
from .errors import ConfigError
from .loading import load_model_folder
from .atomic_files import StagedOutput
from .tokenizer_checks import max_input_length
from .tasks import tasks_of_config


def model_folder(folder) -> bool:
    """Whether an existing output folder is a model folder an export may replace (not, say, a folder of data)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in ("config.json", "modules.json"))


def export_output(model_dir, output_dir) -> StagedOutput:
    """The export's output folder, built beside `output_dir` and renamed into place once complete."""
    return StagedOutput(output_dir, inputs=[model_dir], replaceable=model_folder, what="a model folder",
                        where="--output")


def export_task(model_dir: str, task_name: str, output_dir: str) -> str:
    """
    Save the encoder and one task's head as a stock folder with the tokenizer and the task's `id2label`: a token task
    as `AutoModelForTokenClassification`, a sentence task as `AutoModelForSequenceClassification` with the task's
    `problem_type` (a regression's target scale folded into the classifier), so `pipeline(...)` serves it.
    """
    output = export_output(model_dir, output_dir)
    output.check()
    model, tokenizer = load_model_folder(model_dir)
    tasks = {task.name: task for task in tasks_of_config(model.config)}
    if task_name not in tasks:
        raise ConfigError(f"task {task_name!r}: not a task of {model_dir}; its tasks are {sorted(tasks)}")
    task = tasks[task_name]
    if task.needs_word_starts:
        raise ConfigError(f"task {task_name!r} decodes with a CRF, which AutoModelForTokenClassification lacks")
    if task.encodes_pair_separately:
        raise ConfigError(f"task {task_name!r} is a bi-encoder (its score is the cosine of two embeddings): export the "
                          "embedding with export-sentence-transformers instead")

    config = copy.deepcopy(model.config.encoder)
    labels = task.labels or ["score"]
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: index for index, label in enumerate(labels)}
    encoder_state = model.encoder.state_dict()
    classifier = model.heads[task_name].classifier
    weight, bias = classifier.weight.detach().clone(), classifier.bias.detach().clone()
    if task.labels_per_token:
        stock = AutoModelForTokenClassification.from_config(config)
        # Token classifiers build their encoder without a pooler; ours has one only for `pooling="pooler"`.
        encoder_state = {name: value for name, value in encoder_state.items() if not name.startswith("pooler.")}
    else:
        config.problem_type = task.kind
        stock = AutoModelForSequenceClassification.from_config(config)
        check_pooler_classifier(stock, model.config.pooling, task_name)
        if task.kind == "regression":  # our head predicts the standardised target; the stock one reports y itself
            weight, bias = weight * task.target_std, bias * task.target_std + task.target_mean
    stock.base_model.load_state_dict(encoder_state, strict=True)
    stock.classifier.load_state_dict({"weight": weight, "bias": bias}, strict=True)
    check_stock_predicts_as_ours(stock, model, tokenizer, task)
    with output:
        stock.save_pretrained(output.path)
        tokenizer.save_pretrained(output.path)
    return output_dir


# Texts of different lengths for the check that the stock model computes our head's logits.
PROBE_TEXTS = ["Apple opened a store in Paris.", "Book a table for two at the Italian place near Central Park tonight"]


def check_stock_predicts_as_ours(stock, model, tokenizer, task) -> None:
    """Raise a `ConfigError` unless the stock model's logits are our head's (to 1e-4) on probe texts: some stock
    classes put layers of their own before the classifier (ModernBERT's prediction head), which the export cannot
    fill from our weights."""
    import torch

    inputs = tokenizer(PROBE_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = stock.eval()(**inputs).logits.float()
        ours = model.eval()(**inputs).logits[task.name].float()
    if task.kind == "regression":
        ours = ours.reshape(theirs.shape)
    if task.labels_per_token:
        real = inputs["attention_mask"].bool()
        theirs, ours = theirs[real], ours[real]
    if not torch.allclose(theirs, ours, atol=1e-4, rtol=1e-4):
        layers = sorted(name for name, _ in stock.named_children() if name not in (stock.base_model_prefix, "classifier", "dropout"))
        raise ConfigError(
            f"task {task.name!r}: a stock {type(stock).__name__} adds layers of its own before the classifier "
            f"({', '.join(layers) or 'unknown'}), so the export would predict differently. Use MultiTaskPipeline "
            "or the remote-code folder for this model."
        )


def check_pooler_classifier(stock, pooling: str, task_name: str) -> None:
    """A stock sequence classifier reproduces our sentence head only where it is `classifier(dropout(pooler))`
    (BERT and its relatives) and our model pools with that same pooler."""
    pooler = getattr(stock.base_model, "pooler", None)
    if pooling != "pooler" or pooler is None or not isinstance(getattr(stock, "classifier", None), nn.Linear):
        raise ConfigError(
            f"task {task_name!r}: a stock {type(stock).__name__} classifies "
            + ("the encoder's pooler output" if pooler is not None else "with its own pre-classifier layers")
            + f", but this model's sentence heads read {pooling!r} pooling, so the export would predict differently; "
            "sentence tasks export only from models trained with pooling 'pooler' on an encoder with a pooler "
            "(BERT-like). Use MultiTaskPipeline or the remote-code folder for this model."
        )


def export_sentence_transformers(model_dir: str, output_dir: str, normalize: bool | None = None) -> str:
    """
    Save the encoder as a SentenceTransformer folder whose `encode` reproduces `MultiTaskPipeline.embed`: our pooling
    as a `Pooling` module (`pooler` as CLS pooling + the pooler's dense/tanh as a `Dense` module), then `Normalize`
    when `normalize` (default: the model's `normalize_embeddings`).
    """
    output = export_output(model_dir, output_dir)
    output.check()
    model, tokenizer = load_model_folder(model_dir)
    with output:
        _write_sentence_transformers(model, tokenizer, output.path, normalize)
    return output_dir


def _write_sentence_transformers(model, tokenizer, output_dir, normalize):
    pooling = model.config.pooling
    normalize = model.config.normalize_embeddings if normalize is None else normalize
    hidden_size = model.config.encoder.hidden_size
    max_length = max_input_length(model.config, tokenizer)

    model.encoder.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    transformer_config = {"max_seq_length": max_length, "do_lower_case": False}
    if encoder_has_pooler(model.config.encoder) and pooling != "pooler":
        # Our encoder was built without its unused pooler: load it the same way, not with a random one.
        transformer_config["model_args"] = {"add_pooling_layer": False}
    _write_json(os.path.join(output_dir, "sentence_bert_config.json"), transformer_config)
    model_config = {"similarity_fn_name": "cosine"}
    dims = sorted({dim for task in model.config.tasks for dim in task.get("matryoshka_dims") or ()}, reverse=True)
    if dims:
        # The truncated sizes the similarity tasks trained: `SentenceTransformer(folder, truncate_dim=d)` serves them.
        model_config["matryoshka_dims"] = dims
    _write_json(os.path.join(output_dir, "config_sentence_transformers.json"), model_config)

    modules = [("", "sentence_transformers.models.Transformer")]
    mode = "cls" if pooling == "pooler" else pooling
    # The legacy `pooling_mode_*` keys load in every sentence-transformers release.
    pooling_config = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_max_tokens": mode == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    modules.append(("1_Pooling", "sentence_transformers.models.Pooling"))
    _write_json(os.path.join(output_dir, "1_Pooling", "config.json"), pooling_config)
    if pooling == "pooler":
        dense = model.encoder.pooler.dense
        path = f"{len(modules)}_Dense"
        modules.append((path, "sentence_transformers.models.Dense"))
        dense_config = {
            "in_features": dense.in_features,
            "out_features": dense.out_features,
            "bias": True,
            "activation_function": "torch.nn.modules.activation.Tanh",
        }
        _write_json(os.path.join(output_dir, path, "config.json"), dense_config)
        weights = {"linear.weight": dense.weight, "linear.bias": dense.bias}
        weights = {name: tensor.detach().float().contiguous() for name, tensor in weights.items()}
        save_file(weights, os.path.join(output_dir, path, "model.safetensors"))
    if normalize:
        path = f"{len(modules)}_Normalize"
        modules.append((path, "sentence_transformers.models.Normalize"))
        os.makedirs(os.path.join(output_dir, path), exist_ok=True)
    modules_json = [
        {"idx": index, "name": str(index), "path": path, "type": module_type}
        for index, (path, module_type) in enumerate(modules)
    ]
    _write_json(os.path.join(output_dir, "modules.json"), modules_json)


def _write_json(path: str, content) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as writer:
        json.dump(content, writer, indent=2)
        writer.write("\n")
