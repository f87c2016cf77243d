"""A TensorBoard event file, written with tensorboard's own record writer on the caller's thread.

Not torch's SummaryWriter: its thread opens, appends to and closes the file event by event, holding the GIL
against the training loop. Here the records are framed in memory and reach the file at ``flush``, in one
write, so TensorBoard, which reads the file as it grows, only ever finds whole records there.
"""

import io
import itertools
import os
import socket
import time

_uid = itertools.count()  # two files opened in the same second by one process still get different names


class EventFile:
    """``events.out.tfevents.*`` in ``log_dir``, named as TensorBoard names them. ``purge_step``: a resumed
    run's first step; TensorBoard then drops the events the previous files hold from that step on (they
    are logged again), as SummaryWriter(purge_step=...) does."""

    def __init__(self, log_dir, purge_step=None):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.record_writer import RecordWriter

        _fast_event_checksums()
        self._event = Event
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_uid)}"
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "ab")  # noqa: SIM115 - open as long as the run
        self._framed = io.BytesIO()  # the records added since the last flush
        self._records = RecordWriter(self._framed)
        self.add(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            self.add(Event(step=purge_step, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START)))
        self.flush()

    def add(self, event):
        self._records.write(event.SerializeToString())

    def event(self, step=0, walltime=None):
        """A new event at ``step``, for its ``summary`` to be filled in place (a Summary built apart would be
        copied into it) and then ``add``-ed."""
        return self._event(step=step, wall_time=time.time() if walltime is None else walltime)

    def add_summary(self, summary, step=0, walltime=None):
        """One event holding ``summary`` (a tensorboard Summary protobuf) at ``step``."""
        event = self.event(step, walltime)
        event.summary.CopyFrom(summary)
        self.add(event)

    def flush(self):
        """Everything added so far, handed to the OS (on disk even if this process is killed)."""
        records = self._framed.getvalue()
        if records:
            try:
                self._file.write(records)
                self._file.flush()
            except OSError as e:  # a write to an open file names none: this is the file (a full disk, ulimit -f)
                e.filename = e.filename or self.path
                raise
            self._framed.seek(0)
            self._framed.truncate()

    def close(self):
        try:
            self.flush()
        finally:
            self._file.close()


def _fast_event_checksums():
    """Give tensorboard's record writer a CRC-32C in C (google-crc32c): without TensorFlow installed,
    tensorboard checksums every record in pure Python, which costs more than the rest of the write."""
    try:
        import google_crc32c
        from tensorboard.summary.writer import record_writer
    except ImportError:  # an older tensorboard laid out otherwise, or no google-crc32c: stay correct, slower
        return
    if getattr(record_writer.masked_crc32c, "manualnet", False) or google_crc32c.implementation != "c":
        return

    def masked_crc32c(data):
        crc = google_crc32c.value(bytes(data))
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    masked_crc32c.manualnet = True
    record_writer.masked_crc32c = masked_crc32c
