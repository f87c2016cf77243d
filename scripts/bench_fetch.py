#!/usr/bin/env python3
"""Benchmark: where a training loop's ordinary step spends its time beyond the bare algorithm.

One process, one built config (``configs/mnist_size.yaml`` by default), and four ways to train one epoch
of its batches, run in turn for ``--rounds`` rounds: ``pre-gathered`` (the bare steps on copies of the
batches made beforehand, as in the last line of ``bench.py --trainer``), ``gathered`` (the bare steps on the
batches as the trainer's data loader gathers them: ``bench.py --trainer``'s bare loop), ``epoch copy`` (the
bare steps on views of one shuffled copy of the epoch, refilled each epoch) and ``loop`` (the trainer's own
``train_epoch``, logging nothing).
It prints each one's median time a step and the medians of the paired differences (round by round): what
the batch gather, the alternative epoch copy and the loop around ``train_step`` cost a step. Run ``python
scripts/bench_fetch.py [--config PATH] [--rounds 25]``.
"""

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from manualnet.config.load import load_config  # noqa: E402
from manualnet.config.setup import build  # noqa: E402
from manualnet.training.heap import keep_freed_memory  # noqa: E402
from manualnet.training.trainer import QUIET_STEP, Trainer  # noqa: E402


def epochs(trainer):
    """{name: a function training one epoch of ``trainer``'s batches, that way}."""
    model, loss, optimizer, schedule, batches = (trainer.model, trainer.loss, trainer.optimizer, trainer.schedule,
                                                 trainer.batches)
    copies = [tuple(t.clone() for t in b) for b in batches.epoch(1)]
    x, y = batches.tensors[:2]
    shuffled_x, shuffled_y = torch.empty_like(x), torch.empty_like(y)

    def bare(xb, tb):
        optimizer.zero_grad()
        loss(model(xb), tb)
        model.backward(loss.backward())
        optimizer.step()
        schedule.step()

    def epoch_copy():
        order = batches.order(1)
        torch.index_select(x, 0, order, out=shuffled_x)
        torch.index_select(y, 0, order, out=shuffled_y)
        for lo in range(0, len(x), batches.batch_size):
            bare(shuffled_x[lo:lo + batches.batch_size], shuffled_y[lo:lo + batches.batch_size])

    def loop():
        trainer.at.epoch, trainer.at.batch = 1, 0
        trainer.train_epoch()

    return {"pre-gathered": lambda: [bare(xb, tb) for xb, tb, *_ in copies],
            "gathered": lambda: [bare(xb, tb) for xb, tb, *_ in batches.epoch(1, reuse=True)],
            "epoch copy": epoch_copy, "loop": loop}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench_fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist_size.yaml"))
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    keep_freed_memory()  # as manualnet train runs
    setup = build(load_config(args.config), base_dir=Path(args.config).parent)
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = Trainer(setup, Path(tmp), quiet=True)
        trainer.plan = lambda step: QUIET_STEP  # ordinary steps only
        torch.set_num_threads(trainer.threads or torch.get_num_threads())
        ways, steps = epochs(trainer), len(trainer.batches)
        times = {name: [] for name in ways}
        with torch.no_grad():
            for _ in range(args.rounds):
                for name, epoch in ways.items():
                    start = time.perf_counter()
                    epoch()
                    times[name].append((time.perf_counter() - start) / steps * 1e6)
        trainer.log.close()
    print(f"{args.config}: {steps} steps an epoch on {torch.get_num_threads()} thread(s), medians of {args.rounds} "
          "rounds, us a step")
    for name, values in times.items():
        print(f"  {name:<13}{statistics.median(values):9.1f}")
    for a, b in (("gathered", "pre-gathered"), ("epoch copy", "gathered"), ("loop", "gathered")):
        difference = statistics.median(x - y for x, y in zip(times[a], times[b], strict=True))
        print(f"  {a} - {b}: {difference:+.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
