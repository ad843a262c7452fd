"""Export parts of a multi-task model as stock folders that need neither hf_mtl nor `trust_remote_code`."""

import copy
import json
import os

from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForTokenClassification, AutoTokenizer

from .configuration_mtl import encoder_has_pooler
from .errors import ConfigError, ModelError
from .pipeline_mtl import max_input_length


def load_multitask(model_dir: str, **load_kwargs):
    """
    The `MultiTaskModel` and fast tokenizer of a saved folder or Hub id; a `ModelError` naming it if unusable.
    `load_kwargs` go to `AutoModel.from_pretrained` (e.g. `attn_implementation`, `dtype`).
    """
    model_dir = str(model_dir)
    looks_like_a_path = os.path.isabs(model_dir) or model_dir.startswith(".") or model_dir.count("/") > 1
    if looks_like_a_path and not os.path.isdir(model_dir):
        raise ModelError(f"model {model_dir}: no such folder")
    try:
        model = AutoModel.from_pretrained(model_dir, **load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ModelError(f"model {model_dir}: cannot load a model and tokenizer from it ({error})") from error
    if not getattr(model.config, "tasks", None):
        raise ModelError(f"model {model_dir}: not an hf_mtl multi-task model (its config has no `tasks`)")
    if not tokenizer.is_fast:
        raise ModelError(f"model {model_dir}: its tokenizer has no fast version (needed for character offsets)")
    return model, tokenizer


def export_token_task(model_dir: str, task_name: str, output_dir: str) -> str:
    """
    Save the encoder and the head of one token task as a stock `AutoModelForTokenClassification` folder (with the
    tokenizer and the task's `id2label`), so `pipeline("token-classification", model=output_dir)` serves it.
    """
    model, tokenizer = load_multitask(model_dir)
    tasks = {task["name"]: task for task in model.config.tasks}
    token_tasks = [name for name, task in tasks.items() if task["type"] == "token_classification"]
    if task_name not in token_tasks:
        raise ConfigError(f"task {task_name!r}: not a token task of {model_dir}; its token tasks are {token_tasks}")
    if tasks[task_name].get("crf"):
        raise ConfigError(f"task {task_name!r} decodes with a CRF, which AutoModelForTokenClassification lacks")

    labels = tasks[task_name]["labels"]
    config = copy.deepcopy(model.config.encoder)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: index for index, label in enumerate(labels)}
    stock = AutoModelForTokenClassification.from_config(config)
    # Token classifiers build their encoder without a pooler; ours has one only for `pooling="pooler"`.
    encoder_state = model.encoder.state_dict()
    encoder_state = {name: value for name, value in encoder_state.items() if not name.startswith("pooler.")}
    stock.base_model.load_state_dict(encoder_state, strict=True)
    stock.classifier.load_state_dict(model.heads[task_name].classifier.state_dict(), strict=True)
    stock.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def export_sentence_transformers(model_dir: str, output_dir: str, normalize: bool | None = None) -> str:
    """
    Save the encoder as a SentenceTransformer folder whose `encode` reproduces `MultiTaskPipeline.embed`: our pooling
    as a `Pooling` module (`pooler` as CLS pooling + the pooler's dense/tanh as a `Dense` module), then `Normalize`
    when `normalize` (default: the model's `normalize_embeddings`).
    """
    model, tokenizer = load_multitask(model_dir)
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
    _write_json(os.path.join(output_dir, "config_sentence_transformers.json"), {"similarity_fn_name": "cosine"})

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
    return output_dir


def _write_json(path: str, content) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as writer:
        json.dump(content, writer, indent=2)
        writer.write("\n")
