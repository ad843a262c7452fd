"""`hf-mtl evaluate`: score a trained model on a labelled file with the metrics and reports of a run's test split.

The file is read and encoded as training reads a split (`prepare_datasets`: JSON Lines, JSON, CSV, TSV, Parquet,
CoNLL, a JointBERT folder), the model runs through the same `Trainer.predict` with the same `compute_metrics`
(`hf_mtl.train.evaluate_split`), so the numbers are those a run would write: `<name>_<task>_<metric>` and
`<name>_score`, and with an output folder `<name>_results.json`, `<name>_report.md` and `<name>_predictions.jsonl`.

Which column holds what: with `--config RUN.json` (the config the model was trained with), each task's columns,
`max_seq_length`, `label_all_tokens` and its data set's `format`, `tag_scheme` and `column_names`; without one, a
column named after the task holds its labels (or `label` / `tags` when the model has one sentence / one token task),
and the input is `text` (with `text_pair`) when the file has it, else `tokens`. Tasks without a label column in the
file are left out (or name them with `--task`).
"""

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from .errors import ConfigError, DataError
from .atomic_files import StagedOutput
from .data.specs import input_column_keys

DATASET_NAME = "data"
TASK_COLUMN_KEYS = (*input_column_keys("text"), *input_column_keys("words"), "label_column", "tags_column")
SPEC_KEYS = ("format", "tag_scheme", "column_names")
OUTPUT_ENTRIES = ("*_results.json", "*_report.md", "*_predictions.jsonl")


def evaluate_model(model_dir, data, *, run_config=None, tasks=None, name="test", max_seq_length=None, batch_size=16,
                   output_dir=None) -> dict:
    """
    The metrics of the model in `model_dir` on the labelled file (or JointBERT folder) `data`, as `<name>_...` keys;
    with `output_dir`, also written there as a run writes its test split (the folder is replaced as a whole).
    """
    from .data import load_raw_dataset
    from .folder_info import read_config
    from .loading import load_model_folder
    from .train import read_config_file

    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"--name: a word of letters, digits and _ is required, got {name!r}")
    data = Path(data)
    if not data.exists():
        raise DataError(f"--data {data}: no such file or folder")
    output = None
    if output_dir is not None:
        inputs = [model_dir, data] + ([run_config] if run_config else [])
        output = StagedOutput(output_dir, kind="folder", inputs=inputs, carry=OUTPUT_ENTRIES,
                              replaceable=is_evaluation_folder, what="a folder `hf-mtl evaluate` wrote",
                              where="--output")
        output.check()
    run = read_config_file(run_config) if run_config else {}
    spec = dataset_spec(data, run)
    columns = set(load_raw_dataset(DATASET_NAME, spec).column_names.get("test", []))
    # A local folder's tasks are known from its config.json: a file that fits none fails before the weights load.
    heads = read_config(Path(model_dir)).tasks if os.path.isdir(model_dir) else None
    task_blocks = choose_tasks(heads, run, columns, tasks, data) if heads is not None else None
    model, tokenizer = load_model_folder(str(model_dir))
    task_blocks = task_blocks or choose_tasks(model.config.tasks, run, columns, tasks, data)
    max_seq_length = max_seq_length or run.get("max_seq_length") or model_max_length(model, tokenizer)
    prepared, dataset = prepare(spec, task_blocks, model, tokenizer, max_seq_length, run)
    metrics, decoded = score(model, tokenizer, prepared, dataset, name, batch_size)
    if output is not None:
        with output:
            write_outputs(output.path, name, prepared, metrics, decoded)
    return metrics


def dataset_spec(data: Path, run: dict) -> dict:
    """The file as the one split `test` of a data set, read with the run's format options when it has one data set
    (or when they agree)."""
    spec = {"path": str(data.parent.resolve()), "data_files": {"test": data.name}}
    run_specs = list((run.get("datasets") or {}).values())
    for key in SPEC_KEYS:
        values = {json.dumps(run_spec.get(key)) for run_spec in run_specs if isinstance(run_spec, dict)}
        if len(values) == 1 and json.loads(next(iter(values))) is not None:
            spec[key] = json.loads(next(iter(values)))
    return spec


