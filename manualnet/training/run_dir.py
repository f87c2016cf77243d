"""Run directories: ``runs/<name>/<timestamp>/``, never shared by two runs.

A process that trains in a directory holds an exclusive ``flock`` on it (``RunLock``) until it ends; the OS
drops the lock when the process dies, SIGKILL included, so a lock is never left stale. A second run in the
same directory, started together with the first or resumed alongside it, is refused.
"""

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path

from manualnet.config.load import dump_yaml
from manualnet.errors import RunDirError
from manualnet.files import write_text


class RunLock:
    """An exclusive lock on the run directory ``path``, held until ``release`` (or the process's end)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise RunDirError(f"cannot open the run directory {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._fd)
            if isinstance(e, BlockingIOError):
                raise RunDirError(f"{self.path} is in use: another manualnet process is training in it (it holds "
                                  "the directory's lock); wait for it to end, or use another directory") from None
            raise RunDirError(f"cannot lock the run directory {self.path}: {e.strerror or e}") from None

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def new_run_dir(name, root="runs", explicit=None):
    """A fresh directory for a run, locked: ``explicit`` if given (it must be empty), else a new timestamped
    one. Returns its RunLock."""
    if explicit is not None:
        path = Path(explicit)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--run-dir {path} is a file, not a directory; pick a new directory")
        _make(path, parents=True, exist_ok=True)
        lock = RunLock(path)  # before the emptiness check: of two runs started together only one passes it
        if any(path.iterdir()):
            lock.release()
            raise RunDirError(f"--run-dir {path} is not empty; runs never overwrite each other "
                              f"(use --resume {path} to continue it, or pick a new directory)")
        return lock
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / name
    _make(base, parents=True, exist_ok=True)
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            _make(path)
            return RunLock(path)
        except FileExistsError:
            continue
    raise RunDirError(f"cannot create a new run directory under {base}")


def _make(path, **kwargs):
    try:
        path.mkdir(**kwargs)
    except FileExistsError:
        if not kwargs.get("exist_ok"):  # a timestamp taken by another run: the caller tries the next one
            raise
        raise RunDirError(f"cannot create the run directory {path}: a file of that name is in the way") from None
    except OSError as e:
        raise RunDirError(f"cannot create the run directory {path}: {e.strerror or e}") from None


def write_config(run_dir, config):
    """The run's resolved config as ``config.yaml``, replaced atomically (a kill never leaves it empty)."""
    write_text(Path(run_dir) / "config.yaml", dump_yaml(config))


RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "vocab.json", "checkpoints")  # + the event files


def never_trained(path):
    """Whether the run directory ``path`` holds only what a run writes before the end of its first epoch
    (when its first checkpoint is written): no checkpoint, no summary, no epoch's row in metrics.jsonl, and
    nothing but a run's own files. Such a run has nothing to resume from and nothing trained to lose."""
    path = Path(path)
    if (path / "summary.json").exists() or any(path.glob("checkpoints/*.pt")):
        return False
    if not all(e.name in RUN_FILES or e.name.startswith("events.out.tfevents.") for e in path.iterdir()):
        return False
    metrics = path / "metrics.jsonl"
    return not metrics.is_file() or '"train/loss":' not in metrics.read_text(errors="replace")  # an epoch's row


def nothing_logged(path):
    """Whether the run directory ``path`` holds no checkpoint and no metrics row yet."""
    metrics = Path(path) / "metrics.jsonl"
    return (not metrics.is_file() or metrics.stat().st_size == 0) and never_trained(path)


def discard_if_unlogged(path, whole):
    """Remove what a new run wrote in ``path`` when bad input stopped it before it logged anything (a loss
    that does not fit the model's output, at its first step); ``whole``: the directory too (one it made)."""
    if nothing_logged(path):
        with contextlib.suppress(OSError):  # the error to report is the one that stopped the run
            clear(path)
            if whole:
                Path(path).rmdir()


def clear(path, keep=()):
    """Remove everything in the run directory ``path`` but the names in ``keep``."""
    for entry in Path(path).iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
