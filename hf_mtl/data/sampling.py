"""Mixing the train splits of separate data sets into one epoch with chosen shares."""

import math

import numpy as np
from datasets import Dataset, concatenate_datasets

from ..errors import ConfigError

SAMPLING_STRATEGIES = ("proportional", "temperature", "uniform")


def sampling_probabilities(
    sizes: dict[str, int], strategy: str = "proportional", temperature: float = 2.0
) -> dict[str, float]:
    """Share of each data set in an epoch: p ∝ n (proportional), p ∝ n^(1/T) (temperature) or p = 1/k (uniform)."""
    if strategy not in SAMPLING_STRATEGIES:
        raise ConfigError(f"task_sampling: {strategy!r} is not one of {', '.join(SAMPLING_STRATEGIES)}")
    if strategy == "temperature" and not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise ConfigError(f"sampling_temperature: a number > 0 is required, got {temperature!r}")
    if not sizes or any(size <= 0 for size in sizes.values()):
        raise ConfigError(f"task_sampling: every data set needs train examples to be sampled, got sizes {sizes}")
    exponent = {"proportional": 1.0, "temperature": 1.0 / temperature, "uniform": 0.0}[strategy]
    weights = {name: size**exponent for name, size in sizes.items()}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def mix_datasets(datasets: list[Dataset], probabilities: list[float], seed: int) -> Dataset:
    """One epoch of Σ nᵢ rows of which a share pᵢ comes from data set i, in a seeded random order.

    `interleave_datasets` cannot give exactly Σ nᵢ rows (its stopping strategies end when one or every source is
    exhausted), so the rows are picked with numpy: each set contributes round(pᵢ · Σ nᵢ) rows, walking through seeded
    permutations of itself (a smaller set repeats only after all its rows were used). The result is a map-style
    `select` view, so Trainer can shuffle it, group it by length and skip what it saw when resuming.
    """
    if len(datasets) != len(probabilities):
        raise ValueError(f"{len(datasets)} data sets but {len(probabilities)} probabilities")
    sizes = [len(dataset) for dataset in datasets]
    if 0 in sizes:
        raise ValueError(f"cannot sample from an empty data set (sizes {sizes})")
    total = sum(sizes)
    counts = largest_remainder([p / sum(probabilities) * total for p in probabilities])
    rng = np.random.default_rng(seed)
    picked, offset = [], 0
    for size, count in zip(sizes, counts):
        cycles = [rng.permutation(size) for _ in range(math.ceil(count / size))]
        picked.append(np.concatenate(cycles or [np.empty(0, dtype=np.int64)])[:count] + offset)
        offset += size
    order = rng.permutation(np.concatenate(picked))
    return concatenate_datasets(datasets).select(order)


def largest_remainder(quotas: list[float]) -> list[int]:
    """Integers that sum to round(Σ quotas), each within 1 of its quota."""
    counts = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: counts[i] - quotas[i])
    for i in by_remainder[: round(sum(quotas)) - sum(counts)]:
        counts[i] += 1
    return counts