def choose_tasks(head_configs: list, run: dict, columns: set, wanted, data: Path) -> list:
    """Task blocks for `prepare_datasets`: the trained heads with the columns they read in `data`."""
    by_name = {head["name"]: head for head in head_configs}
    run_tasks = {task.get("name"): task for task in run.get("tasks") or [] if isinstance(task, dict)}
    for task_name in wanted or ():
        if task_name not in by_name:
            raise ConfigError(f"--task {task_name}: the model has no such task (it has {', '.join(by_name)})")
    counts = Counter(head["type"] for head in head_configs)
    blocks = []
    for head in head_configs:
        block = {**head, "dataset": DATASET_NAME}
        run_task = run_tasks.get(head["name"])
        if run_task is not None:
            block.update({key: run_task[key] for key in TASK_COLUMN_KEYS if key in run_task})
        else:
            block.update(conventional_columns(head, columns, counts[head["type"]] == 1))
        target = block.get("tags_column", "tags") if head["type"] == "token_classification" else block.get(
            "label_column", "label" if head.get("loss") != "multiple_negatives_ranking" else block.get("text_pair_column"))
        if (wanted and head["name"] in wanted) or (not wanted and target in columns):
            blocks.append(block)
    if not blocks:
        looked = ", ".join(f"{head['name']!r}" for head in head_configs)
        raise DataError(
            f"--data {data}: no column holds labels of the model's tasks (looked for columns named {looked}, and "
            f"'label' / 'tags' for a model's only sentence / token task; it has {', '.join(sorted(columns))}); "
            "give the run's config with --config"
        )
    return blocks


def conventional_columns(head: dict, columns: set, only_one_of_its_type: bool) -> dict:
    block = {}
    if "text" in columns:
        text_key, pair_key = input_column_keys("text")
        block[text_key] = "text"
        if "text_pair" in columns:
            block[pair_key] = "text_pair"
    if head.get("loss") == "multiple_negatives_ranking":
        return block  # positive pairs: the pair itself is the gold
    key, default = ("tags_column", "tags") if head["type"] == "token_classification" else ("label_column", "label")
    if head["name"] in columns or not only_one_of_its_type:
        block[key] = head["name"]
    else:
        block[key] = default
    return block


def model_max_length(model, tokenizer) -> int:
    from .tokenizer_checks import max_input_length

    return max_input_length(model.config, tokenizer)


def prepare(spec, task_blocks, model, tokenizer, max_seq_length, run):
    from .data import prepare_datasets

    prepared = prepare_datasets(
        {DATASET_NAME: spec}, task_blocks, tokenizer, max_seq_length=max_seq_length,
        label_all_tokens=bool(run.get("label_all_tokens", False)), splits=("test",),
        trained_tasks={head["name"]: head for head in model.config.tasks},
    )
    return prepared, prepared.test


def score(model, tokenizer, prepared, dataset, name, batch_size):
    """(metrics, decoded rows) from `Trainer.predict`, exactly as a run scores its test split."""
    import torch
    from transformers import TrainingArguments

    from .data import MultiTaskCollator
    from .evaluation import build_preprocess_logits_for_metrics
    from .tasks import tasks_of_config
    from .train import evaluate_split
    from .trainer import MultiTaskTrainer

    # Every head's logits are reduced (the model returns them all); only the chosen tasks are scored.
    all_tasks = [next((task for task in prepared.tasks if task.name == head.name), head)
                 for head in tasks_of_config(model.config)]
    with tempfile.TemporaryDirectory(prefix="hf-mtl-evaluate-") as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, per_device_eval_batch_size=batch_size, report_to="none", disable_tqdm=None,
            label_names=[f"{task.name}_labels" for task in prepared.tasks], remove_unused_columns=False,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        trainer = MultiTaskTrainer(
            model=model, args=arguments, processing_class=tokenizer,
            data_collator=MultiTaskCollator(tokenizer, prepared.tasks),
            preprocess_logits_for_metrics=build_preprocess_logits_for_metrics(all_tasks),
        )
        return evaluate_split(trainer, prepared.tasks, name, dataset)


def write_outputs(folder: Path, name: str, prepared, metrics: dict, decoded: list):
    from .reports import write_predictions_jsonl, write_report

    # As `Trainer.save_metrics` writes `<split>_results.json`.
    (folder / f"{name}_results.json").write_text(json.dumps(metrics, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    write_report(folder / f"{name}_report.md", name, prepared.tasks, decoded)
    write_predictions_jsonl(folder / f"{name}_predictions.jsonl", decoded)


def is_evaluation_folder(folder) -> bool:
    """A folder of earlier evaluations only: replacing it keeps them (`carry`) and adds this one."""
    import fnmatch

    return all(any(fnmatch.fnmatch(entry, pattern) for pattern in OUTPUT_ENTRIES) for entry in os.listdir(folder))


__all__ = ["evaluate_model"]
