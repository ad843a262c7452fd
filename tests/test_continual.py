"""Continual training: a data set without a train split is evaluated, not trained; a run that starts from a trained
model scores its old tasks before training (`start_results.json`) and reports their drift (reports, model card)."""

import json
import re

import pytest
import torch
from train_fixtures import NER_LABELS, TOPICS, joint_config, run_config, weights, write_joint_data

import hf_mtl.train as train_module
from hf_mtl.data import prepare_datasets
from hf_mtl.errors import ConfigError, DataError
from hf_mtl.evaluate_model import evaluate_model
from hf_mtl.reports import DRIFT_TITLE

SPLIT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}
OLD_TASKS = [
    {"name": "topic", "type": "sequence_classification", "dataset": "old", "label_column": "topic"},
    {"name": "ner", "type": "token_classification", "dataset": "old"},
]
NEW_TASK = {"name": "topic_new", "type": "sequence_classification", "dataset": "new", "label_column": "topic"}


def json_set(folder, *splits) -> dict:
    return {"path": str(folder), "format": "json", "data_files": {split: SPLIT_FILES[split] for split in splits}}


def with_labels(task: dict) -> dict:
    return {**task, "labels": TOPICS if task["name"].startswith("topic") else NER_LABELS}


@pytest.fixture(scope="module")
def old_dir(tmp_path_factory):
    return write_joint_data(tmp_path_factory.mktemp("old"), sizes=(48, 16, 16), seed=0)


@pytest.fixture(scope="module")
def new_dir(tmp_path_factory):
    return write_joint_data(tmp_path_factory.mktemp("new"), sizes=(40, 12, 12), seed=1)


# ---- which data sets are evaluated only (prepare_datasets) ----------------------------------------------------------

def test_a_data_set_without_train_split_is_evaluated_not_trained(old_dir, new_dir, tokenizer):
    data = prepare_datasets(
        {"old": json_set(old_dir, "validation", "test"), "new": json_set(new_dir, "train", "validation", "test")},
        [with_labels(OLD_TASKS[0]), with_labels(OLD_TASKS[1]), NEW_TASK], tokenizer, max_seq_length=32,
    )
    assert data.eval_only == {"old": ["topic", "ner"]}
    assert "data set old: no train split: tasks topic, ner are evaluated, not trained" in data.summary
    assert len(data.train) == 40 and data.train_mixture is None  # the new data set's train split alone
    assert set(data.train["topic_labels"]) == {-100} and set(data.train["ner_labels"][0]) == {-100}
    assert len(data.validation) == 16 + 12 and len(data.test) == 16 + 12
    assert data.sampling_probabilities == {"new": 1.0}
    assert [task.labels for task in data.tasks] == [tuple(TOPICS), tuple(NER_LABELS), tuple(TOPICS)]
    # The start of a run scores its old tasks on their own rows only.
    old_rows = train_module.rows_with_gold(data.validation, data.tasks[:2])
    assert len(old_rows) == 16 and old_rows["words"] == data.validation.select(range(16))["words"]
    assert len(train_module.rows_with_gold(data.validation, data.tasks[2:])) == 12
    assert train_module.rows_with_gold(data.validation, data.tasks) is data.validation


def test_an_eval_only_task_takes_its_labels_from_the_reused_head(old_dir, new_dir, tokenizer):
    trained = {"topic": {"name": "topic", "type": "sequence_classification", "labels": list(reversed(TOPICS)),
                         "class_weights": [1.0, 2.0, 3.0, 4.0]}}
    data = prepare_datasets(
        {"old": json_set(old_dir, "test"), "new": json_set(new_dir, "train")},
        [{**OLD_TASKS[0], "class_weights": "balanced"}, NEW_TASK], tokenizer, max_seq_length=32,
        splits=("train", "test"), trained_tasks=trained,
    )
    topic = data.tasks[0]
    assert topic.labels == tuple(reversed(TOPICS)) and tuple(topic.class_weights) == (1.0, 2.0, 3.0, 4.0)
    assert data.eval_only == {"old": ["topic"]}


