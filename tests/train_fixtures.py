"""Offline building blocks for training tests: a tiny random encoder folder, tiny joint data, a config runner."""

import json
import random
from pathlib import Path

import torch
from conftest import tiny_encoder_config
from transformers import AutoModel

TOPICS = ["business", "politics", "sports", "technology"]
NER_LABELS = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]
TOPIC_WORDS = {
    "business": ["shares", "profit", "market", "bank"],
    "politics": ["election", "minister", "vote", "parliament"],
    "sports": ["match", "goal", "coach", "season"],
    "technology": ["software", "chip", "app", "robot"],
}
PEOPLE = [["anna", "berg"], ["omar"], ["lena", "kovacs"]]
ORGS = [["acme", "corp"], ["northwind"]]
PLACES = [["paris"], ["new", "york"], ["lagos"]]


def joint_example(rng: random.Random) -> dict:
    topic = rng.choice(TOPICS)
    tokens, tags = [], []

    def add(words, kind=None):
        for index, word in enumerate(words):
            tokens.append(word)
            tags.append("O" if kind is None else ("B-" if index == 0 else "I-") + kind)

    add(rng.choice(PEOPLE), "PER")
    add(["said", "the"])
    add(rng.sample(TOPIC_WORDS[topic], 2))  # two topic words: enough signal for a tiny random encoder to learn
    add(["of"])
    add(rng.choice(ORGS), "ORG")
    add(["in"])
    add(rng.choice(PLACES), "LOC")
    return {"tokens": tokens, "tags": tags, "topic": topic}


def write_joint_data(folder: Path, sizes=(48, 16, 16), seed=0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "validation", "test"), sizes):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for _ in range(size):
                handle.write(json.dumps(joint_example(rng)) + "\n")
    return folder


def save_tiny_encoder(folder: Path, tokenizer, model_type="bert") -> Path:
    torch.manual_seed(0)
    AutoModel.from_config(tiny_encoder_config(model_type)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def joint_config(encoder_dir, data_dir, output_dir, **overrides) -> dict:
    config = {
        "model_name_or_path": str(encoder_dir),
        "datasets": {"demo": {"path": str(data_dir), "format": "json",
                              "data_files": {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}}},
        "tasks": [
            {"name": "topic", "type": "sequence_classification", "dataset": "demo", "label_column": "topic"},
            {"name": "ner", "type": "token_classification", "dataset": "demo"},
        ],
        "max_seq_length": 32,
        "output_dir": str(output_dir),
        "do_train": True, "do_eval": True, "do_predict": True,
        "max_steps": 4, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
        "learning_rate": 1e-3, "logging_steps": 1, "save_strategy": "no", "eval_strategy": "no",
        "use_cpu": True, "report_to": "none", "seed": 7, "disable_tqdm": True,
    }
    config.update(overrides)
    return config


def run_config(config: dict, folder: Path, *overrides: str) -> dict:
    from hf_mtl.train import main

    path = folder / "run_config.json"
    path.write_text(json.dumps(config))
    return main([str(path), *overrides])


def weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))
