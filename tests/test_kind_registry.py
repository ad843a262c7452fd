"""One home per task kind: the registry every layer reads, and the rules evaluation and the pipeline share."""

import numpy as np
import pytest

from hf_mtl.configuration_mtl import MultiTaskConfig, validate_task
from hf_mtl.metrics.multitask_metrics.multitask_metrics import CONFIGS
from hf_mtl.task_kinds import TASK_KINDS, MultiLabelClassificationHead, task_kind
from hf_mtl.tasks import TASK_CLASSES, parse_task


def test_every_head_kind_has_its_task_class_and_metric_config():
    assert set(TASK_KINDS) == set(TASK_CLASSES)
    assert set(TASK_KINDS) <= set(CONFIGS)


@pytest.mark.parametrize("task, kind", [
    ({"type": "sequence_classification"}, "single_label_classification"),
    ({"type": "sequence_classification", "problem_type": "multi_label_classification"}, "multi_label_classification"),
    ({"type": "sequence_classification", "problem_type": "regression"}, "regression"),
    ({"type": "token_classification"}, "token_classification"),
    ({"type": "token_classification", "problem_type": "single_label_classification"}, "token_classification"),
])
def test_a_task_dict_names_its_kind(task, kind):
    assert task_kind(task) == kind


@pytest.mark.parametrize("task, message", [
    ({"name": "t", "type": "token_classification", "problem_type": "regression", "labels": ["O", "B-X"]},
     "t.problem_type: a token_classification task is single_label_classification only"),
    ({"name": "t", "type": "sequence_classification", "problem_type": "regression", "labels": ["a", "b"]},
     "t.labels: a regression task predicts one number and takes no labels"),
    ({"name": "t", "type": "tagging", "labels": ["a", "b"]}, "t.type: 'tagging' is not one of"),
])
def test_the_config_and_the_run_config_refuse_alike(task, message):
    """The rule lives in `validate_task`; the run config's task block (`parse_task`) reports the same words."""
    with pytest.raises(ValueError, match=message):
        validate_task(task, "t")
    with pytest.raises(Exception, match=message):
        parse_task(dict(task, dataset="d"), "t")


@pytest.mark.parametrize("threshold, always_top_label", [(0.5, False), (0.5, True), (0.9, True), (0.2, False)])
def test_evaluation_and_the_pipeline_choose_the_same_multi_labels(threshold, always_top_label):
    labels = ["a", "b", "c", "d"]
    task_dict = {"name": "m", "type": "sequence_classification", "problem_type": "multi_label_classification",
                 "labels": labels, "threshold": threshold, "always_top_label": always_top_label}
    config = MultiTaskConfig(tasks=[task_dict])
    task = parse_task(dict(config.tasks[0]), "m", require_dataset=False)
    generator = np.random.default_rng(0)
    for logits in generator.normal(0, 2, size=(50, len(labels))):
        probabilities = 1 / (1 + np.exp(-logits))
        evaluated = task.decode(probabilities, row={})
        served = MultiLabelClassificationHead.pipeline_output(config.tasks[0], logits)
        assert sorted(entry["label"] for entry in served) == evaluated
        assert [entry["score"] for entry in served] == sorted((entry["score"] for entry in served), reverse=True)