def test_an_eval_only_task_with_unknown_labels_is_an_error(old_dir, new_dir, tokenizer):
    datasets = {"old": json_set(old_dir, "validation", "test"), "new": json_set(new_dir, "train")}
    with pytest.raises(DataError, match=re.escape(
            "data set 'old' (" + str(old_dir) + ") has no train split, so its tasks are evaluated, not trained, but "
            "the labels of tasks[0] ('topic') are unknown: they must come from the head of that name in the trained "
            "model the run starts from (model_name_or_path), or from the task's `labels` key")):
        prepare_datasets(datasets, [OLD_TASKS[0], NEW_TASK], tokenizer, max_seq_length=32)


def test_no_train_split_anywhere_is_nothing_to_train(old_dir, new_dir, tokenizer):
    datasets = {"old": json_set(old_dir, "validation", "test"), "new": json_set(new_dir, "test")}
    with pytest.raises(DataError, match=re.escape(
            "nothing to train: no data set of this run has a train split (old: validation, test; new: test); add a "
            "data set with a train split, or set do_train false to only evaluate")):
        prepare_datasets(datasets, [with_labels(OLD_TASKS[0]), with_labels(NEW_TASK)], tokenizer, max_seq_length=32)
    # Without training, the same data sets are simply evaluated.
    data = prepare_datasets(datasets, [with_labels(OLD_TASKS[0]), with_labels(NEW_TASK)], tokenizer,
                            max_seq_length=32, splits=("validation", "test"))
    assert data.train is None and data.eval_only == {} and len(data.test) == 28


def test_an_empty_train_split_is_still_an_error(tmp_path, new_dir, tokenizer):
    (tmp_path / "train.txt").write_text("-DOCSTART- -X- O\n\n")
    (tmp_path / "test.txt").write_text("anna B-PER\nsaid O\n")
    datasets = {"old": {"path": str(tmp_path), "format": "conll"}, "new": json_set(new_dir, "train")}
    with pytest.raises(DataError, match=re.escape(
            f"data set 'old' ({tmp_path}): the train split is empty or missing (found: test 1, train 0)")):
        prepare_datasets(datasets, [with_labels(OLD_TASKS[1]), NEW_TASK], tokenizer, max_seq_length=32)


# ---- training with an eval-only data set, and the drift of the old tasks -------------------------------------------

@pytest.fixture(scope="module")
def start_model(tmp_path_factory, encoder_dir, old_dir):
    """An hf_mtl model trained a few steps on topic + NER (the tasks of the `old` data set): the run's start."""
    root = tmp_path_factory.mktemp("start")
    config = joint_config(encoder_dir, old_dir, root / "model", do_eval=False, do_predict=False, max_steps=60,
                          learning_rate=5e-3)
    run_config(config, root)
    return root / "model", root / "run_config.json"


def continual_config(start_folder, old_dir, new_dir, output, **overrides) -> dict:
    config = joint_config(start_folder, old_dir, output, **{"max_steps": 8, "learning_rate": 5e-3, **overrides})
    config["datasets"] = {"old": json_set(old_dir, "validation", "test"),
                          "new": json_set(new_dir, "train", "validation", "test")}
    config["tasks"] = [*OLD_TASKS, NEW_TASK]  # the old tasks' labels come from the starting model's heads
    return config


@pytest.fixture(scope="module")
def continual_run(tmp_path_factory, start_model, old_dir, new_dir):
    """(output folder, the model's weights as the run built it, before training), with checkpoints at steps 4, 8."""
    root = tmp_path_factory.mktemp("continual")
    config = continual_config(start_model[0], old_dir, new_dir, root / "out", save_strategy="steps", save_steps=4)
    built, build_model = {}, train_module.build_model

    def recording_build_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        built.update({name: tensor.detach().clone() for name, tensor in model.state_dict().items()})
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "build_model", recording_build_model)
        run_config(config, root)
    return root / "out", built


