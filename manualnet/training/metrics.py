"""Running sums of the training metrics, over the logging interval and over the epoch."""

import dataclasses
import time

import torch

from manualnet.training.evaluate import count_right

MAX_UNCOUNTED = 64  # batches whose right-prediction flags may wait to be counted: bounds the memory they hold


@dataclasses.dataclass
class Sums:
    """What the metrics of a stretch of steps are computed from. ``loss`` adds each step's mean batch loss;
    ``correct`` / ``counted`` are the right predictions and the samples of the batches whose accuracy was
    measured (every batch of a classification task; none of another)."""

    loss: float = 0.0
    batches: int = 0
    samples: int = 0
    correct: float = 0  # a language model's sample counts the fraction of its positions that are right
    counted: int = 0

    def add(self, loss, correct, samples):
        self.loss += loss
        self.batches += 1
        self.samples += samples
        if correct is not None:
            self.correct += correct
            self.counted += samples

    def metrics(self, suffix=""):
        """``train/loss`` (and ``train/accuracy`` when a batch was counted), each name with ``suffix``."""
        values = {"train/loss": self.loss / max(self.batches, 1)}
        if self.counted:
            values["train/accuracy"] = self.correct / self.counted
        return {f"{k}{suffix}": v for k, v in values.items()}


class RunningMetrics:
    """The logging interval's and the epoch's sums (the interval runs on across epochs), and the samples of
    the whole run."""

    def __init__(self):
        self.epoch, self.interval, self.samples_total = Sums(), Sums(), 0
        self._interval_start, self._interval_before = time.perf_counter(), 0.0
        self._uncounted = []  # right-prediction flags of the batches since the sums were last read

    def start_clock(self):
        """Time the current interval from now on (plus what a resumed run had spent in it)."""
        self._interval_start = time.perf_counter() - self._interval_before

    def add(self, loss, correct, samples):
        """One global batch (summed over ranks, so every rank holds the same sums): its mean ``loss``, its
        ``samples`` and ``correct``: how many of its predictions are right (a number), their flags
        (``right_predictions``; a classifier's are counted with the other batches' when the sums are next
        read), or None for a batch whose accuracy was not measured."""
        self.samples_total += samples
        if isinstance(correct, torch.Tensor) and correct.dim() > 1:  # a sequence's fractions of positions:
            correct = count_right(correct)  # added batch by batch, the rounding a resumed run's sums repeat
        if isinstance(correct, torch.Tensor) and correct.dim() == 1:
            self._uncounted.append(correct)  # one count for many batches: a step's few small ops cost more
            correct = 0.0  # (whole numbers: summed in any grouping, the same sums)
        elif correct is not None:
            correct = float(correct)  # one host sync, not one per sum
        self.epoch.add(loss, correct, samples)
        self.interval.add(loss, correct, samples)
        if len(self._uncounted) >= MAX_UNCOUNTED:
            self._count()

    def _count(self):
        """Add the waiting flags' count to both sums (each read of the sums counts them first)."""
        if self._uncounted:
            correct, self._uncounted = float(count_right(torch.cat(self._uncounted))), []
            self.epoch.correct += correct
            self.interval.correct += correct

    def interval_metrics(self, lr, norm):
        """The logging interval's mean loss and accuracy (``train/loss_step``, ``train/accuracy_step``: the
        epoch's are ``train/loss`` and ``train/accuracy``), learning rate, samples/s and gradient norm."""
        now = time.perf_counter()
        self._count()
        metrics = {**self.interval.metrics("_step"), "lr": lr,
                   "samples_per_sec": self.interval.samples / max(now - self._interval_start, 1e-9),
                   "grad_norm": norm}
        self.interval, self._interval_start = Sums(), now
        return metrics

    def end_epoch(self):
        """The epoch's metrics; the next epoch's sums start from zero."""
        self._count()
        metrics, self.epoch = self.epoch.metrics(), Sums()
        return metrics

    def state_dict(self):
        self._count()
        return {"epoch": dataclasses.asdict(self.epoch), "interval": dataclasses.asdict(self.interval),
                "samples_total": self.samples_total, "interval_s": time.perf_counter() - self._interval_start}

    def load_state_dict(self, state):
        self.epoch, self.interval = (_sums(state.get(key, {})) for key in ("epoch", "interval"))
        self.samples_total = state["samples_total"]
        self._interval_before = state.get("interval_s", 0.0)
        self.start_clock()


def _sums(saved):
    """A checkpoint's Sums: a dict of its fields (a list, in the order of the fields, from an older version)."""
    return Sums(**saved) if isinstance(saved, dict) else Sums(*saved)
