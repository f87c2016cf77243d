"""Where metrics go: ``metrics.jsonl`` always, TensorBoard when ``log.tensorboard`` is on.

Tags are the config's and summary.json's names (``train/loss``, ``val/accuracy``, ``lr``, ...).
"""

import json
import math

import torch


class MetricsLogger:
    """``run_dir=None`` (a data-parallel rank other than 0) logs nothing."""

    def __init__(self, run_dir, tensorboard=True, purge_step=None):
        self.jsonl = open(run_dir / "metrics.jsonl", "a") if run_dir else None  # noqa: SIM115 - as long as the run
        self.writer = None
        if tensorboard and run_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def scalars(self, values, step, epoch):
        """One metrics.jsonl line and one TensorBoard scalar per value."""
        if self.jsonl is None:
            return
        values = {k: _plain(v) for k, v in values.items()}
        record = {"step": step, "epoch": epoch, **{k: _json_number(v) for k, v in values.items()}}
        self.jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self.jsonl.flush()
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def histogram(self, tag, values, step, bins=30):
        """A histogram binned by torch.histc (TensorBoard's own numpy binning costs milliseconds a tensor);
        one host sync for its four statistics."""
        if not self.writer:
            return
        v = values.detach().reshape(-1)
        lo, hi, total, squares = torch.stack([v.min(), v.max(), v.sum(), v.dot(v)]).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return
        hi = hi if hi > lo else lo + 1e-12
        counts = torch.histc(v, bins=bins, min=lo, max=hi)
        limits = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)[1:]
        self.writer.add_histogram_raw(tag, min=lo, max=hi, num=v.numel(), sum=total, sum_squares=squares,
                                      bucket_limits=limits.tolist(), bucket_counts=counts.tolist(),
                                      global_step=step)

    def text(self, tag, text):
        if self.writer:
            self.writer.add_text(tag, f"```\n{text}\n```")

    def hparams(self, hparams, metrics):
        """Hyperparameters with the final metrics, in this run's own event file (the HPARAMS tab)."""
        if not self.writer:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
        for summary in hparams_summary(hparams, metrics):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(f"hparams/{tag}", value)

    def close(self):
        if self.jsonl:
            self.jsonl.close()
        if self.writer:
            self.writer.close()


def _json_number(value):
    """Strict JSON has no NaN or infinity: a non-finite metric is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    return value
