"""Batches of multi-task rows: dynamic padding of the inputs, and every task's labels collated by its kind."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase
from transformers.data.data_collator import pad_without_fast_tokenizer_warning

from ..tasks import pad_row
from .preprocessing import MODEL_INPUTS, TOWER_INPUTS

# The column of a task's teacher logits in a distilled run's train set (`hf_mtl.distillation`), one row's worth each:
# `[labels]` (a sentence), `[tokens, labels]` (a token task) or `[towers, hidden]` (embeddings).
TEACHER_LOGITS_SUFFIX = "_teacher_logits"


@dataclass
class MultiTaskCollator:
    """
    Pads `input_ids`, `attention_mask`, `token_type_ids` (and `word_start_mask`, with 0) to the longest row of the batch (or a multiple of
    `pad_to_multiple_of`), collates each task's `<task>_labels` as its kind says (token labels padded with -100 on
    the tokenizer's padding side, class ids stacked, multi-hot rows and regression targets as floats), pads the
    bi-encoder towers' inputs (`pair_input_ids`, `negative_input_ids`, ...) on their own, stacks a distilled run's
    `<task>_teacher_logits` (a token task's padded with 0 like its labels), and drops every other column (`length`,
    `word_ids`, `words`, `<task>_gold`).
    """

    tokenizer: PreTrainedTokenizerBase
    tasks: list  # the run's `hf_mtl.tasks.Task`s
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        inputs = [{key: feature[key] for key in MODEL_INPUTS if key in feature} for feature in features]
        batch = pad_without_fast_tokenizer_warning(
            self.tokenizer, inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )
        for tower, names in TOWER_INPUTS.items():
            if names[0] in features[0]:
                batch.update(self.pad_tower(features, tower, names))
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
        for task in self.tasks:
            key = f"{task.name}{TEACHER_LOGITS_SUFFIX}"
            if key in features[0]:
                rows = [torch.as_tensor(feature[key], dtype=torch.float32) for feature in features]
                batch[key] = pad_token_rows(rows, sequence_length, self.tokenizer.padding_side) \
                    if task.labels_per_token else torch.stack(rows)
        return dict(batch)

    def pad_tower(self, features: list, tower: str, names: tuple) -> dict:
        """A bi-encoder tower's inputs padded on their own; a row without one (another data set's) gets the
        tokenizer's empty input, so every batch runs the tower (DDP and FSDP need the same graph on every rank)."""
        empty = self.tokenizer("")
        rows = []
        for feature in features:
            values = {name.split("_", 1)[1]: feature[name] for name in names if name in feature}
            rows.append(values if len(values["input_ids"]) else {key: empty[key] for key in values})
        padded = pad_without_fast_tokenizer_warning(
            self.tokenizer, rows, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )
        return {f"{tower}_{key}": value for key, value in padded.items()}


def pad_token_rows(rows: list, length: int, padding_side: str) -> torch.Tensor:
    """`[tokens_i, width]` rows as one `[rows, length, width]` tensor, padded with 0 on the tokenizer's side."""
    padded = rows[0].new_zeros((len(rows), length, rows[0].shape[-1]))
    for index, row in enumerate(rows):
        if padding_side == "left":
            padded[index, length - len(row):] = row
        else:
            padded[index, : len(row)] = row
    return padded
