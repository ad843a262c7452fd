"""The data layer: declared data sets -> checked, labelled, tokenised and mixed rows -> padded batches."""

from .collator import MultiTaskCollator
from .prepare import PreparedData, prepare_datasets
from .readers import load_raw_dataset
from .sampling import MixtureSampler, TrainMixture, sampling_probabilities

__all__ = [
    "MixtureSampler",
    "MultiTaskCollator",
    "PreparedData",
    "TrainMixture",
    "load_raw_dataset",
    "prepare_datasets",
    "sampling_probabilities",
]
