"""Errors meant for people: each says what was given, what was expected and where.

Every error a user can cause by what they typed or passed in is a ``ManualnetError``; the CLI prints its
message on one line and exits with its ``exit_code``: 2, or 3 for a file the run could not write. Anything
else is a bug in manualnet.
"""


class ManualnetError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""

    exit_code = 2


class LayerError(ManualnetError, ValueError):
    """A layer or loss was misused: wrong dtype, wrong shape, backward before forward, ..."""


class ConfigError(ManualnetError, ValueError):
    """A config file, a ``--set`` override or a model spec is invalid."""


class DataError(ManualnetError, ValueError):
    """A data set cannot be loaded: missing files, bad columns, wrong format."""


class CheckpointError(ManualnetError, ValueError):
    """A checkpoint is missing, truncated, corrupted, unsafe or of another model."""


class RunDirError(ManualnetError, ValueError):
    """A run directory cannot be used: not empty, or another process is running in it."""


class StorageError(ManualnetError):
    """A run's file could not be written: disk full, file-size limit, read-only or deleted directory."""

    exit_code = 3  # not 2: the input was fine; not 1: the training was
