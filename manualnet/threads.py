"""How many CPU threads torch runs a training step on: ``train.threads``.

A small network's step is a few dozen ops of a few microseconds each. Split over two threads, each op pays
the hand-off to the other thread and its wake-up, more than the split work saves; in the training loop, whose
bookkeeping between steps lets that thread fall asleep, more still. Measured on a 2-core machine
(``scripts/bench.py``'s step, medians of 9 interleaved rounds): 2-64-64-3 at batch 64 (1.7 MFLOP a step)
took 163 us on one thread and 186 us on two; at batch 128 (3.5 MFLOP) 181 and 195 us; 2-128-128-3 at
batch 64 (6.6 MFLOP) 247 and 236 us; 784-512-256-10 at batch 128 (412 MFLOP) 3987 and 2457 us.
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
    params = sum(p.numel() for p in model.params.values())
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
