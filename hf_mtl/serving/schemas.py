"""Request bodies (pydantic, for validation and `/docs`) and TEI's `inputs` grammar."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import EMPTY, TOKENIZER, VALIDATION, ServeError


class PairInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    text_pair: str | None = None


class EmbedRequest(BaseModel):
    inputs: str | list[str] = Field(examples=["What is Deep Learning?"])
    normalize: bool = True
    truncate: bool | None = Field(None, description="truncate inputs longer than the model's maximum (default true)")


class PredictRequest(BaseModel):
    inputs: str | list[str | list[str]] = Field(
        examples=["Book a table for two in Paris"],
        description='TEI\'s grammar: "text"; ["a", "b"] is ONE pair; [["a"], ["a", "b"]] is a batch',
    )
    raw_scores: bool = False
    truncate: bool | None = None
    # What huggingface_hub.InferenceClient.text_classification sends along.
    parameters: dict[str, Any] | None = None


class TagRequest(BaseModel):
    inputs: str | list[str] = Field(examples=["Book a table for two in Paris"])


class PredictAllRequest(BaseModel):
    inputs: str | PairInput | list[str | PairInput] = Field(examples=["Book a table for two in Paris"])
    return_tags: bool = Field(False, description="also return the words and each token task's tag per word")


class SimilarityInput(BaseModel):
    source_sentence: str
    sentences: list[str]


class SimilarityRequest(BaseModel):
    inputs: SimilarityInput


class ErrorBody(BaseModel):
    error: str
    error_type: str


def check_texts(texts: list, max_client_batch_size: int) -> None:
    """TEI's checks on a batch: not empty, not too many, no empty text; and every text encodable as UTF-8."""
    if not texts:
        raise ServeError(400, EMPTY, "Input validation error: `inputs` cannot be empty")
    if len(texts) > max_client_batch_size:
        raise ServeError(
            413, VALIDATION,
            f"Input validation error: batch size {len(texts)} > maximum allowed batch size {max_client_batch_size}",
        )
    for index, text in enumerate(texts):
        for part in (text.values() if isinstance(text, dict) else [text]):
            if part is None:
                continue
            if part == "":
                raise ServeError(400, EMPTY, f"Input validation error: input {index} is empty")
            try:
                part.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ServeError(
                    422, TOKENIZER, f"input {index} holds a lone surrogate at character {error.start + 1}"
                ) from None


def sequences(inputs) -> tuple:
    """
    `(items, single)` for TEI's predict grammar: `"a"` is one text, `["a", "b"]` one pair, `["a"]` or a list of three
    or more strings a batch of texts, a list holding lists a batch of sequences (`["a"]` a text, `["a", "b"]` a pair).
    An item is a string or a `{"text", "text_pair"}` dict, as the pipeline takes them.
    """
    if isinstance(inputs, str):
        return [inputs], True
    if len(inputs) == 2 and all(isinstance(item, str) for item in inputs):
        return [{"text": inputs[0], "text_pair": inputs[1]}], True
    items = []
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            items.append(item)
        elif len(item) == 1:
            items.append(item[0])
        elif len(item) == 2:
            items.append({"text": item[0], "text_pair": item[1]})
        else:
            raise ServeError(
                422, VALIDATION, f"inputs.{index}: a sequence is one text or a pair of two, got {len(item)} strings"
            )
    return items, False


def pipeline_inputs(inputs) -> tuple:
    """`(items, single)` of `/predict_all`: a string, a `{"text", "text_pair"}` object, or a list of them."""
    if isinstance(inputs, (str, PairInput)):
        inputs, single = [inputs], True
    else:
        single = False
    items = [item if isinstance(item, str) else item.model_dump(exclude_none=True) for item in inputs]
    return items, single
