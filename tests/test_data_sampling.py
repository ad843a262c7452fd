"""Mixing separate data sets: exact shares per epoch, a new draw every epoch, rows without replacement, the mixed train split."""

import json
from collections import Counter

import pytest
import torch
from datasets import Dataset

from hf_mtl.data import MixtureSampler, TrainMixture, prepare_datasets, sampling_probabilities
from hf_mtl.errors import ConfigError

SIZES = {"big": 1000, "small": 100}
EXPECTED = {
    "proportional": {"big": 1000 / 1100, "small": 100 / 1100},
    "temperature": {"big": 1000**0.5 / (1000**0.5 + 10), "small": 10 / (1000**0.5 + 10)},
    "uniform": {"big": 0.5, "small": 0.5},
}


def mixture(probabilities, seed=42, **kwargs):
    return TrainMixture(sizes=tuple(SIZES.values()), probabilities=tuple(probabilities), seed=seed, **kwargs)


def sources(indices):
    """Concatenated-row indices -> ("big" | "small", row within its data set)."""
    return [("big", int(i)) if i < SIZES["big"] else ("small", int(i) - SIZES["big"]) for i in indices]


@pytest.mark.parametrize("strategy", EXPECTED)
def test_every_epoch_has_exact_shares_of_the_total(strategy):
    probabilities = sampling_probabilities(SIZES, strategy, temperature=2.0)
    assert probabilities == pytest.approx(EXPECTED[strategy])
    mix = mixture(probabilities.values())
    counts = dict(zip(SIZES, mix.counts))
    assert sum(counts.values()) == 1100  # one epoch is the train splits' total
    for name, expected in EXPECTED[strategy].items():
        assert abs(counts[name] - expected * 1100) < 1  # largest remainder: within one row of the quota
    for epoch in range(3):
        drawn = Counter(source for source, _ in sources(mix.epoch_indices(epoch)))
        assert drawn == counts, epoch
    if strategy == "proportional":  # every row exactly once per epoch: a plain shuffle of the concatenation
        assert sorted(mix.epoch_indices(1).tolist()) == list(range(1100))


def test_each_epoch_is_a_new_draw_determined_by_seed_and_epoch():
    mix = mixture([0.5, 0.5], seed=7)
    epochs = [mix.epoch_indices(epoch).tolist() for epoch in range(3)]
    assert len({tuple(epoch) for epoch in epochs}) == 3
    # drawn directly, without drawing the epochs before it (as a resumed run does), by another object
    assert mixture([0.5, 0.5], seed=7).epoch_indices(2).tolist() == epochs[2]
    assert mixture([0.5, 0.5], seed=8).epoch_indices(2).tolist() != epochs[2]


def test_rows_are_walked_without_replacement_across_epochs():
    mix = mixture([0.5, 0.5], seed=0)  # 550 rows each: big is down-sampled, small up-sampled
    by_epoch = [sources(mix.epoch_indices(epoch)) for epoch in range(2)]
    big = [Counter(row for source, row in epoch if source == "big") for epoch in by_epoch]
    small = [Counter(row for source, row in epoch if source == "small") for epoch in by_epoch]
    assert len(big[0]) == 550 and set(big[0].values()) == {1}  # no repeat before the set is used up
    both = big[0] + big[1]
    assert set(both) == set(range(1000))  # epoch 1 shows the 450 rows epoch 0 left out, then starts over
    assert Counter(both.values()) == {1: 900, 2: 100}
    assert set(small[0]) == set(range(100)) and set(small[0].values()) <= {5, 6}
    assert set((small[0] + small[1]).values()) == {11}  # 1100 draws = 11 full passes


def test_mixture_sampler_follows_set_epoch_and_groups_by_length():
    mix = mixture([0.5, 0.5], seed=3)
    sampler = MixtureSampler(mix)
    assert len(sampler) == 1100
    assert list(sampler) == mix.epoch_indices(0).tolist()
    sampler.set_epoch(4)
    assert list(sampler) == list(sampler) == mix.epoch_indices(4).tolist()  # iterating does not advance the epoch

    lengths = [(7 * i) % 61 + 3 for i in range(1100)]
    grouped = MixtureSampler(mix, lengths=lengths, group_batch_size=8)
    grouped.set_epoch(4)
    order = list(grouped)
    assert sorted(order) == sorted(mix.epoch_indices(4).tolist()) and order == list(grouped)

    def spread(indices):  # summed length range within batches of 8
        batches = [indices[i : i + 8] for i in range(0, len(indices), 8)]
        return sum(max(lengths[i] for i in batch) - min(lengths[i] for i in batch) for batch in batches)

    assert spread(order) < spread(mix.epoch_indices(4).tolist()) / 4
    grouped.set_epoch(5)
    assert list(grouped) != order


