"""Errors a user can cause: one type per area, each message naming the file, line, example or config key; and
`print_error`, the one-line form every command prints them in."""

import os
import sys


class HfMtlError(Exception):
    """Base class of every error hf_mtl raises for bad input. CLIs print it as one `error: ...` line."""


class ConfigError(HfMtlError, ValueError):
    """A run config, task definition or command-line argument is wrong (names the key)."""


class DataError(HfMtlError, ValueError):
    """A data file or data set is wrong (names the file and 1-based line, or the example index)."""


class ModelError(HfMtlError, ValueError):
    """A model folder or checkpoint cannot be used as asked (names the folder and what is missing)."""


class TrainingError(HfMtlError, RuntimeError):
    """Training cannot go on as configured (names the step and what went wrong, e.g. a loss that became NaN)."""


class OutputError(HfMtlError, OSError):
    """An output cannot be written where it was asked (names the path and why, e.g. a full disk)."""


def print_error(error: Exception) -> int:
    """
    Print `error` as one `error: ...` line on standard error and return the exit status a command ends with (the
    error's `exit_status`, else 2). With `HF_MTL_DEBUG=1` the error is raised again instead, traceback and all.
    """
    if os.environ.get("HF_MTL_DEBUG") == "1":
        raise error
    message = " ".join(str(error).split())  # one line, whatever the message held
    print(f"error: {message}", file=sys.stderr)
    return getattr(error, "exit_status", 2)
