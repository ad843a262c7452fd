"""Whole JSON files (run configs, a model folder's `config.json`, a checkpoint's run record, the record of partial
predictions, JSON data files), read with one error that says where: `file: why` when it cannot be read,
`file:line: not UTF-8 text ...` for a byte that is not UTF-8, `file:line:column: malformed JSON: ...` for bad syntax."""

import json
from pathlib import Path

from .errors import ConfigError


def read_json_file(path, what: str = "file", error: type[Exception] = ConfigError):
    """The value a JSON file holds; a missing, unreadable, non-UTF-8 or malformed file raises one `error` naming it
    (`what` says what the file is meant to be: "config file", "model config", ...). A UTF-8 byte order mark is fine."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}") from None
    except OSError as os_error:
        raise error(f"{path}: cannot be read ({os_error.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark (Windows editors) is fine
    except UnicodeDecodeError as decode_error:
        start = decode_error.start
        line = raw[:start].count(b"\n") + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        raise error(
            f"{path}:{line}: not UTF-8 text (byte {raw[start]:#04x} at column {column}); save the {what} as UTF-8"
        ) from None
    return parse_json_text(text, path, error)


def parse_json_text(text: str, path, error: type[Exception] = ConfigError):
    """`json.loads(text)`, a syntax error raised as one `error` naming `path:line:column`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as decode_error:
        raise error(malformed_json(path, decode_error)) from None


def malformed_json(path, decode_error: json.JSONDecodeError) -> str:
    """`path:line:column: malformed JSON: what the parser expected`."""
    return f"{path}:{decode_error.lineno}:{decode_error.colno}: malformed JSON: {decode_error.msg}"


__all__ = ["malformed_json", "parse_json_text", "read_json_file"]
