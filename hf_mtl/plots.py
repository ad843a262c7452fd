"""PNG plots of a run in `output_dir/plots/`: training loss per task, eval metrics over evaluations, and each task
kind's own plot (confusion matrix, per-label F1, predicted vs gold).

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global backend switch or figure registry in the
caller's process, and `savefig` renders PNGs with Agg on any machine (no display needed).
"""

import json
from pathlib import Path

from matplotlib.figure import Figure

from .tasks.base import ConfusionMatrix, PerLabelF1, PredictedVsGold

# `eval_<task>_<metric>` keys in [0, 1] of the metrics `build_compute_metrics` returns (eval_loss, runtime and mse
# are not on that scale).
EVAL_METRIC_SUFFIXES = ("_accuracy", "_f1", "_precision", "_recall", "_pearson", "_spearman")


def write_plots(output_dir, tasks=None, decoded=None, split_name: str = "eval", log_history=None) -> list:
    """
    Writes every plot there is data for into `output_dir/plots/` and returns their paths.

    Args:
        log_history: Trainer's log history; defaults to the one in `output_dir/trainer_state.json` (none if absent).
        tasks, decoded: the run's tasks and `decode_predictions` output of one split, for each task's own plot.
        split_name: the split `decoded` comes from, shown in those plots' titles.
    """
    output_dir = Path(output_dir)
    plots_dir = output_dir / "plots"
    if log_history is None:
        state_file = output_dir / "trainer_state.json"
        log_history = json.loads(state_file.read_text(encoding="utf-8"))["log_history"] if state_file.is_file() else []
    paths = [
        plot_training_loss(log_history, plots_dir / "training_loss.png"),
        plot_eval_metrics(log_history, plots_dir / "eval_metrics.png"),
    ]
    for task in tasks or []:
        examples = [example for example in decoded or [] if task.name in example]
        figure = task.figure(examples) if examples else None
        if figure is not None:
            path = plots_dir / f"{figure.file_stem}_{task.name}.png"
            paths.append(FIGURE_PLOTTERS[type(figure)](figure, path, f"{task.name}: {figure.caption} ({split_name})"))
    return [path for path in paths if path is not None]


def _series(log_history: list, key: str) -> tuple:
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
    return tuple(zip(*points)) if points else ((), ())


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_training_loss(log_history: list, path) -> Path | None:
    """Total and per-task (`loss_<task>`) training loss over steps, with eval loss dashed; None without training logs."""
    task_keys = sorted({key for entry in log_history for key in entry if key.startswith("loss_")})
    train_keys = [key for key in ["loss", *task_keys] if _series(log_history, key)[0]]
    if not train_keys:
        return None
    figure = Figure(figsize=(8, 5))
    axes = figure.add_subplot()
    for key in train_keys:
        steps, values = _series(log_history, key)
        label = "total" if key == "loss" else key[len("loss_") :]
        axes.plot(steps, values, marker="o", markersize=3, linewidth=2 if key == "loss" else 1.2, label=label)
    steps, values = _series(log_history, "eval_loss")
    if steps:
        axes.plot(steps, values, linestyle="--", marker="s", markersize=4, color="black", label="eval (total)")
    axes.set(title="Training loss per task", xlabel="step", ylabel="loss")
    axes.grid(alpha=0.3)
    axes.legend(title="loss")
    return _save(figure, Path(path))


def plot_eval_metrics(log_history: list, path) -> Path | None:
    """Every `eval_<task>_<metric>` and `eval_score` over evaluations (by step); None when there was no evaluation."""
    keys = sorted(
        {
            key
            for entry in log_history
            for key in entry
            if key == "eval_score" or (key.startswith("eval_") and key.endswith(EVAL_METRIC_SUFFIXES))
        }
    )
    keys = [key for key in keys if _series(log_history, key)[0]]
    if not keys:
        return None
    figure = Figure(figsize=(9, 5))
    axes = figure.add_subplot()
    for key in keys:
        steps, values = _series(log_history, key)
        is_score = key == "eval_score"
        axes.plot(
            steps,
            values,
            marker="o",
            markersize=4,
            linewidth=2.5 if is_score else 1.2,
            color="black" if is_score else None,
            label=key[len("eval_") :],
        )
    axes.set(title="Evaluation metrics", xlabel="step", ylabel="value (fraction)", ylim=(-0.02, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    return _save(figure, Path(path))


def plot_confusion_matrix(matrix: ConfusionMatrix, path, title: str) -> Path:
    """Heat map of a confusion matrix (rows gold, columns predicted) with the counts written in."""
    labels, counts = matrix.labels, matrix.counts
    side = max(4.0, 0.6 * len(labels) + 2.5)
    figure = Figure(figsize=(side + 1, side))
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, label="examples")
    threshold = max(max(row) for row in counts) / 2
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set(title=title, xlabel="predicted", ylabel="gold")
    return _save(figure, Path(path))


def plot_per_label_f1(scores: PerLabelF1, path, title: str) -> Path:
    """Horizontal bars of each label's F1, with its gold support written beside the bar."""
    labels, f1, support = scores.labels, scores.f1, scores.support
    figure = Figure(figsize=(8, max(3.0, 0.35 * len(labels) + 1.5)))
    axes = figure.add_subplot()
    axes.barh(range(len(labels)), f1, color="tab:blue")
    for row, (value, count) in enumerate(zip(f1, support)):
        axes.text(min(value + 0.01, 0.9), row, f"{value:.2f} (n={count})", va="center", fontsize="small")
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set(title=title, xlabel="F1", xlim=(0, 1.05))
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, Path(path))


def plot_regression(points: PredictedVsGold, path, title: str) -> Path:
    """Predicted against gold values, with the diagonal where they would be equal."""
    gold, predicted = points.gold, points.predicted
    figure = Figure(figsize=(6, 6))
    axes = figure.add_subplot()
    axes.scatter(gold, predicted, s=8, alpha=0.5)
    low, high = min(min(gold), min(predicted)), max(max(gold), max(predicted))
    axes.plot([low, high], [low, high], color="black", linestyle="--", linewidth=1, label="predicted = gold")
    axes.set(title=title, xlabel="gold", ylabel="predicted")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, Path(path))


# How each kind of task figure (`Task.figure`) is drawn.
FIGURE_PLOTTERS = {ConfusionMatrix: plot_confusion_matrix, PerLabelF1: plot_per_label_f1, PredictedVsGold: plot_regression}


__all__ = [
    "plot_confusion_matrix",
    "plot_eval_metrics",
    "plot_per_label_f1",
    "plot_regression",
    "plot_training_loss",
    "write_plots",
]
