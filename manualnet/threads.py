"""How many CPU threads torch runs a training step on: ``train.threads``.

A small network's step is a few dozen ops of a few microseconds each. Split over two threads, each op pays
the hand-off to the other thread and its wake-up, more than the split work saves; in the training loop, whose
bookkeeping between steps lets that thread fall asleep, more still. On a 2-core machine
``scripts/bench.py --sizes small,mnist --threads 1`` against ``--threads 2`` gave 2-64-64-3 at batch 64
(1.7 MFLOP a step) about 6350 steps/s on one thread and 5200-5950 on two, 784-512-256-10 at batch 128
(412 MFLOP) 203-215 against 319-323. Timing the benchmark's step function at sizes in between (one
process, interleaved), 3.5 MFLOP still ran faster on one thread and 6.6 MFLOP on two: hence 5 MFLOP.
"""

import contextlib

import torch

SMALL_STEP_FLOPS = 5e6  # below this many FLOPs a step (6 x parameters x batch rows), "auto" runs one thread


def cpu_threads(setting, model, rows, device):
    """The thread count a run on ``device`` uses: ``setting`` (``train.threads``) when it is a number, and
    for "auto" one thread when a step of ``model`` on ``rows`` rows is under SMALL_STEP_FLOPS; None (torch's
    own count, left as it is) otherwise and on a GPU, whose steps do not run on these threads."""
    if device.type != "cpu":
        return None
    if setting != "auto":
        return setting
    params = sum(p.numel() for p in model.parameters())
    return 1 if 6 * params * rows < SMALL_STEP_FLOPS else None


@contextlib.contextmanager
def torch_threads(count):
    """torch runs on ``count`` threads inside the block (None: as many as it does), as it did after it."""
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
