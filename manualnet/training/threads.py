"""How many CPU threads torch runs a training step on: ``train.threads``.

A small network's step is a few dozen ops of a few microseconds each. Split over two threads, each op pays
the hand-off to the other thread and its wake-up, more than the split work saves; in the training loop, whose
bookkeeping between steps lets that thread fall asleep, more still. On a 2-core machine
``scripts/bench.py --sizes small,mnist --threads 1`` against ``--threads 2`` gave 2-64-64-3 at batch 64
(1.7 MFLOP a step) about 6350 steps/s on one thread and 5200-5950 on two, 784-512-256-10 at batch 128
(412 MFLOP) 203-215 against 319-323. Timing the benchmark's step function at sizes in between (one
process, interleaved), 3.5 MFLOP still ran faster on one thread and 6.6 MFLOP on two: hence 5 MFLOP.

A core that another process keeps busy makes every op wait for the thread that shares it: with one of two
cores spinning, the same benchmark gave 250-265 MNIST-size steps/s on one thread and 56-132 on two, and
``configs/mlp.yaml`` trained in 0.23-0.24 s on one thread and 1.06-1.22 s on two. So "auto" runs on the cores
no other process is using when the run starts (``busy_cores``), never on more than torch's own count.
"""

import contextlib
import os
import time

import torch

SMALL_STEP_FLOPS = 5e6  # below this many FLOPs a step (6 x parameters x batch rows), "auto" runs one thread
FREE_CORE = 0.75  # a core counts as free when other processes use less than a quarter of it
SAMPLE_S = 0.2  # how long busy_cores watches the other processes (this one sleeps meanwhile)


def cpu_threads(setting, model, rows, device, busy=None):
    """The thread count a run on ``device`` uses: ``setting`` (``train.threads``) when it is a number. For
    "auto": one thread when a step of ``model`` on ``rows`` rows is under SMALL_STEP_FLOPS, else torch's own
    count less the cores other processes keep busy (``busy``, measured by ``busy_cores`` when None), at least
    one. None on a GPU, whose steps do not run on these threads."""
    if device.type != "cpu":
        return None
    if setting != "auto":
        return setting
    params = sum(p.numel() for p in model.parameters())
    if 6 * params * rows < SMALL_STEP_FLOPS:
        return 1
    busy = busy_cores() if busy is None else busy
    free = int(os.cpu_count() - busy + (1 - FREE_CORE))
    return max(1, min(torch.get_num_threads(), free))


def busy_cores(seconds=SAMPLE_S):
    """How many cores the machine's other processes kept busy over the next ``seconds``, from /proc/stat's
    counters (0 where there is no /proc/stat: the count is then torch's own, as before this check)."""
    first = _cpu_ticks()
    if first is None:
        return 0.0
    time.sleep(seconds)
    second = _cpu_ticks()
    busy_ticks, total_ticks = second[0] - first[0], second[1] - first[1]
    return os.cpu_count() * busy_ticks / total_ticks if total_ticks > 0 else 0.0


def _cpu_ticks():
    """(busy ticks, all ticks) of all cores together since boot, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and waiting for I/O
    return sum(fields[:8]) - idle, sum(fields[:8])  # guest time is already counted in user time


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
