"""The data layer: declared data sets -> checked, labelled, tokenised and mixed rows -> padded batches."""

from .collator import MultiTaskCollator
from .prepare import PreparedData, prepare_datasets
from .readers import load_raw_dataset
from .sampling import mix_datasets, sampling_probabilities
from .specs import TaskSpec
from .tags import iob1_to_iob2

__all__ = [
    "MultiTaskCollator",
    "PreparedData",
    "TaskSpec",
    "iob1_to_iob2",
    "load_raw_dataset",
    "mix_datasets",
    "prepare_datasets",
    "sampling_probabilities",
]
