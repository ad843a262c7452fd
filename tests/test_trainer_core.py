"""Stock transformers.Trainer, given only label_names, trains the model and evaluates per-task logits."""

import numpy as np
import pytest
from conftest import tiny_model
from datasets import Dataset
from transformers import Trainer, TrainingArguments

pytestmark = pytest.mark.training

TASKS = [
    {"name": "topic", "type": "sequence_classification", "labels": ["even", "odd"]},
    {"name": "ner", "type": "token_classification", "labels": ["O", "B-X"]},
]


def toy_dataset(size=64, seq=8):
    rng = np.random.default_rng(0)
    input_ids = rng.integers(5, 50, size=(size, seq))
    topic = (input_ids[:, 1] % 2).tolist()
    ner = (input_ids > 40).astype(int)  # a token-level rule the head can learn
    ner[:, 0] = -100
    return Dataset.from_dict(
        {"input_ids": input_ids.tolist(), "attention_mask": np.ones_like(input_ids).tolist(),
         "topic_labels": topic, "ner_labels": ner.tolist()}
    ).with_format("torch")


def test_trainer_trains_and_evaluates_with_a_dict_of_logits(tmp_path):
    model = tiny_model(TASKS, vocab_size=50)
    received = {}

    def compute_metrics(prediction):
        received["predictions"] = prediction.predictions
        received["label_ids"] = prediction.label_ids
        return {"topic_accuracy": float((prediction.predictions["topic"].argmax(-1) == prediction.label_ids[0]).mean())}

    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, per_device_eval_batch_size=24, learning_rate=5e-3,
        max_steps=40, logging_steps=5, report_to=[], use_cpu=True, save_strategy="no", seed=0,
        label_names=["topic_labels", "ner_labels"],
    )
    data = toy_dataset()
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, compute_metrics=compute_metrics)
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < 0.7 * losses[0], losses
    metrics = trainer.evaluate()
    assert set(received["predictions"]) == {"topic", "ner"}
    assert received["predictions"]["topic"].shape == (64, 2)
    assert received["predictions"]["ner"].shape == (64, 8, 2)
    assert "eval_topic_accuracy" in metrics and np.isfinite(metrics["eval_loss"])
