"""What the terminal shows: tqdm bars and one line per finished epoch on a TTY, the lines alone otherwise, a
table at the end.

Every line fits 80 columns: a step bar is ``epoch 3/30 12/25 |####    | ETA 00:01, loss 0.1187 acc 0.9688
9.2k samples/s`` (the bar itself shrinks to what is left), an epoch's line ``epoch 3/30  loss 0.1187  acc
0.9688  val_loss 0.1268  val_acc 0.9667``.
"""

import os
import sys

from tqdm import tqdm

STEP_BAR = "{desc} {n_fmt}/{total_fmt} |{bar}| ETA {remaining}{postfix}"


class Progress:
    """Epochs are numbered from 1 here, as in metrics.jsonl and summary.json."""

    def __init__(self, epochs, steps_per_epoch, start_epoch=0, quiet=False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = not quiet and self.stream.isatty()
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.epoch_bar = self.step_bar = None
        # A terminal that reports no size (a pseudo-terminal nobody sized) would hide every bar: tqdm draws
        # none past the last row, and bars 0 columns wide.
        self.width = {"dynamic_ncols": True} if _columns(self.stream) else {"ncols": 80, "nrows": 24}
        if self.tty:
            self.epoch_bar = tqdm(total=epochs, initial=start_epoch, desc="epochs", unit="epoch",
                                  file=self.stream, **self.width)

    def start_epoch(self, epoch, start_batch=0):
        if self.tty:
            self.step_bar = tqdm(total=self.steps_per_epoch, initial=start_batch, desc=f"epoch {epoch}/{self.epochs}",
                                 bar_format=STEP_BAR, leave=False, file=self.stream, **self.width)

    def step(self, metrics=None):
        """One step done; ``metrics``: a logging step's (``train/loss_step``, ...), shown on the bar."""
        if self.step_bar is not None:
            self.step_bar.update(1)
            if metrics:
                self.step_bar.set_postfix_str(_step_text(metrics), refresh=False)

    def end_epoch(self, epoch, metrics):
        """Epoch ``epoch`` (from 1) ended with ``metrics``: one line that stays on screen, above the bars."""
        if self.step_bar is not None:
            self.step_bar.close()
            self.step_bar = None
        if self.quiet:
            return
        line = epoch_line(epoch, self.epochs, metrics)
        if self.tty:
            tqdm.write(line, file=self.stream)
            self.epoch_bar.update(1)
        else:
            print(line, file=self.stream, flush=True)

    def close(self):
        for bar in (self.step_bar, self.epoch_bar):
            if bar is not None:
                bar.close()

    def message(self, text):
        if not self.quiet:
            (tqdm.write(text, file=self.stream) if self.tty else print(text, file=self.stream, flush=True))


def epoch_line(epoch, epochs, metrics):
    """``epoch 3/30  loss 0.1187  acc 0.9688  val_loss 0.1268  val_acc 0.9667``: the epoch's metrics, as
    Keras names them."""
    parts = "  ".join(f"{_short(k)} {_fmt(v)}" for k, v in metrics.items())
    return f"epoch {epoch}/{epochs}  {parts}"


def _step_text(metrics):
    shown = [f"{label} {_fmt(metrics[key])}" for label, key in (("loss", "train/loss_step"),
                                                                ("acc", "train/accuracy_step")) if key in metrics]
    if "samples_per_sec" in metrics:
        shown.append(f"{_rate(metrics['samples_per_sec'])} samples/s")
    return " ".join(shown)


def _short(tag):
    """A metric's tag as the terminal shows it: train/loss -> loss, val/accuracy -> val_acc."""
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


def _rate(value):
    """9.2k, 312, 1.3M: a rate in at most four characters and a suffix."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)
