"""The embedded demo data set: size, coverage, well-formed IOB2, reproducible, learnable but not trivial."""

import importlib.util
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from hf_mtl.data import prepare_datasets
from hf_mtl.data.tags import iob1_to_iob2

DATA = Path(__file__).resolve().parents[1] / "data"
MIN_SIZES = {"train": 1000, "validation": 200, "test": 200}


def load(split: str) -> list[dict]:
    with open(DATA / "demo" / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def demo() -> dict[str, list[dict]]:
    return {split: load(split) for split in MIN_SIZES}


def test_sizes_topics_and_entity_types(demo):
    for split, rows in demo.items():
        assert len(rows) >= MIN_SIZES[split]
        assert len({row["topic"] for row in rows}) >= 4
        assert len({entity for row in rows for entity, _, _ in get_entities(row["tags"])}) >= 3


def test_rows_are_well_formed_iob2(demo):
    for rows in demo.values():
        for row in rows:
            assert set(row) == {"tokens", "tags", "topic"}
            assert len(row["tokens"]) == len(row["tags"]) > 0
            assert all(token and not any(c.isspace() for c in token) for token in row["tokens"])
            assert all(
                tag == "O" or tag[:2] in ("B-", "I-") and tag[2:] in ("PER", "ORG", "LOC", "MISC")
                for tag in row["tags"]
            )
            assert iob1_to_iob2(row["tags"]) == row["tags"]


def test_generator_reproduces_the_files(tmp_path):
    spec = importlib.util.spec_from_file_location("generate_demo", DATA / "generate_demo.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.generate(tmp_path)
    for split in MIN_SIZES:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (DATA / "demo" / f"{split}.jsonl").read_bytes()


def test_evaluation_sentences_and_many_names_are_new(demo):
    train_sentences = {" ".join(row["tokens"]) for row in demo["train"]}
    train_names = {
        " ".join(row["tokens"][start : end + 1])
        for row in demo["train"]
        for _, start, end in get_entities(row["tags"])
    }
    for split in ("validation", "test"):
        assert not train_sentences & {" ".join(row["tokens"]) for row in demo[split]}
        names = [
            " ".join(row["tokens"][start : end + 1])
            for row in demo[split]
            for _, start, end in get_entities(row["tags"])
        ]
        assert sum(name not in train_names for name in names) / len(names) > 0.1


def test_topic_is_learnable_from_words_but_not_from_one_keyword(demo):
    # Naive Bayes on lower-cased words: the topic can be learnt from the words of a sentence ...
    counts, priors = defaultdict(Counter), Counter()
    for row in demo["train"]:
        priors[row["topic"]] += 1
        counts[row["topic"]].update(word.lower() for word in row["tokens"])
    vocabulary = {word for counter in counts.values() for word in counter}

    def predict(tokens):
        def score(topic):
            total = sum(counts[topic].values()) + len(vocabulary)
            return math.log(priors[topic]) + sum(
                math.log((counts[topic][word.lower()] + 1) / total) for word in tokens
            )

        return max(priors, key=score)

    accuracy = sum(predict(row["tokens"]) == row["topic"] for row in demo["test"]) / len(demo["test"])
    assert accuracy > 0.85
    # ... but no word that only one topic uses marks even half of that topic's sentences.
    for topic in priors:
        own = [{word.lower() for word in row["tokens"]} for row in demo["train"] if row["topic"] == topic]
        elsewhere = {word.lower() for row in demo["train"] if row["topic"] != topic for word in row["tokens"]}
        keywords = Counter(word for words in own for word in words - elsewhere)
        assert keywords.most_common(1)[0][1] / len(own) < 0.5


def test_demo_through_prepare_datasets(tokenizer):
    data = prepare_datasets(
        {"demo": {"path": str(DATA / "demo")}},
        [
            {"name": "topic", "type": "sequence_classification", "dataset": "demo", "label_column": "topic"},
            {"name": "ner", "type": "token_classification", "dataset": "demo"},
        ],
        tokenizer,
    )
    assert data.label_lists["topic"] == ["business", "politics", "sports", "technology"]
    assert data.label_lists["ner"] == ["O"] + [f"{p}-{t}" for p in "BI" for t in ("LOC", "MISC", "ORG", "PER")]
    assert (len(data.train), len(data.validation), len(data.test)) == tuple(len(load(split)) for split in MIN_SIZES)