def test_fewer_rows_per_epoch_keep_the_shares():
    mix = mixture([0.75, 0.25], rows_per_epoch=40)
    assert mix.counts == [30, 10] and len(MixtureSampler(mix)) == 40
    assert Counter(source for source, _ in sources(mix.epoch_indices(1))) == {"big": 30, "small": 10}


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
    # train: both train splits concatenated (36 + 9 after carving 10% validation), drawn from per epoch
    assert len(data.train) == 36 + 9 and data.train_mixture.sizes == (36, 9)
    assert data.train["topic_labels"][:36] == [-100] * 36 and -100 not in data.train["topic_labels"][36:]
    assert data.train_mixture.rows_per_epoch == 45 and sorted(data.train_mixture.counts) == [22, 23]
    assert data.train_mixture.seed == 3
    assert data.train["length"] == [len(ids) for ids in data.train["input_ids"]]  # for group_by_length
    assert len(data.validation) == 4 + 1
    assert ("train: 2 data sets mixed (uniform): ner 50.0%, news 50.0% of 45 rows per epoch, re-drawn every epoch"
            in data.summary)


def mixture_trainer(tmp_path, mix, **args):
    from transformers import TrainingArguments

    from hf_mtl.trainer import MultiTaskTrainer

    rows = Dataset.from_dict({"input_ids": [[1] * ((7 * i) % 61 + 3) for i in range(1100)], "row": list(range(1100))})
    arguments = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=50, use_cpu=True, report_to=[],
                                  remove_unused_columns=False, seed=5, **args)
    return MultiTaskTrainer(model=torch.nn.Linear(1, 1), args=arguments, train_dataset=rows, train_mixture=mix,
                            data_collator=lambda features: {"row": torch.tensor([feature["row"] for feature in features])})


@pytest.mark.parametrize("strategy", ["random", "group_by_length"])
def test_trainer_trains_every_epoch_on_that_epochs_draw(tmp_path, strategy):
    mix = mixture([0.5, 0.5], seed=5)
    loader = mixture_trainer(tmp_path, mix, train_sampling_strategy=strategy).get_train_dataloader()
    assert len(loader) == 22
    for epoch in (0, 1, 2):
        loader.set_epoch(epoch)  # what Trainer does before each epoch
        seen = torch.cat([batch["row"] for batch in loader]).tolist()
        drawn = mix.epoch_indices(epoch).tolist()
        if strategy == "random":
            assert seen == drawn
        else:
            assert sorted(seen) == sorted(drawn) and seen != drawn


def test_trainer_refuses_batch_rebalance_on_a_mixture(tmp_path):
    trainer = mixture_trainer(tmp_path, mixture([0.5, 0.5]), train_sampling_strategy="batch_rebalance")
    with pytest.raises(ConfigError, match="'batch_rebalance' cannot sample a mixture"):
        trainer.get_train_dataloader()


@pytest.mark.training
def test_max_train_samples_sets_the_rows_per_epoch_of_a_mixture(tmp_path, tokenizer):
    from train_fixtures import joint_config, run_config, save_tiny_encoder, write_joint_data

    encoder, data = save_tiny_encoder(tmp_path / "encoder", tokenizer), write_joint_data(tmp_path / "data")
    config = joint_config(encoder, data, tmp_path / "out", max_steps=-1, num_train_epochs=2, max_train_samples=24,
                          do_eval=False, do_predict=False)
    config["datasets"] = {"ner_set": config["datasets"]["demo"], "topic_set": config["datasets"]["demo"]}
    config["tasks"][0]["dataset"], config["tasks"][1]["dataset"] = "topic_set", "ner_set"
    results = run_config(config, tmp_path)
    assert results["train_samples"] == 24
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * 3  # 24 rows in batches of 8, twice
