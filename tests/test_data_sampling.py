"""Mixing separate data sets: shares per strategy, determinism, repetition of small sets, the mixed train split."""

import json
from collections import Counter

import datasets
import pytest

from hf_mtl.data import mix_datasets, prepare_datasets, sampling_probabilities
from hf_mtl.errors import ConfigError

SIZES = {"big": 1000, "small": 100}
EXPECTED = {
    "proportional": {"big": 1000 / 1100, "small": 100 / 1100},
    "temperature": {"big": 1000**0.5 / (1000**0.5 + 10), "small": 10 / (1000**0.5 + 10)},
    "uniform": {"big": 0.5, "small": 0.5},
}


def two_sets():
    return [
        datasets.Dataset.from_dict({"source": [name] * size, "row": list(range(size))}) for name, size in SIZES.items()
    ]


@pytest.mark.parametrize("strategy", EXPECTED)
def test_sampled_shares_match_the_strategy(strategy):
    probabilities = sampling_probabilities(SIZES, strategy, temperature=2.0)
    assert probabilities == pytest.approx(EXPECTED[strategy])
    mixed = mix_datasets(two_sets(), list(probabilities.values()), seed=42)
    assert len(mixed) == 1100  # one epoch is the train splits' total
    shares = Counter(mixed["source"])
    for name, expected in EXPECTED[strategy].items():
        assert abs(shares[name] / 1100 - expected) < 0.02


def test_same_seed_same_order():
    probabilities = [0.5, 0.5]
    first = mix_datasets(two_sets(), probabilities, seed=7)
    again = mix_datasets(two_sets(), probabilities, seed=7)
    other = mix_datasets(two_sets(), probabilities, seed=8)
    assert list(zip(first["source"], first["row"])) == list(zip(again["source"], again["row"]))
    assert list(zip(first["source"], first["row"])) != list(zip(other["source"], other["row"]))


def test_smaller_set_repeats_evenly_and_the_order_is_shuffled():
    mixed = mix_datasets(two_sets(), [0.5, 0.5], seed=0)
    small_rows = Counter(row for source, row in zip(mixed["source"], mixed["row"]) if source == "small")
    assert set(small_rows) == set(range(100)) and set(small_rows.values()) <= {5, 6}
    assert mixed["source"][:50].count("small") not in (0, 50)
    assert isinstance(mixed, datasets.Dataset) and mixed[3]["source"] in SIZES  # map-style: random access


def test_bad_sampling_arguments():
    with pytest.raises(ConfigError, match="task_sampling: 'random' is not one of"):
        sampling_probabilities(SIZES, "random")
    with pytest.raises(ConfigError, match="sampling_temperature: a number > 0"):
        sampling_probabilities(SIZES, "temperature", temperature=0)


def test_prepared_train_mixes_data_sets(tmp_path, tokenizer):
    def write(name, rows):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    write("ner", [{"tokens": ["Oslo", "won", str(i)], "tags": ["B-LOC", "O", "O"]} for i in range(40)])
    write("news", [{"text": f"shares fell {i}", "label": "business" if i % 2 else "sports"} for i in range(10)])
    data = prepare_datasets(
        {"ner": {"path": "ner.jsonl"}, "news": {"path": "news.jsonl"}},
        [
            {"name": "ner", "type": "token_classification", "dataset": "ner"},
            {"name": "topic", "type": "sequence_classification", "dataset": "news", "text_column": "text"},
        ],
        tokenizer,
        task_sampling="uniform",
        base_dir=tmp_path,
        validation_split_percentage=10,
        seed=3,
    )
    assert data.sampling_probabilities == {"ner": 0.5, "news": 0.5}
    assert len(data.train) == 36 + 9  # Σ nᵢ after carving 10% validation from each train split
    from_news = sum(label != -100 for label in data.train["topic_labels"])
    assert from_news == 22 or from_news == 23
    assert data.train["length"] == [len(ids) for ids in data.train["input_ids"]]  # for group_by_length
    assert len(data.validation) == 4 + 1
    assert "train: 2 data sets mixed (uniform): ner 50.0%, news 50.0% of 45 rows per epoch" in data.summary
