"""The `README.md` model card of an hf_mtl output folder: Hub metadata (model-index included) plus a readable body.

`library_name: transformers` because the folder loads with `AutoModel.from_pretrained(..., trust_remote_code=True)`
(its config's `auto_map` points at the model code saved beside the weights), so the Hub's "Use this model" snippet
works; `hf_mtl` goes in the tags.
"""

import json
import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .reports import DRIFT_TITLE, drift_rows, drift_table
from .tasks import tasks_of_config

HUB_SPLITS = {"eval": "validation", "test": "test"}
EXAMPLE_SENTENCE = "Apple opened a new store in Paris on Monday."


def _is_hub_id(path) -> bool:
    """A string that names a Hub repo rather than a folder or file on this machine."""
    if not isinstance(path, str) or os.path.exists(path):
        return False
    try:
        validate_repo_id(path)
    except HFValidationError:
        return False
    return True


def _hub_dataset(spec: dict) -> str | None:
    """The Hub id of a run-config data set spec; None for local files (those name a `format` or exist on disk)."""
    path = spec.get("path")
    return path if "format" not in spec and _is_hub_id(path) else None


def task_metric(metrics: dict | None, split: str, task_name: str, metric: str):
    """`metrics[f"{split}_{task}_{metric}"]`, or the unprefixed key as `compute_metrics` returns it; None if absent."""
    metrics = metrics or {}
    key = f"{task_name}_{metric}"
    value = metrics.get(f"{split}_{key}", metrics.get(key))
    return None if value is None else float(value)


def build_card_data(config, model_name, base_model, datasets, metrics_by_split, task_datasets=None) -> ModelCardData:
    """Hub metadata: one model-index result per task, split and metric found in `metrics_by_split`."""
    tasks = tasks_of_config(config)
    task_datasets = task_datasets or {}
    eval_results = []
    for task in tasks:
        dataset_name = task_datasets.get(task.name) or (next(iter(datasets)) if len(datasets) == 1 else None)
        spec = datasets.get(dataset_name, {})
        for split, metrics in metrics_by_split.items():
            for metric in task.metric_names:
                value = task_metric(metrics, split, task.name, metric)
                if value is None:
                    continue
                metric_type, metric_name, metric_args = task.card_metrics[metric]
                eval_results.append(
                    EvalResult(
                        task_type=task.hub_task_type,
                        task_name=task.name,
                        dataset_type=_hub_dataset(spec) or dataset_name or "custom",
                        dataset_name=dataset_name or "evaluation data",
                        dataset_config=spec.get("name") if _hub_dataset(spec) else None,
                        dataset_split=HUB_SPLITS[split],
                        metric_type=metric_type,
                        metric_value=value,
                        metric_name=metric_name,
                        metric_args=metric_args,
                    )
                )
    hub_datasets = [_hub_dataset(spec) for spec in datasets.values()]
    tags = ["hf_mtl", "multi-task", *sorted({task.hub_task_type for task in tasks})]
    return ModelCardData(
        library_name="transformers",
        tags=tags,
        # The Hub rejects metadata naming a local folder as base model or data set.
        base_model=base_model if _is_hub_id(base_model) else None,
        datasets=sorted({dataset for dataset in hub_datasets if dataset}) or None,
        model_name=model_name,
        eval_results=eval_results or None,
    )


def write_model_card(
    output_dir,
    *,
    config,
    base_model: str,
    datasets: dict,
    training_settings: dict,
    eval_metrics: dict | None = None,
    test_metrics: dict | None = None,
    hub_model_id: str | None = None,
    task_datasets: dict | None = None,
    start_metrics: dict | None = None,
) -> Path:
    """
    Writes `output_dir/README.md` and returns its path.

    Args:
        config (`MultiTaskConfig`): the trained model's config (tasks, label sets, pooling, loss weighting).
        base_model: the encoder the run started from (Hub id or local folder; only a Hub id goes in the metadata).
        datasets: the run config's `datasets` (name -> spec with `path`, optional `format` / `name`).
        training_settings: the settings worth reporting (freezing, sampling, loss weighting, epochs, lr, ...).
        eval_metrics, test_metrics: Trainer metrics (`eval_<task>_<metric>` / `test_...`, or unprefixed).
        hub_model_id: the repo the folder is meant for; used in the model name and the snippets.
        task_datasets: task name -> data set name (the run config's `tasks[i]["dataset"]`); with a single data set
            every task maps to it.
        start_metrics: the scores of the model the run started from (`base_model`, an hf_mtl model), before
            training (`eval_<task>_<metric>` / `test_...`): a "Drift from the starting model" table compares them with
            the test metrics (the eval metrics where the test split was not scored).
    """
    output_dir = Path(output_dir)
    model_name = hub_model_id.split("/")[-1] if hub_model_id else output_dir.resolve().name
    metrics_by_split = {split: metrics for split, metrics in (("eval", eval_metrics), ("test", test_metrics)) if metrics}
    card_data = build_card_data(config, model_name, base_model, datasets, metrics_by_split, task_datasets)
    body = _render_body(output_dir, config, model_name, base_model, datasets, training_settings, metrics_by_split,
                        hub_model_id, start_metrics)
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    path = output_dir / "README.md"
    card.save(path)
    return path


