"""Errors a user can cause: one type per area, each message naming the file, line, example or config key."""


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
