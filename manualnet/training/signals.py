"""SIGINT and SIGTERM during training: the first asks the loop to stop after the current step, checkpointed;
a second stops at once."""

import signal


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
