"""How many CPU threads torch runs a training step on: ``train.threads``.

A small step (under ``SMALL_STEP_FLOPS``) runs on one thread: split over two, each of its tiny ops pays the
hand-off to the other thread more than the split saves. A larger one runs on the cores no other process is
using when the run starts (``busy_cores``): a busy core makes every op wait for the thread that shares it.
The measurements behind both choices are in docs/performance.md ("Threads"), with their commands.
"""

import contextlib
import os
import time
import warnings

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
        if setting > os.cpu_count():
            warnings.warn(f"train.threads {setting} is more than this machine's {os.cpu_count()} cores: threads that "
                          "share a core wait for one another (train.threads: auto picks from the free cores)",
                          stacklevel=2)
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
