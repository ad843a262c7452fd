"""The data layer: declared data sets -> checked, labelled, tokenised and mixed rows -> padded batches."""

from .collator import MultiTaskCollator
from .prepare import PreparedData, prepare_datasets
from .readers import load_raw_dataset
from .sampling import mix_datasets, sampling_probabilities

__all__ = [
    "MultiTaskCollator",
    "PreparedData",
    "load_raw_dataset",
    "mix_datasets",
    "prepare_datasets",
    "sampling_probabilities",
]
