"""`hf-mtl info DIR`: what a trained or exported hf_mtl folder holds, read from its files without loading the model.

```python
from hf_mtl.folder_info import folder_info, render_info

info = folder_info("outputs/demo")  # a plain dict, the `--json` output
print(render_info(info))
```

The summary: the tasks (kind, labels, CRF), the encoder (type, layers, hidden size, positions, parameters), pooling,
the files present (weights, ONNX graphs, LoRA adapter, tokenizer) and the metrics the folder recorded
(`<split>_results.json`, as a run or `hf-mtl evaluate` wrote them).
"""

import json
import struct
from pathlib import Path

from .configuration_mtl import MultiTaskConfig, encoder_max_positions, task_kind
from .errors import ModelError
from .json_files import read_json_file
from .atomic_files import human_size
from .tasks import tasks_of_config

WEIGHT_FILES = ("model.safetensors", "model.onnx", "model_int8.onnx", "crf.safetensors")
LORA_FOLDER = "lora_adapter"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
# Trainer's speed figures say how fast the machine was, not how good the model is.
SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")
SHOWN_LABELS = 8


def folder_info(folder) -> dict:
    """The summary of an hf_mtl model folder (trained, or written by `hf-mtl export-onnx`) as a JSON-ready dict."""
    folder = Path(folder)
    config = read_config(folder)
    encoder = config.encoder
    files = present_files(folder)
    return {
        "folder": str(folder),
        "format": "onnx" if "model.safetensors" not in files and "model.onnx" in files else "torch",
        "tasks": [task_summary(task, parsed) for task, parsed in zip(config.tasks, tasks_of_config(config))],
        "encoder": {
            "model_type": encoder.model_type,
            "name_or_path": getattr(encoder, "_name_or_path", None) or None,
            "layers": getattr(encoder, "num_hidden_layers", None),
            "hidden_size": getattr(encoder, "hidden_size", None),
            "max_positions": encoder_max_positions(encoder),
        },
        "pooling": config.pooling,
        "normalize_embeddings": bool(config.normalize_embeddings),
        "parameters": parameter_counts(folder / "model.safetensors") if "model.safetensors" in files else None,
        "files": files,
        "metrics": recorded_metrics(folder),
    }


def read_config(folder: Path) -> MultiTaskConfig:
    where = f"model {folder}"
    if not folder.is_dir():
        raise ModelError(f"{where}: no such folder" if not folder.exists() else f"{where}: is a file, not a folder")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{where}: no config.json (not an hf_mtl model folder)")
    values = read_json_file(config_file, what="model config", error=ModelError)
    if not isinstance(values, dict):
        raise ModelError(f"{config_file}: not a JSON object")
    model_type = values.get("model_type")
    if model_type != MultiTaskConfig.model_type:
        raise ModelError(f"{where}: not an hf_mtl model folder (config.json model_type is {model_type!r})")
    try:
        config = MultiTaskConfig.from_pretrained(folder)
        tasks_of_config(config)
    except (OSError, ValueError) as error:  # ConfigError is a ValueError
        raise ModelError(f"{config_file}: {error}") from None
    return config


def task_summary(task: dict, parsed) -> dict:
    summary = {"name": task["name"], "kind": task_kind(task), "labels": task.get("labels"),
               "metric_names": list(parsed.metric_names)}
    if task.get("type") == "token_classification":
        summary["crf"] = bool(task.get("crf"))
    return summary


def present_files(folder: Path) -> dict:
    """Name -> size in bytes of the weights and graphs present; `lora_adapter` and `tokenizer` as true when there."""
    files = {name: (folder / name).stat().st_size for name in WEIGHT_FILES if (folder / name).is_file()}
    if (folder / LORA_FOLDER).is_dir():
        files[LORA_FOLDER] = True
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        files["tokenizer"] = True
    return files


