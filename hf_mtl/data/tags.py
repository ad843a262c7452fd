"""Word-tag schemes the readers and token tasks check and convert: IOB2 (BIO), BIOES, IOB1 -> IOB2."""

import re

OUTSIDE_TAG = "O"

BIO_TAG = re.compile(r"^(O|[BI]-\S+)$")

BIOES_TAG = re.compile(r"^(O|[BIES]-\S+)$")

def bad_tag_message(tag) -> str:
    return f"tag {tag!r} is not O, B-<type> or I-<type>"

def is_bio_tag(tag) -> bool:
    return isinstance(tag, str) and BIO_TAG.match(tag) is not None

def tag_problem(tag, tag_format: str = "BIO") -> str | None:
    """What is wrong with one tag under a task's `tag_format`, with the format that fits it where one does; or None."""
    if not isinstance(tag, str) or not tag or any(char.isspace() for char in tag):
        return f"{short_repr(tag)} is not a tag (a non-empty string without spaces)"
    if tag_format == "plain" or (BIO_TAG if tag_format == "BIO" else BIOES_TAG).match(tag):
        return None
    shape = "O, B-<type> or I-<type>" if tag_format == "BIO" else "O, B-<type>, I-<type>, E-<type> or S-<type>"
    message = f"tag {tag!r} is not {shape} (tag_format {tag_format!r})"
    if BIOES_TAG.match(tag):
        return message + '; for BIOES tags (E-, S-) set the task\'s "tag_format": "BIOES"'
    return message + '; for tags without B-/I- prefixes (POS tags) set the task\'s "tag_format": "plain"'

def iob1_to_iob2(tags: list) -> list:
    """IOB1 starts an entity with I- unless it directly follows one of the same type; IOB2 always starts with B-."""
    converted, previous = [], OUTSIDE_TAG
    for tag in tags:
        if tag.startswith("I-") and (previous == OUTSIDE_TAG or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted

def short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
