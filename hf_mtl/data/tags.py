"""BIO tags: the shape check every reader applies, IOB1 -> IOB2, and label lists built from a train split."""

import re
from collections import Counter

BIO_TAG = re.compile(r"^(O|[BI]-\S+)$")


def bad_tag_message(tag) -> str:
    return f"tag {tag!r} is not O, B-<type> or I-<type>"


def is_bio_tag(tag) -> bool:
    return isinstance(tag, str) and BIO_TAG.match(tag) is not None


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 starts an entity with I- unless it directly follows one of the same type; IOB2 always starts with B-."""
    converted = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted


def build_label_list(values, token_task: bool) -> list[str]:
    """Sorted distinct labels (`O` first for token tasks) of a train split's gold values."""
    if token_task:
        labels = {tag for tags in values for tag in tags}
        return ["O"] + sorted(labels - {"O"})
    return sorted({label for label in values if label != ""})


def count_unknown_labels(values, label2id: dict, token_task: bool) -> Counter:
    """Gold labels that are not in the label list, with how often they occur."""
    flat = (tag for tags in values for tag in tags) if token_task else (label for label in values if label != "")
    return Counter(label for label in flat if label not in label2id)
