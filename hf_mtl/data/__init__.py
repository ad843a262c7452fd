"""The data layer: declared data sets -> checked, labelled, tokenised and mixed rows -> padded batches.

Names are imported on first use: the task kinds (`hf_mtl.tasks`) read `hf_mtl.data.tags` without loading the readers
and preprocessing, which use the task kinds in turn.
"""

import importlib

_HOMES = {
    "MixtureSampler": "sampling",
    "MultiTaskCollator": "collator",
    "PreparedData": "prepare",
    "TrainMixture": "sampling",
    "load_raw_dataset": "readers",
    "prepare_datasets": "prepare",
    "sampling_probabilities": "sampling",
    "TaskSampling": "sampling",
}


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)


__all__ = list(_HOMES)
