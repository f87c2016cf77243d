"""Where metrics go: ``metrics.jsonl`` always, TensorBoard when ``log.tensorboard`` is on.

Tags are the config's and summary.json's names (``train/loss``, ``val/accuracy``, ``lr``, ...); a logging
interval's mean loss and accuracy are ``train/loss_step`` and ``train/accuracy_step``.
"""

import json
import math
import time

import torch

from manualnet.files import atomic_write, naming
from manualnet.log.event_file import EventFile
from manualnet.log.telemetry import bucket_limits, histogram_data


class MetricsLogger:
    """``run_dir=None`` (a data-parallel rank other than 0) logs nothing.

    Logging a value only records it: the training loop pays for a few appends. Every ``handoff_s`` seconds at
    most, and at ``flush`` and ``close``, the records are formatted in one batch (cheaper than one at a time
    between steps), written and flushed to the OS on the training thread: the metrics.jsonl lines and the
    TensorBoard events. The trainer flushes before each checkpoint, so a killed run loses nothing from before
    its last checkpoint (what was logged after it is logged again on resume: ``purge_step``, the checkpoint's
    step, drops it from both files), and writes the rows alone (``write_rows``) at the end of each epoch that
    took ``handoff_s`` or longer, so a row waits at most about ``handoff_s`` plus an epoch of under
    ``handoff_s``. Events keep the time they were logged at.
    """

    def __init__(self, run_dir, tensorboard=True, purge_step=None, handoff_s=1.0):
        self._tested_at = set()  # the steps whose test row the file holds (a resumed run's end, logged once)
        if run_dir and purge_step is not None:
            self._tested_at = _drop_rows_after(run_dir / "metrics.jsonl", purge_step)
        self.jsonl_path = run_dir / "metrics.jsonl" if run_dir else None
        self.jsonl = open(self.jsonl_path, "a") if run_dir else None  # noqa: SIM115 - as long as the run
        self.handoff_s, self._rows, self._pending, self._handed_at = handoff_s, [], [], time.monotonic()
        purge_from = None if purge_step is None else purge_step + 1  # TensorBoard's: the first step it drops
        self.events = EventFile(run_dir, purge_from) if tensorboard and run_dir else None

    def scalars(self, values, step, epoch):
        """One metrics.jsonl line and one TensorBoard scalar per value."""
        if self.jsonl is None:
            return
        values = {k: _plain(v) for k, v in values.items()}
        self._rows.append((step, epoch, values))
        self.tensorboard_scalars(values, step)
        self._hand_off_when_due()

    def test_scalars(self, values, step, epoch):
        """The test metrics (``test/loss``, ...) at ``step``, as ``scalars`` does, unless the file already
        holds them: a process killed just after writing them, resumed, evaluates the same best.pt again."""
        if step not in self._tested_at:
            self.scalars(values, step, epoch)

    def tensorboard_scalars(self, values, step):
        """Every value of ``values`` (tag -> number) as a TensorBoard scalar at ``step``: one event holding
        them all (``add_scalar`` would write one event per value)."""
        if self.events and values:
            self._pending.append((_fill_scalars, values, step, time.time()))
            self._hand_off_when_due()

    def histograms(self, tensors, step, bins=30):
        """A TensorBoard histogram of each tensor in ``tensors`` (tag -> tensor) with all-finite values, in
        ``bins`` buckets over its range as torch.histc makes them (TensorBoard's own numpy binning costs
        milliseconds a tensor), written as one event; see ``telemetry.histogram_data``."""
        if not self.events or not tensors:
            return
        data = histogram_data(tensors, bins)
        if data:
            self._pending.append((_fill_histograms, data, step, time.time()))
            self._hand_off_when_due()

    def images(self, images, step):
        """Each (H, W, 3) tensor in [0, 1] of ``images`` (tag -> tensor) as a TensorBoard image, one event."""
        if self.events and images:
            self._pending.append((_fill_images, images, step, time.time()))
            self._hand_off_when_due()

    def _hand_off_when_due(self):
        if time.monotonic() - self._handed_at >= self.handoff_s:
            self.flush()

    def write_rows(self):
        """Write the metrics.jsonl lines logged since the last call, flushed to the OS."""
        rows, self._rows = self._rows, []  # taken first: a Ctrl-C inside the write cannot write them twice
        if self.jsonl is not None and rows:
            with naming(self.jsonl_path):  # a full disk's error names the file
                self.jsonl.write("".join(_json_line(*row) for row in rows))
                self.jsonl.flush()

    def flush(self):
        """Write the pending metrics.jsonl lines and TensorBoard events, flushed to the OS."""
        self.write_rows()
        pending, self._pending, self._handed_at = self._pending, [], time.monotonic()
        if self.events:
            for fill, payload, step, walltime in _one_event_per_step(pending):
                event = self.events.event(step, walltime)
                fill(event.summary, payload)
                self.events.add(event)
            with naming(self.events.path):
                self.events.flush()

    def text(self, tag, text, step=0):
        """``text`` as TensorBoard text (Markdown, shown as a code block) at ``step``, written now."""
        if self.events:
            from torch.utils.tensorboard.summary import text as text_summary

            self.events.add_summary(text_summary(tag, f"```\n{text}\n```"), step)
            self.events.flush()

    def hparams(self, config, results):
        """The HPARAMS tab's record of this run: every key of ``config`` (``Config.to_dict()``), flattened to
        its ``--set`` path (``optim.lr``, ``model.0.out_features``), and the numbers of ``results`` as its
        metrics. TensorBoard reads a metric's value from the run's scalar of that tag, so each must be one
        the run logs (``test/loss``, ``val/accuracy``, ...); no scalar is written here."""
        if not self.events:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = {k: v for k, v in results.items() if isinstance(v, int | float) and math.isfinite(v)}
        for summary in hparams_summary(flat_hparams(config), metrics):
            self.events.add_summary(summary)
        self.flush()

    def close(self):
        try:
            self.flush()
        finally:
            if self.jsonl:
                self.jsonl.close()
                self.jsonl = None
            if self.events:
                self.events.close()
                self.events = None


