"""Batches of multi-task rows: dynamic padding of the inputs, and every task's labels collated by its kind."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase
from transformers.data.data_collator import pad_without_fast_tokenizer_warning

from ..tasks import pad_row
from .preprocessing import MODEL_INPUTS


@dataclass
class MultiTaskCollator:
    """
    Pads `input_ids`, `attention_mask`, `token_type_ids` (and `word_start_mask`, with 0) to the longest row of the batch (or a multiple of
    `pad_to_multiple_of`), collates each task's `<task>_labels` as its kind says (token labels padded with -100 on
    the tokenizer's padding side, class ids stacked, multi-hot rows and regression targets as floats), and drops
    every other column (`length`, `word_ids`, `words`, `<task>_gold`).
    """

    tokenizer: PreTrainedTokenizerBase
    tasks: list  # the run's `hf_mtl.tasks.Task`s
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        inputs = [{key: feature[key] for key in MODEL_INPUTS if key in feature} for feature in features]
        batch = pad_without_fast_tokenizer_warning(
            self.tokenizer, inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )
        sequence_length = batch["input_ids"].shape[1]
        if "word_start_mask" in features[0]:
            batch["word_start_mask"] = torch.tensor(
                [pad_row(list(feature["word_start_mask"]), sequence_length, 0, self.tokenizer.padding_side) for feature in features]
            )
        for task in self.tasks:
            key = f"{task.name}_labels"
            if key not in features[0]:
                continue
            # Rows come as Python values, or as tensors when the data set was given a torch format.
            values = [feature[key].tolist() if torch.is_tensor(feature[key]) else feature[key] for feature in features]
            batch[key] = task.collate_labels(values, sequence_length, self.tokenizer.padding_side)
        return dict(batch)
