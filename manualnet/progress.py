"""What the terminal shows: tqdm bars on a TTY, one plain line per epoch otherwise, a table at the end."""

import os
import sys

from tqdm import tqdm


class Progress:
    def __init__(self, epochs, steps_per_epoch, start_epoch=0, quiet=False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = not quiet and self.stream.isatty()
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.epoch_bar = self.step_bar = None
        # A terminal that reports no size (a pseudo-terminal nobody sized) would hide every bar: tqdm draws
        # none past the last row, and bars 0 columns wide.
        self.width = {"dynamic_ncols": True} if _columns(self.stream) else {"ncols": 100, "nrows": 24}
        if self.tty:
            self.epoch_bar = tqdm(total=epochs, initial=start_epoch, desc="epochs", unit="epoch",
                                  file=self.stream, **self.width)

    def start_epoch(self, epoch, start_batch=0):
        if self.tty:
            self.step_bar = tqdm(total=self.steps_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}",
                                 unit="step", leave=False, file=self.stream, **self.width)

    def step(self, n=1, **postfix):
        if self.step_bar is not None:
            self.step_bar.update(n)
            if postfix:
                self.step_bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

    def end_epoch(self, epoch, metrics):
        if self.step_bar is not None:
            self.step_bar.close()
        if self.tty:
            self.epoch_bar.set_postfix({_short(k): _fmt(v) for k, v in metrics.items()}, refresh=False)
            self.epoch_bar.update(1)
        elif not self.quiet:
            parts = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
            print(f"epoch {epoch + 1}/{self.epochs}  {parts}", file=self.stream, flush=True)

    def close(self):
        for bar in (self.step_bar, self.epoch_bar):
            if bar is not None:
                bar.close()

    def message(self, text):
        if not self.quiet:
            (tqdm.write(text, file=self.stream) if self.tty else print(text, file=self.stream, flush=True))


def _short(tag):
    """A metric's tag as a bar shows it: train/loss -> loss, val/accuracy -> val_acc."""
    return tag.removeprefix("train/").replace("accuracy", "acc").replace("/", "_")


def _columns(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a real file, or not a terminal
        return 0


def summary_table(summary):
    """The final metrics as a small two-column table."""
    rows = [(k, _fmt(v)) for k, v in summary.items() if not isinstance(v, dict | list)]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)