def flat_hparams(config, prefix=""):
    """``config``'s values by dotted path; a list of plain values, or None, as its YAML text (TensorBoard's
    hyperparameters are numbers, strings and booleans)."""
    flat = {}
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
            flat.update(flat_hparams(value, path + "."))
        elif isinstance(value, bool | int | float | str):
            flat[path] = value
        else:
            flat[path] = json.dumps(value)  # [] or [10, 20]; null
    return flat


def _drop_rows_after(path, step):
    """Resuming from a checkpoint at ``step``: drop the rows a killed process logged after it (they are
    logged again), as TensorBoard's purge_step drops its events; the file is replaced atomically. Returns
    the steps of the test rows kept."""
    if not path.is_file():
        return set()
    lines = path.read_bytes().splitlines(keepends=True)
    rows = [(line, _row(line)) for line in lines]
    kept = [(line, row) for line, row in rows if _row_step(row) <= step]
    if len(kept) < len(lines):
        atomic_write(path, lambda f: f.write(b"".join(line for line, _ in kept)))
    return {row["step"] for _, row in kept if any(key.startswith("test/") for key in row)}


def _row(line):
    """The row a metrics.jsonl line holds ({} for one a kill cut short or that is not JSON)."""
    try:
        row = json.loads(line)
    except ValueError:  # bytes that are not UTF-8 too
        return {}
    return row if isinstance(row, dict) else {}


def _row_step(row):
    try:
        return int(row["step"])
    # A line a kill cut short, bytes that are not UTF-8, a step of 1e999: dropped with the rows after it.
    except (ValueError, KeyError, TypeError, OverflowError):
        return math.inf


_JSON = json.JSONEncoder(allow_nan=False)  # made once: json.dumps with an option makes one a line


def _json_line(step, epoch, values):
    record = {"step": step, "epoch": epoch, **{k: _json_number(v) for k, v in values.items()}}
    return _JSON.encode(record) + "\n"


def _one_event_per_step(pending):
    """``pending`` with the scalars logged one after another at the same step (a logging step's metrics and
    update ratios, an epoch's metrics and its number) joined into one record: each event costs more to
    write than a value in it."""
    joined = []
    for record in pending:
        fill, payload, step, _ = record
        if joined and fill is _fill_scalars and joined[-1][0] is fill and joined[-1][2] == step \
                and payload.keys().isdisjoint(joined[-1][1]):
            joined[-1] = (fill, {**joined[-1][1], **payload}, step, joined[-1][3])
        else:
            joined.append(record)
    return joined


def _fill_scalars(summary, values):
    add = summary.value.add  # each value made in place: a Summary.Value made apart is copied in
    for tag, v in values.items():
        add(tag=tag, simple_value=float(v))


def _fill_histograms(summary, data):
    for tag, num, lo, hi, total, squares, counts in data:
        histo = summary.value.add(tag=tag).histo
        histo.min, histo.max, histo.num, histo.sum, histo.sum_squares = lo, hi, num, total, squares
        histo.bucket_limit.extend(bucket_limits(lo, hi, len(counts)))
        histo.bucket.extend(counts)


def _fill_images(summary, images):
    from torch.utils.tensorboard.summary import image

    for tag, hwc in images.items():
        summary.value.extend(image(tag, hwc.numpy(), dataformats="HWC").value)


def _json_number(value):
    """Strict JSON has no NaN or infinity: a non-finite metric is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    return value
