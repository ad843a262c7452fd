"""Tiny offline data for the task kinds beyond single-label + tags: sentence pairs (a paraphrase label and a
similarity score on the same pairs), multi-label topics joint with NER tags, and a config that mixes them."""

import json
import random
from pathlib import Path

from train_fixtures import ORGS, PEOPLE, PLACES, TOPIC_WORDS, TOPICS, joint_config

SIZES = {"train": 48, "validation": 16, "test": 16}


def pair_example(rng: random.Random) -> dict:
    """Two sentences about one or two topics; the score counts the topics they share (0-2), the label says >= 1."""
    first_topics = rng.sample(TOPICS, 2)
    shared = rng.choice([0, 1, 2])
    second_topics = first_topics[:shared] + rng.sample([t for t in TOPICS if t not in first_topics], 2 - shared)
    sentence = lambda topics: " ".join(  # noqa: E731
        [rng.choice(PEOPLE)[0], "spoke", "of"] + [rng.choice(TOPIC_WORDS[topic]) for topic in topics]
    )
    return {"sentence1": sentence(first_topics), "sentence2": sentence(second_topics),
            "paraphrase": "yes" if shared else "no", "similarity": float(shared) + rng.uniform(-0.2, 0.2)}


def multi_label_example(rng: random.Random) -> dict:
    """A tagged sentence naming one or two topics by their words; `topics` is the set named."""
    topics = sorted(rng.sample(TOPICS, rng.choice([1, 2])))
    tokens, tags = [], []
    for words, kind in ((rng.choice(PEOPLE), "PER"), (["said"], None), (rng.choice(ORGS), "ORG"), (["in"], None),
                        (rng.choice(PLACES), "LOC"), (["about"], None)):
        tokens += words
        tags += ["O"] * len(words) if kind is None else [("B-" if i == 0 else "I-") + kind for i in range(len(words))]
    for topic in topics:
        tokens += rng.sample(TOPIC_WORDS[topic], 2)
        tags += ["O", "O"]
    return {"tokens": tokens, "tags": tags, "topics": topics}


def write_kinds_data(folder: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for name, make in (("pairs", pair_example), ("multi", multi_label_example)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for split, size in SIZES.items():
            with open(folder / name / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for _ in range(size):
                    handle.write(json.dumps(make(rng)) + "\n")
    return folder


def kinds_config(encoder_dir, data_dir, output_dir, **overrides) -> dict:
    """Four tasks, two data sets: pair label + pair score (joint), multi-label topics + NER (joint), mixed."""
    files = {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}
    config = joint_config(encoder_dir, data_dir, output_dir, max_steps=30, learning_rate=5e-3, logging_steps=5)
    config["datasets"] = {
        name: {"path": str(Path(data_dir) / name), "format": "json", "data_files": files} for name in ("pairs", "multi")
    }
    config["tasks"] = [
        {"name": "paraphrase", "type": "sequence_classification", "dataset": "pairs", "text_column": "sentence1",
         "text_pair_column": "sentence2", "label_column": "paraphrase"},
        {"name": "similarity", "type": "sequence_classification", "problem_type": "regression",
         "dataset": "pairs", "text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "similarity"},
        {"name": "topics", "type": "sequence_classification", "problem_type": "multi_label_classification",
         "dataset": "multi", "label_column": "topics"},
        {"name": "ner", "type": "token_classification", "dataset": "multi"},
    ]
    config.update(overrides)
    return config
