"""Checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers and strings: ``model`` (the state dict), ``optim``,
``schedule``, ``epoch``, ``batch`` (batches of that epoch already done), ``step``, ``rng``, ``config`` and
the trainer's running ``progress``. It is written to a temporary file in the same directory, flushed and
fsynced, then renamed over the old one, so a kill at any moment leaves the previous complete checkpoint.
The zip's comment holds the SHA-256 of the rest of the file; ``load`` checks it and refuses a damaged file.
"""

import hashlib
import io
import os
import pickle
import queue
import re
import shutil
import threading
import zipfile
import zlib
from pathlib import Path

import torch

from manualnet.errors import CheckpointError
from manualnet.files import atomic_write, fsync_directory, storage_error

DIGEST_PREFIX = b"manualnet-sha256:"  # the zip comment of a checkpoint: this, then the hex SHA-256
_COMMENT_SIZE = len(DIGEST_PREFIX) + 64
_END_RECORD = 22  # the zip's end-of-central-directory record, with a comment length of 0 as torch writes it


def save(state, path):
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    _write_sealed(path, _serialise(state))


def _write_sealed(path, data):
    """Write the torch.save archive ``data`` with the SHA-256 of all it holds as the zip's comment: the
    archive's CRCs miss damage to its directory (a flipped attribute bit made torch load a tensor from
    uninitialised memory), the digest misses nothing."""
    data = memoryview(data)
    if bytes(data[-_END_RECORD:-_END_RECORD + 4]) != b"PK\x05\x06" or bytes(data[-2:]) != b"\0\0":
        raise CheckpointError(f"{path}: torch.save wrote an archive without the zip end record manualnet expects")
    body = data[:-2]  # all but the comment length, which the comment's own length replaces
    comment = DIGEST_PREFIX + hashlib.sha256(body).hexdigest().encode()
    atomic_write(path, lambda f: (f.write(body), f.write(len(comment).to_bytes(2, "little") + comment)))


def copy(source, path):
    """Copy a checkpoint file to ``path``, atomically like ``save``."""
    def write(f):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f)

    atomic_write(path, write)


def link(source, path):
    """Make ``path`` a second name of the checkpoint file ``source`` (a hard link, put in place by an atomic
    rename), or a copy where the file system has no hard links. Replacing ``source`` later leaves ``path``
    holding this checkpoint: a rename gives ``source`` a new file, it does not rewrite the old one."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.link"
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
    except OSError:
        copy(source, path)
        return
    try:
        os.replace(tmp, path)
        tmp.unlink(missing_ok=True)  # still there if path was already this file: rename then does nothing
        fsync_directory(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, path) from None


def _make_folder(folder):
    """Create the checkpoints folder; not its parents: a run directory deleted during the run stays gone,
    and the write fails saying so."""
    try:
        Path(folder).mkdir(exist_ok=True)
    except OSError as e:
        raise storage_error(e, Path(folder) / "last.pt") from None


def _serialise(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer()


def clean_stale_files(directory):
    """Remove the half-written ``.*.tmp`` and ``.*.link`` files a killed process left in ``directory`` (only
    whole checkpoints ever carry a checkpoint's name, so these are never needed)."""
    for pattern in (".*.pt.*.tmp", ".*.pt.*.link"):
        for stale in Path(directory).glob(pattern):
            stale.unlink(missing_ok=True)


def load(path):
    """The checkpoint at ``path`` on the CPU; a CheckpointError if it is missing, damaged or unsafe."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    _check_integrity(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))  # torch's text is a paragraph, with terminal colour codes
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: refused to load: it holds pickled objects other than tensors and plain "
                              f"data{what}, which could run code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({first})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a manualnet checkpoint (no 'model' entry)")
    return state


def _check_integrity(path):
    """Refuse a damaged checkpoint: one whose SHA-256 (the zip comment ``save`` writes) does not match, or,
    for a checkpoint written before manualnet sealed them, one whose records fail their CRC-32 (torch.load
    checks neither: a flipped byte in a tensor loads as a wrong weight)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - _COMMENT_SIZE - 2, 0))
            tail = f.read()  # the comment's length, then the comment
            if DIGEST_PREFIX in tail:  # not where it belongs: bytes were cut off the end, or added
                if not tail[2:].startswith(DIGEST_PREFIX):
                    raise CheckpointError(f"{path}: truncated or corrupted checkpoint (its digest is not at the end)")
                f.seek(0)
                _check_digest(path, f, size - len(tail), tail)
                return
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {e.strerror or e}") from None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint (not a whole torch.save archive: "
                              f"{first})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {e.strerror or e}") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupted checkpoint (the checksum of its record {bad!r} does not "
                              "match: the file was damaged after it was written)")


def _check_digest(path, f, covered, tail):
    """Compare the SHA-256 of the first ``covered`` bytes of the open file ``f`` with the one in ``tail``."""
    digest, remaining = hashlib.sha256(), covered
    while remaining > 0:
        chunk = f.read(min(remaining, 1 << 20))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    if tail[:2] != _COMMENT_SIZE.to_bytes(2, "little") or tail[2 + len(DIGEST_PREFIX):] != digest.hexdigest().encode():
        raise CheckpointError(f"{path}: corrupted checkpoint (its SHA-256 does not match the one written with it: "
                              "the file was damaged after it was written)")


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Writer:
    """Writes checkpoints on a background thread, so the training loop does not wait for the disk.

    ``submit`` serialises the state to bytes at once (that is the snapshot: later in-place updates cannot reach
    it) and queues the write; the thread only writes, fsyncs and renames, system calls that release the GIL
    (pickling there would hold it against the training loop). Writes happen in order, each atomic as in
    ``save``. ``flush`` waits for all of them and re-raises a failed write's error. After a failed write nothing
    more is written (so best.pt is never newer than last.pt) and every later ``submit`` or ``flush`` raises that
    error again.
    """

    def __init__(self):
        self._queue = queue.Queue()
        self._error = None
        self._thread = threading.Thread(target=self._work, name="manualnet-checkpoints", daemon=True)
        self._thread.start()

    def submit(self, state, paths):
        """Queue ``state`` to be saved at each of ``paths`` (serialised once, then hard-linked)."""
        self._raise_error()
        self._queue.put((_serialise(state), [Path(p) for p in paths]))

    def flush(self):
        self._queue.join()
        self._raise_error()

    def _work(self):
        while True:
            data, paths = self._queue.get()
            try:
                if self._error is None:
                    _make_folder(paths[0].parent)
                    _write_sealed(paths[0], data)
                    for path in paths[1:]:
                        link(paths[0], path)
            except BaseException as e:  # handed to the training thread at its next submit/flush
                self._error = e
            finally:
                data = None  # the serialised checkpoint is not kept until the next one arrives
                self._queue.task_done()

    def _raise_error(self):
        if self._error is not None:
            raise self._error