@pytest.mark.training
def test_eval_only_tasks_are_scored_and_their_heads_untouched(continual_run, start_model):
    output, built = continual_run
    for split in ("eval", "test"):
        results = json.loads((output / f"{split}_results.json").read_text())
        for key in ("topic_accuracy", "topic_macro_f1", "ner_f1", "topic_new_accuracy"):
            assert 0.0 <= results[f"{split}_{key}"] <= 1.0, key
    start, after = weights(start_model[0]), weights(output)
    old_heads = [name for name in after if name.startswith(("heads.topic.", "heads.ner."))]
    assert old_heads and all(torch.equal(after[name], start[name]) for name in old_heads)  # never trained on gold
    new_head = [name for name in after if name.startswith("heads.topic_new.")]
    assert new_head and not any(torch.equal(after[name], built[name]) for name in new_head)
    encoder = [name for name in after if name.startswith("encoder.")]
    assert any(not torch.equal(after[name], built[name]) for name in encoder)
    assert all(torch.equal(built[name], start[name]) for name in encoder)  # the run started from the trained encoder
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    assert any("loss_topic_new" in entry for entry in history)
    assert not any("loss_topic" in entry or "loss_ner" in entry for entry in history)


@pytest.mark.training
def test_start_scores_are_the_starting_model_scored_on_its_own(continual_run, start_model, old_dir):
    output, _ = continual_run
    start = json.loads((output / "start_results.json").read_text())
    metric_names = {"topic": ("accuracy", "macro_f1"), "ner": ("f1", "precision", "recall", "accuracy")}
    expected_keys = {f"{split}_{task}_{metric}" for split in ("eval", "test") for task, names in metric_names.items()
                     for metric in names}
    assert set(start) == expected_keys  # the old tasks only: no new task, no score, loss or runtime
    for split, file in (("eval", "validation.jsonl"), ("test", "test.jsonl")):
        alone = evaluate_model(start_model[0], old_dir / file, run_config=start_model[1], tasks=["topic", "ner"],
                               name=split)
        for key in (key for key in expected_keys if key.startswith(split)):
            assert start[key] == pytest.approx(alone[key], abs=1e-9), key
    # The final metrics keep their shape; all_results.json holds the run's own metrics only.
    assert "eval_topic_new_accuracy" in json.loads((output / "eval_results.json").read_text())
    assert not any(key.startswith("start") for key in json.loads((output / "all_results.json").read_text()))


def drift_line(task, metric, start, end) -> str:
    return f"| `{task}` | {metric} | {start:.4f} | {end:.4f} | {end - start:+.4f} |"


@pytest.mark.training
def test_reports_and_card_show_the_drift(continual_run, start_model):
    output, _ = continual_run
    start = json.loads((output / "start_results.json").read_text())
    for split in ("eval", "test"):
        end = json.loads((output / f"{split}_results.json").read_text())
        report = (output / f"{split}_report.md").read_text()
        section = report.split(f"## {DRIFT_TITLE}\n", 1)[1].split("\n## ", 1)[0]
        for task, metric, shown in (("topic", "accuracy", "accuracy (main)"), ("ner", "f1", "f1 (main)"),
                                    ("ner", "recall", "recall")):
            key = f"{split}_{task}_{metric}"
            assert drift_line(task, shown, start[key], end[key]) in section, key
        assert "topic_new" not in section
        assert any(start[key] != end[key] for key in start if key.startswith(split))  # training moved the old tasks
    card = (output / "README.md").read_text()
    section = card.split(f"## {DRIFT_TITLE}\n", 1)[1].split("\n## ", 1)[0]
    end = json.loads((output / "test_results.json").read_text())
    assert f"`{start_model[0]}`" in section and "on the test split" in section
    assert drift_line("topic", "accuracy (main)", start["test_topic_accuracy"], end["test_topic_accuracy"]) in section
    assert drift_line("ner", "f1 (main)", start["test_ner_f1"], end["test_ner_f1"]) in section


@pytest.mark.training
def test_scoring_the_start_changes_nothing_in_training_and_resume_scores_the_starting_model(
        tmp_path, continual_run, start_model, old_dir, new_dir):
    output, _ = continual_run
    # Without evaluation there is no start scoring: the same weights and losses, step for step.
    quiet = continual_config(start_model[0], old_dir, new_dir, tmp_path / "quiet", do_eval=False, do_predict=False)
    run_config(quiet, tmp_path)
    assert not (tmp_path / "quiet" / "start_results.json").exists()
    trained, unscored = weights(output), weights(tmp_path / "quiet")
    assert all(torch.equal(trained[name], unscored[name]) for name in trained)

    def losses(folder):
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]

    assert losses(output) == losses(tmp_path / "quiet")
    # Resumed from step 4, the start scores are still the starting model's (the checkpoint loads inside train()).
    resumed = continual_config(start_model[0], old_dir, new_dir, tmp_path / "resumed")
    run_config(resumed, tmp_path, "--resume_from_checkpoint", str(output / "checkpoint-4"))
    start = json.loads((output / "start_results.json").read_text())
    assert json.loads((tmp_path / "resumed" / "start_results.json").read_text()) == start
    checkpoint = evaluate_model(output / "checkpoint-4", old_dir / "test.jsonl", run_config=start_model[1],
                                tasks=["topic", "ner"], name="test")
    assert any(checkpoint[key] != value for key, value in start.items() if key.startswith("test"))
    final = weights(tmp_path / "resumed")
    assert all(torch.equal(trained[name], final[name]) for name in trained)


@pytest.mark.training
def test_eval_only_heads_are_frozen_unless_a_teacher_trains_them(tmp_path, start_model, old_dir, new_dir):
    """Without a teacher nothing trains an eval-only head, so it is frozen (AdamW's weight decay would shrink it);
    with `"self"` as its teacher the head learns from the teacher alone (its data set has no train rows)."""
    runs = {}
    for name, extra in (("untaught", {}), ("taught", {"distillation": {"teachers": {"topic": "self", "ner": "self"}}})):
        config = continual_config(start_model[0], old_dir, new_dir, tmp_path / name, weight_decay=0.1, do_eval=False,
                                  do_predict=False, **extra)
        run_config(config, tmp_path)
        runs[name] = weights(tmp_path / name)
    start = weights(start_model[0])
    old_heads = [name for name in start if name.startswith(("heads.topic.", "heads.ner."))]
    assert old_heads and all(torch.equal(runs["untaught"][name], start[name]) for name in old_heads)
    assert all(not torch.equal(runs["taught"][name], start[name]) for name in old_heads)
    history = json.loads((tmp_path / "taught" / "trainer_state.json").read_text())["log_history"]
    assert any("loss_topic" in entry and "loss_ner" in entry for entry in history)  # the teachers' terms, logged


@pytest.mark.training
def test_a_new_eval_only_task_without_a_teacher_is_an_error(tmp_path, start_model, old_dir, new_dir):
    """A task of a data set without a train split that does not continue a trained head (here `reinit_head`) and has
    no teacher would be scored as its random head was drawn."""
    config = continual_config(start_model[0], old_dir, new_dir, tmp_path / "out", do_predict=False)
    config["tasks"][0] = {**config["tasks"][0], "reinit_head": True, "labels": TOPICS}
    with pytest.raises(ConfigError, match=r"tasks\[0\]: data set 'old' has no train split, and task 'topic' has "
                                          r"neither a trained head to continue .* nor a teacher"):
        run_config(config, tmp_path)
    assert not (tmp_path / "out").exists()


def test_a_taught_eval_only_crf_head_keeps_its_transitions(tmp_path):
    """A teacher's logits train a CRF head's emissions only: its transitions freeze (weight decay would shrink them)."""
    from conftest import TOPIC_NER_TASKS, tiny_model

    from hf_mtl.train import MultiTaskTrainingArguments, freeze_model

    model = tiny_model([TOPIC_NER_TASKS[0], {**TOPIC_NER_TASKS[1], "crf": True}])
    arguments = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    freeze_model(model, arguments, untaught=["topic"], taught=["ner"])
    assert not any(parameter.requires_grad for parameter in model.heads["topic"].parameters())
    assert not any(parameter.requires_grad for parameter in model.heads["ner"].crf.parameters())
    assert model.heads["ner"].classifier.weight.requires_grad
