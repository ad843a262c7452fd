"""Saved multi-task folders for the prediction and export tests: MiniLM with heads fitted to a few sentences.

Random heads predict near-ties, so the token head is fitted (a linear layer on frozen MiniLM states, LBFGS) until it
reproduces the gold tags of `SENTENCES` with wide margins: entity assertions are then deterministic, in fp32 and bf16.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_encoder

from hf_mtl import MultiTaskModel
from hf_mtl.pipeline_mtl import add_pipeline_to_folder

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
TOPIC_LABELS = ["business", "politics", "other"]
TASKS = [
    {"name": "topic", "type": "sequence_classification", "labels": TOPIC_LABELS},
    {"name": "ner", "type": "token_classification", "labels": NER_LABELS},
]

# (words, tags, topic): multi-subword names, punctuation beside words and inside them, repeated words.
SENTENCES = [
    ("Apple opened a store in Paris .", "B-ORG O O O O B-LOC O", "business"),
    (
        "Arnold Schwarzenegger visited Microsoft headquarters in Redmond , Washington .",
        "B-PER I-PER O B-ORG O O B-LOC O B-LOC O",
        "business",
    ),
    (
        "Paris , Paris and Paris again : ( Apple ) sued Apple !",
        "B-LOC O B-LOC O B-LOC O O O B-ORG O O B-ORG O",
        "business",
    ),
    ("Angela Merkel met Emmanuel Macron in Berlin .", "B-PER I-PER O B-PER I-PER O B-LOC O", "politics"),
    ("Volkswagen's factory in Wolfsburg employs thousands of workers .", "B-ORG O O B-LOC O O O O O", "business"),
    ("The weather was nice yesterday .", "O O O O O O", "other"),
    ("Parliament in London debated the Bank of England today .", "O O B-LOC O O B-ORG I-ORG I-ORG O O", "politics"),
]


def raw_text(words: str) -> str:
    """The sentence as a user would type it: no space before closing punctuation, none after an opening bracket."""
    for mark in [" .", " ,", " !", " :", " )"]:
        words = words.replace(mark, mark.strip())
    return words.replace("( ", "(")


def fit_heads(model, tokenizer):
    """Fit the `ner` and `topic` heads on frozen encoder states of `SENTENCES` (fp32, a few LBFGS steps)."""
    model.eval()
    token_features, token_labels, sentence_features, sentence_labels = [], [], [], []
    with torch.no_grad():
        for words, tags, topic in SENTENCES:
            encoding = tokenizer(words.split(), is_split_into_words=True, return_tensors="pt")
            states, pooled = model._encode(encoding["input_ids"], encoding["attention_mask"], None, None)
            word_ids = encoding.word_ids()
            first = [word_ids.index(index) for index in range(len(words.split()))]
            token_features.append(states[0, first])
            token_labels += [NER_LABELS.index(tag) for tag in tags.split()]
            sentence_features.append(pooled)
            sentence_labels.append(TOPIC_LABELS.index(topic))
    for name, features, labels in [
        ("ner", torch.cat(token_features), token_labels),
        ("topic", torch.cat(sentence_features), sentence_labels),
    ]:
        layer = model.heads[name].classifier
        labels = torch.tensor(labels)
        optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(layer(features), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
        assert (layer(features).argmax(-1) == labels).all(), f"head {name!r} did not fit"


def build_model_folder(encoder_path: str, folder: Path) -> Path:
    """A saved hf_mtl folder as the training script leaves it: weights, config, the three .py files, tokenizer."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    model = MultiTaskModel.from_encoder(encoder_path, tasks=TASKS)
    fit_heads(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    add_pipeline_to_folder(folder)
    return folder


def read_jsonl(path) -> list:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def assert_same_predictions(results, expected, score_tolerance=1e-3):
    """Same texts, labels, entity spans and tags; scores equal up to batching and precision noise."""
    assert len(results) == len(expected)
    for result, reference in zip(results, expected):
        assert result.keys() == reference.keys()
        for key, value in reference.items():
            if isinstance(value, dict) and "label" in value:
                assert result[key]["label"] == value["label"]
                assert result[key]["score"] == pytest.approx(value["score"], abs=score_tolerance)
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                without_scores = [{**entity, "score": None} for entity in value]
                assert [{**entity, "score": None} for entity in result[key]] == without_scores
                assert [entity["score"] for entity in result[key]] == pytest.approx(
                    [entity["score"] for entity in value], abs=score_tolerance
                )
            else:
                assert result[key] == value


def build_scaled_tiny_model(folder: Path, tokenizer, tasks, model_type="bert", pooling="mean") -> Path:
    """A tiny random encoder with heads scaled up, so that predictions vary and are not near-ties: `folder/model`."""
    save_tiny_encoder(folder / "encoder", model_type=model_type)
    model = MultiTaskModel.from_encoder(str(folder / "encoder"), tasks=tasks, pooling=pooling)
    with torch.no_grad():
        for head in model.heads.values():
            if hasattr(head, "classifier"):  # a bi-encoder head has no weights of its own
                head.classifier.weight.normal_(std=2.0)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"
