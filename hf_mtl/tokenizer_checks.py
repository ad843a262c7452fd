"""Whether a tokenizer can serve an encoder, and how many tokens one forward pass reads. Hub-safe: the pipeline's
copy on the Hub imports it too."""

from .configuration_mtl import encoder_max_positions


def check_tokenizer(tokenizer, encoder_config=None) -> None:
    """
    Raise a `ValueError` when `tokenizer` cannot be the encoder's: not a fast tokenizer (character offsets give the
    entity spans and word alignment), more tokens than the encoder has embeddings, or fewer than half of them, which is
    what transformers builds from a folder without `tokenizer.json` (5 special tokens: every word becomes `[UNK]`).
    Without `encoder_config` (the data preparation has none) only the first is checked.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast (Rust `tokenizers`) tokenizer; hf_mtl needs its character "
            "offsets and word_ids() to align words with sub-tokens: load it with AutoTokenizer from a folder with a "
            "tokenizer.json"
        )
    vocab_size, size = getattr(encoder_config, "vocab_size", None), len(tokenizer)
    if vocab_size and not vocab_size // 2 <= size <= vocab_size:
        cause = "tokenizer.json is missing or" if size < vocab_size else "it"
        raise ValueError(
            f"the tokenizer has {size:,} tokens but the encoder's embeddings have {vocab_size:,}: {cause} belongs to "
            "another model (save the training tokenizer next to the weights)"
        )


def max_input_length(config, tokenizer) -> int:
    """Most tokens one forward pass reads: the tokenizer's limit, capped by the encoder's position embeddings."""
    positions = encoder_max_positions(config.encoder)
    return min(tokenizer.model_max_length, positions) if positions else tokenizer.model_max_length
