"""How a run writes its files: whole or not at all, and a failed write as one line that names the file.

``atomic_write`` writes to a temporary file in the same directory, fsyncs it and renames it over the old
one, so a kill or a full disk at any moment leaves the previous version. Every file a run replaces
(checkpoints, config.yaml, summary.json, a trimmed metrics.jsonl) goes through it.
"""

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from manualnet.errors import StorageError

_UMASK = os.umask(0o022)  # the only way to read the umask is to set it: read once, at import, set back at once
os.umask(_UMASK)


def atomic_write(path, write):
    """Call ``write(f)`` on a new binary file that then replaces ``path`` (fsynced, renamed, the directory
    fsynced); an OSError on the way is a StorageError naming ``path``, and ``path`` keeps its old content."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise storage_error(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it; mkstemp's 0600 hid config.yaml from others
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)  # a half-written file would only take space a full disk lacks
        if isinstance(e, OSError):
            raise storage_error(e, path) from None
        raise


def write_text(path, text):
    """``text`` (UTF-8) as the new content of ``path``, atomically (see ``atomic_write``)."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def fsync_directory(directory):
    """Make a rename in ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def storage_error(error, path=None):
    """A StorageError saying which file could not be written, and why, from the OSError that said so."""
    path = Path(error.filename if path is None and error.filename else path or "the run directory")
    missing = next((p for p in (path.parent.parent, path.parent) if not p.exists()), None)  # the outermost
    if error.errno == errno.ENOENT and missing is not None:
        return StorageError(f"cannot write {path}: {missing} no longer exists (deleted or moved during the run)")
    if error.errno == errno.EFBIG:
        return StorageError(f"cannot write {path}: the file-size limit was reached (ulimit -f)")
    return StorageError(f"cannot write {path}: {error.strerror or error}")


@contextlib.contextmanager
def naming(path):
    """Inside the block, an OSError that names no file names ``path`` (a write to an open file's handle)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise
