"""Errors meant for people: each says what was given, what was expected and where.

Every error a user can cause by what they typed or passed in is a ``ManualnetError``; the CLI prints its
message on one line and exits with its ``exit_code``: 2, or 3 for a file the run could not write. Below
them, why a training run stopped and what verify found. Anything else is a bug in manualnet.
"""

import signal


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


# -- why a training run stopped (the CLI's exit code: 1, or 128 + the signal) ---------------------------------

class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the run was checkpointed and can be resumed (exit code 128 + signal)."""

    def __init__(self, signum, run_dir):
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; checkpoint saved. "
                         f"Resume with: manualnet train --resume {run_dir}")


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT or SIGTERM: the run stops without writing a checkpoint (exit code 128 + signal)."""

    def __init__(self, signum):
        self.exit_code = 128 + signum
        super().__init__(f"stopped at once by a second {signal.Signals(signum).name}; the previous checkpoint is kept")


class Diverged(Exception):
    """Training produced a non-finite loss or gradient (exit code 1)."""


class AuditFailed(Exception):
    """A ``verify.every`` audit found a hand-written gradient that disagrees with autograd (exit code 1)."""


class RankFailed(Exception):
    """A collective failed: another rank died, hung past the timeout, or could not be reached (exit code 1)."""


# -- what verify finds ------------------------------------------------------------------------------------

class NoReference(LayerError):
    """The module or loss gives verify nothing autograd can differentiate: it cannot be checked as it is."""


class NotByHand(RuntimeError):
    """A manual backward that called autograd."""


class Untestable(Exception):
    """A registered layer or loss the self-test cannot check on its own; the message says why."""


class Crashed(Exception):
    """A registered layer's forward raised something other than a LayerError on every input tried."""