def parameter_counts(weights: Path) -> dict | None:
    """Parameters per part (`encoder`, `heads`, the rest), counted from the safetensors header alone."""
    try:
        with open(weights, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return None  # a damaged file: `info` describes, the loader refuses (and says why)
    counts = {"total": 0, "encoder": 0, "heads": 0}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        size = 1
        for dimension in entry.get("shape", []):
            size *= dimension
        counts["total"] += size
        part = name.split(".", 1)[0]
        if part in counts:
            counts[part] += size
    return counts


def recorded_metrics(folder: Path) -> dict:
    """Split -> {metric without the split prefix: value} from each `<split>_results.json` (training's own excluded)."""
    metrics = {}
    for path in sorted(folder.glob("*_results.json")):
        split = path.name[: -len("_results.json")]
        if split in ("all", "train"):
            continue
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(values, dict):
            prefix = f"{split}_"
            metrics[split] = {
                key[len(prefix):] if key.startswith(prefix) else key: value
                for key, value in values.items()
                if not key.endswith(SPEED_SUFFIXES)
            }
    return metrics


def render_info(info: dict) -> str:
    """The summary as a person reads it."""
    encoder = info["encoder"]
    lines = [f"{info['folder']}: hf_mtl model ({'ONNX export' if info['format'] == 'onnx' else 'torch weights'})"]
    origin = f" from {encoder['name_or_path']}" if encoder["name_or_path"] else ""
    sizes = [f"{encoder['layers']} layers" if encoder["layers"] is not None else None,
             f"hidden size {encoder['hidden_size']}" if encoder["hidden_size"] is not None else None,
             f"{encoder['max_positions']} positions" if encoder["max_positions"] is not None else None]
    lines.append(f"encoder:    {encoder['model_type']}{origin}: {', '.join(filter(None, sizes))}")
    if info["parameters"]:
        counts = info["parameters"]
        lines.append(f"parameters: {counts['total']:,} (encoder {counts['encoder']:,}, heads {counts['heads']:,})")
    normalized = "L2-normalised" if info["normalize_embeddings"] else "not normalised"
    lines.append(f"pooling:    {info['pooling']} (embeddings {normalized} by default)")
    lines.append("tasks:")
    width = max(len(task["name"]) for task in info["tasks"])
    for task in info["tasks"]:
        kind = task["kind"] + (" + CRF" if task.get("crf") else "")
        lines.append(f"  {task['name']:<{width}}  {kind}: {labels_text(task['labels'])}")
    lines.append("files:      " + ", ".join(
        name if size is True else f"{name} ({human_size(size)})" for name, size in info["files"].items()
    ))
    if not info["metrics"]:
        lines.append("metrics:    none recorded")
    else:
        lines.append("metrics:")
        for split, values in info["metrics"].items():
            lines.append(f"  {split}: " + metrics_text(values, info["tasks"]))
    return "\n".join(lines)


def metrics_text(values: dict, tasks: list) -> str:
    """`N examples; score S; <task> <main metric> v, ...; <the rest>`: each task's metrics in its kind's order."""
    values = dict(values)
    parts = [f"{values.pop('samples')} examples"] if "samples" in values else []
    if "score" in values:
        parts.append(f"score {number(values.pop('score'))}")
    for task in tasks:
        name, metric_names = task["name"], task["metric_names"]
        shown = [f"{metric} {number(values.pop(f'{name}_{metric}'))}" for metric in metric_names
                 if f"{name}_{metric}" in values]
        if shown:
            parts.append(f"{name} " + ", ".join(shown))
    parts += [f"{key} {number(value)}" for key, value in values.items()]
    return "; ".join(parts)


def number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def labels_text(labels) -> str:
    if labels is None:
        return "a number"
    shown = ", ".join(labels[:SHOWN_LABELS])
    more = f", ... ({len(labels) - SHOWN_LABELS} more)" if len(labels) > SHOWN_LABELS else ""
    return f"{len(labels)} labels: {shown}{more}"


__all__ = ["folder_info", "render_info"]