def _render_body(output_dir, config, model_name, base_model, datasets, training_settings, metrics_by_split,
                 hub_model_id, start_metrics=None):
    tasks = tasks_of_config(config)
    encoder = config.encoder
    lines = [
        f"# {model_name}",
        "",
        f"A multi-task model made with hf_mtl: one shared `{encoder.model_type}` "
        f"encoder, started from `{base_model}`, with {len(tasks)} task heads "
        f"(sentence embeddings use `{config.pooling}` pooling).",
        "",
        "## Tasks and labels",
        "",
        "| task | kind | labels |",
        "|---|---|---|",
        *(f"| `{task.name}` | {task.kind} | {task.labels_summary()} |" for task in tasks),
        "",
        "## Training",
        "",
        "| data set | source |",
        "|---|---|",
        *(f"| `{name}` | `{spec.get('path', json.dumps(spec.get('data_files')))}` |" for name, spec in datasets.items()),
        "",
        "| setting | value |",
        "|---|---|",
        f"| loss_weighting | `{config.loss_weighting}` |",
        *(f"| {key} | `{json.dumps(value)}` |" for key, value in training_settings.items() if key != "loss_weighting"),
    ]
    if metrics_by_split:
        lines += _render_results(tasks, metrics_by_split)
    lines += _render_drift(tasks, base_model, metrics_by_split, start_metrics or {})
    lines += _render_files(output_dir)
    lines += _render_usage(hub_model_id or str(output_dir))
    return "\n".join(lines) + "\n"


def _render_usage(reference: str) -> list:
    """How to load the model and predict with it, from Python and the command line."""
    return [
        "",
        "## How to load",
        "",
        "With hf_mtl installed, importing it registers the model with the Auto classes:",
        "",
        "```python",
        "import hf_mtl",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        f'model = AutoModel.from_pretrained("{reference}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{reference}")',
        "```",
        "",
        "Without hf_mtl, the model code saved beside the weights is used:",
        "",
        "```python",
        "from transformers import AutoModel",
        "",
        f'model = AutoModel.from_pretrained("{reference}", trust_remote_code=True)',
        "```",
        "",
        "## How to predict",
        "",
        "```python",
        "from hf_mtl import MultiTaskPipeline",
        "",
        f'pipe = MultiTaskPipeline("{reference}")',
        f'pipe("{EXAMPLE_SENTENCE}")  # one entry per task: label + score, or entity spans',
        'pipe.embed(["first sentence", "second sentence"])  # sentence embeddings',
        "```",
        "",
        "From the command line (`.txt`: one sentence per line, or `.jsonl` with `text` or `tokens`):",
        "",
        "```bash",
        f"hf-mtl predict --model {reference} --input sentences.txt --output predictions.jsonl",
        "```",
    ]


def _render_results(tasks, metrics_by_split) -> list:
    splits = list(metrics_by_split)
    header = "| metric | " + " | ".join(HUB_SPLITS[split] for split in splits) + " |"
    rule = "|---|" + "---:|" * len(splits)
    lines = ["", "## Results", "", "Fractions in [0, 1] (mean squared errors in the target's units squared); token tasks are scored at word level: entity level with seqeval (BIOES tags in its strict mode), plain tags (`tag_format` `plain`) per word."]
    for task in tasks:
        rows = []
        for metric in task.metric_names:
            values = [task_metric(metrics_by_split[split], split, task.name, metric) for split in splits]
            if any(value is not None for value in values):
                name = task.card_metrics[metric][1]
                main = " (main)" if metric == task.main_metric else ""
                rows.append(f"| {name}{main} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in values) + " |")
        if rows:
            lines += ["", f"### `{task.name}`", "", header, rule, *rows]
    scores = {split: metrics.get(f"{split}_score", metrics.get("score")) for split, metrics in metrics_by_split.items()}
    scores = {split: score for split, score in scores.items() if score is not None}
    if scores:
        summary = ", ".join(f"{HUB_SPLITS[split]} {score:.4f}" for split, score in scores.items())
        lines += ["", f"Mean of the tasks' main metrics (`score`): {summary}."]
    return lines


def _render_drift(tasks, base_model, metrics_by_split, start_metrics) -> list:
    """The tasks the starting model already had: their scores before and after this training, on the test split (the
    validation split where the test split was not scored)."""
    for split in ("test", "eval"):
        rows = drift_rows(tasks, split, start_metrics, metrics_by_split.get(split) or {})
        if rows:
            return [
                "", f"## {DRIFT_TITLE}", "",
                f"Trained from the hf_mtl model `{base_model}`. Its tasks that this model keeps, scored on the "
                f"{HUB_SPLITS[split]} split by the starting model (before training) and by this model; change = end - "
                "start (for mse lower is better).", "",
                *drift_table(rows),
            ]
    return []


def _render_files(output_dir: Path) -> list:
    """Links to the reports and plots of the run that sit in the folder (relative links render on the Hub)."""
    reports = [name for name in ("eval_report.md", "test_report.md") if (output_dir / name).is_file()]
    plots = sorted((output_dir / "plots").glob("*.png"))
    if not reports and not plots:
        return []
    lines = ["", "## Reports and plots", ""]
    lines += [f"- [{name}]({name})" for name in reports]
    lines += [f"![{plot.stem.replace('_', ' ')}](plots/{plot.name})" for plot in plots]
    return lines


__all__ = ["write_model_card"]
