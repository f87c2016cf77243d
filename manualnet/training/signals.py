"""SIGINT and SIGTERM during training: the first asks the loop to stop after the current step, checkpointed;
a second stops at once."""

import signal

from manualnet.errors import StoppedAtOnce


class StopRequests:
    """While installed (a context manager), SIGINT and SIGTERM set ``arrived``, which the loop reads after
    each step; a second one raises StoppedAtOnce."""

    def __init__(self):
        self.arrived = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.arrived is not None:  # asked twice: stop now, without the checkpoint
            raise StoppedAtOnce(signum)
        self.arrived = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False
