"""Batches of multi-task rows: dynamic padding of the inputs and of every task's token labels."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase
from transformers.data.data_collator import pad_without_fast_tokenizer_warning

from .preprocessing import IGNORE_INDEX, MODEL_INPUTS


@dataclass
class MultiTaskCollator:
    """
    Pads `input_ids`, `attention_mask` and `token_type_ids` to the longest row of the batch (or a multiple of
    `pad_to_multiple_of`), pads list-valued `<task>_labels` with -100 on the tokenizer's padding side, stacks
    int-valued `<task>_labels`, and drops every other column (`length`, `word_ids`, `words`, `<task>_gold`).
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        inputs = [{key: feature[key] for key in MODEL_INPUTS if key in feature} for feature in features]
        batch = pad_without_fast_tokenizer_warning(
            self.tokenizer, inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )
        sequence_length = batch["input_ids"].shape[1]
        for key in features[0]:
            if not key.endswith("_labels"):
                continue
            # Rows come as Python values, or as tensors when the data set was given a torch format.
            values = [feature[key].tolist() if torch.is_tensor(feature[key]) else feature[key] for feature in features]
            if isinstance(values[0], (list, tuple)):
                values = [self.pad_labels(list(labels), sequence_length) for labels in values]
            batch[key] = torch.tensor(values, dtype=torch.long)
        return dict(batch)

    def pad_labels(self, labels: list[int], length: int) -> list[int]:
        padding = [IGNORE_INDEX] * (length - len(labels))
        return padding + labels if self.tokenizer.padding_side == "left" else labels + padding
