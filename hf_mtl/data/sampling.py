"""Mixing the train splits of separate data sets with chosen shares, re-drawn every epoch."""

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

from ..errors import ConfigError



class TaskSampling(StrEnum):
    """`task_sampling`: each data set's share of a mixed epoch, p ∝ n (proportional), p ∝ n^(1/T) (temperature, T =
    `sampling_temperature`) or p = 1/k (uniform). A `str`: the config and the run record hold its value."""

    PROPORTIONAL = "proportional"
    TEMPERATURE = "temperature"
    UNIFORM = "uniform"

    @classmethod
    def parse(cls, value) -> "TaskSampling":
        """The member of that value; else a `ConfigError` naming the value and the choices."""
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"task_sampling: {value!r} is not one of {', '.join(cls)}") from None


def check_sampling_settings(strategy, temperature) -> TaskSampling:
    """The strategy as a `TaskSampling`, and for temperature sampling a temperature > 0 (`ConfigError` otherwise)."""
    strategy = TaskSampling.parse(strategy)
    if strategy is TaskSampling.TEMPERATURE and not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise ConfigError(f"sampling_temperature: a number > 0 is required, got {temperature!r}")
    return strategy


def sampling_probabilities(
    sizes: dict[str, int], strategy: TaskSampling | str = TaskSampling.PROPORTIONAL, temperature: float = 2.0
) -> dict[str, float]:
    """Share of each data set in an epoch: p ∝ n (proportional), p ∝ n^(1/T) (temperature) or p = 1/k (uniform)."""
    strategy = check_sampling_settings(strategy, temperature)
    if not sizes or any(size <= 0 for size in sizes.values()):
        raise ConfigError(f"task_sampling: every data set needs train examples to be sampled, got sizes {sizes}")
    exponent = {
        TaskSampling.PROPORTIONAL: 1.0, TaskSampling.TEMPERATURE: 1.0 / temperature, TaskSampling.UNIFORM: 0.0
    }[strategy]
    weights = {name: size**exponent for name, size in sizes.items()}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


@dataclass(frozen=True)
class TrainMixture:
    """
    Which rows of several train splits, concatenated in order, make up each epoch: `rows_per_epoch` rows (default
    Σ nᵢ) of which data set i gives `counts[i]` (largest-remainder shares of pᵢ), re-drawn every epoch.

    `interleave_datasets` cannot give an exact number of rows (its stopping strategies end when one or every source
    is exhausted), so the rows are picked with numpy. Each data set is walked through an endless stream of seeded
    permutations of itself, epoch e taking stream positions [e·cᵢ, (e+1)·cᵢ): a down-sampled set shows new rows every
    epoch, and any set repeats a row only after all its rows were used. Epoch e's rows and their order depend only on
    (seed, e), so any epoch can be drawn directly: what a resumed run needs.
    """

    sizes: tuple
    probabilities: tuple
    seed: int
    rows_per_epoch: int | None = None

    def __post_init__(self):
        if len(self.sizes) != len(self.probabilities):
            raise ValueError(f"{len(self.sizes)} data sets but {len(self.probabilities)} probabilities")
        if not self.sizes or min(self.sizes) <= 0:
            raise ValueError(f"cannot sample from an empty data set (sizes {list(self.sizes)})")
        object.__setattr__(self, "sizes", tuple(int(size) for size in self.sizes))
        object.__setattr__(self, "probabilities", tuple(float(p) for p in self.probabilities))
        if self.rows_per_epoch is None:
            object.__setattr__(self, "rows_per_epoch", sum(self.sizes))

    @property
    def counts(self) -> list[int]:
        """Rows per epoch from each data set."""
        total = sum(self.probabilities)
        return largest_remainder([p / total * self.rows_per_epoch for p in self.probabilities])

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s rows as indices into the concatenated train splits, in a seeded random order."""
        picked, offset = [], 0
        for source, (size, count) in enumerate(zip(self.sizes, self.counts)):
            first = epoch * count  # this epoch's slice of the data set's stream of permutations
            cycles = range(first // size, -(-(first + count) // size))
            stream = [np.random.default_rng([self.seed, 1, source, cycle]).permutation(size) for cycle in cycles]
            start = first - cycles.start * size
            picked.append(np.concatenate(stream or [np.empty(0, dtype=np.int64)])[start : start + count] + offset)
            offset += size
        return np.random.default_rng([self.seed, 2, epoch]).permutation(np.concatenate(picked))


class MixtureSampler(Sampler):
    """
    Map-style sampler over the concatenated train splits that yields `mixture`'s draw for the epoch set by
    `set_epoch` (Trainer and accelerate call it before every epoch; nothing else changes between epochs, so a
    resumed run that skips batches of an epoch sees the same order). With `lengths` (one per concatenated row) the
    epoch's rows are grouped by length the way transformers' `LengthGroupedSampler` does, with `group_batch_size`.
    """

    def __init__(self, mixture: TrainMixture, lengths=None, group_batch_size: int | None = None):
        if lengths is not None and len(lengths) != sum(mixture.sizes):
            raise ValueError(f"{len(lengths)} lengths for {sum(mixture.sizes)} concatenated train rows")
        if lengths is not None and not group_batch_size:
            raise ValueError("grouping by length needs group_batch_size")
        self.mixture = mixture
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.group_batch_size = group_batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return self.mixture.rows_per_epoch

    def __iter__(self):
        indices = self.mixture.epoch_indices(self.epoch)
        if self.lengths is not None:
            seed = int(np.random.SeedSequence([self.mixture.seed, 3, self.epoch]).generate_state(1)[0])
            grouped = get_length_grouped_indices(
                self.lengths[indices].tolist(), self.group_batch_size, generator=torch.Generator().manual_seed(seed)
            )
            indices = indices[grouped]
        return iter(indices.tolist())


def largest_remainder(quotas: list[float]) -> list[int]:
    """Integers that sum to round(Σ quotas), each within 1 of its quota."""
    counts = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: counts[i] - quotas[i])
    for i in by_remainder[: round(sum(quotas)) - sum(counts)]:
        counts[i] += 1
    return counts
