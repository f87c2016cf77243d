#!/usr/bin/env python3
"""Benchmark: a manualnet training step against the same step in torch.nn + autograd, and the GEMM floor.

Three MLPs with ReLU (small 2-64-64-3 at batch 64, MNIST-size 784-512-256-10 at batch 128, large
1024-4096-4096-10 at batch 512). For each, in one process, interleaved A B C A B C with warm-up, the median
over rounds of:
- manualnet: the step a user writes, through the public API: ``opt.zero_grad()``, forward, CrossEntropy,
  ``model.backward(loss.backward())``, ``opt.step()`` (the first Linear has ``needs_input_grad = False``: its
  input is data, as autograd knows from ``requires_grad``);
- autograd: the same network in torch.nn from the same weights with torch.optim.SGD;
- floor: the step's matrix multiplies alone, into preallocated outputs (per Linear the forward product and
  the two backward products, minus the first layer's input gradient).
Run ``python scripts/bench.py``; ``--json FILE`` writes the rows. ``--trainer CONFIG`` also times
``manualnet train``'s loop against a bare loop over the same batches (its overhead). ``--gpt`` times a GPT's
training step against torch.nn eager and torch.compile instead (scripts/bench_gpt.py; --help there).
Every mode runs with the C heap kept warm, as ``manualnet train`` runs (manualnet/training/heap.py), for
every contestant alike; ``--heap default`` leaves glibc's own settings (scripts/bench_heap.py compares both),
except in ``--distributed``, whose ranks are ``manualnet train`` processes that keep their own heaps warm.

The autograd baseline lives here, outside the package: manualnet itself never calls autograd.
"""

import argparse
import contextlib
import io
import itertools
import json
import os
import platform
import runpy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import manualnet as mn
from manualnet.errors import ManualnetError
from manualnet.optim import SGD, clip_grad_norm
from manualnet.training.heap import keep_freed_memory

SIZES = {
    "small": ([2, 64, 64, 3], 64),
    "mnist": ([784, 512, 256, 10], 128),
    "large": ([1024, 4096, 4096, 10], 512),
    "tiny": ([3, 5, 4], 6),
}
LR, MOMENTUM = 0.01, 0.9
HEAPS = ("kept", "default")


def _take_heap(argv):
    """(``--heap``'s value, the other arguments), every ``--heap`` taken out and the last one's value kept, as
    argparse keeps the last: "kept" when it is not given, None when the last has no value."""
    heap, rest, args = "kept", [], iter(argv)
    for arg in args:
        if arg == "--heap":
            heap = next(args, None)
        elif arg.startswith("--heap="):
            heap = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return heap, rest


def build_pair(sizes, device, dtype, seed=0):
    """A manualnet MLP and the same network in torch.nn, with identical weights."""
    torch.manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(mn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(mn.ReLU())
    ours = mn.Sequential(*layers).to(device, dtype)
    ours[0].needs_input_grad = False  # the input is data: nothing upstream wants its gradient
    theirs = torch.nn.Sequential(*[torch.nn.Linear(layer.in_features, layer.out_features)
                                   if isinstance(layer, mn.Linear) else torch.nn.ReLU() for layer in layers])
    theirs.to(device=device, dtype=dtype).load_state_dict(ours.state_dict())
    return ours, theirs


def step_functions(sizes, batch, device, dtype):
    """({"manualnet": fn, "autograd": fn, "floor": fn}, resident_bytes): each fn runs one step on the same
    batch; resident_bytes() measures what each side keeps between steps."""
    ours, theirs = build_pair(sizes, device, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, sizes[0], generator=gen).to(device, dtype)
    t = torch.randint(0, sizes[-1], (batch,), generator=gen).to(device)
    loss_fn = mn.CrossEntropyLoss()
    optimizer = SGD(ours.parameters(), lr=LR, momentum=MOMENTUM)
    torch_optimizer = torch.optim.SGD(theirs.parameters(), lr=LR, momentum=MOMENTUM)

    def autograd_step():
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(theirs(x), t).backward()
        torch_optimizer.step()

    def resident_bytes():
        """Bytes held between steps: parameters, gradients, optimizer buffers (and the batch)."""
        state = [b for g in optimizer.param_groups for bufs in (g.state or {}).values() for b in bufs]
        ours_t = [*ours.parameters(), *(p.grad for p in ours.parameters()), *state]
        theirs_t = [*theirs.parameters(), *(p.grad for p in theirs.parameters() if p.grad is not None),
                    *(s for st in torch_optimizer.state.values() for s in st.values() if torch.is_tensor(s))]
        return {"manualnet": _nbytes(ours_t), "autograd": _nbytes(theirs_t)}

    return {"manualnet": idiomatic_step(ours, loss_fn, optimizer, x, t), "autograd": autograd_step,
            "floor": gemm_floor(ours, x)}, resident_bytes


def idiomatic_step(model, loss_fn, optimizer, x, t):
    """The step a user writes, through the public API: zero_grad, forward, loss, backward, optimizer step."""

    def step():
        optimizer.zero_grad()
        loss_fn(model(x), t)
        model.backward(loss_fn.backward())
        optimizer.step()

    return step


def _nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def gemm_floor(model, x):
    """The step's matrix multiplies alone, into outputs allocated once."""
    linears = [layer for layer in model if isinstance(layer, mn.Linear)]
    acts, work = [x], []
    for layer in linears:
        W = layer.weight
        y = torch.empty(x.shape[0], layer.out_features, device=x.device, dtype=x.dtype)
        work.append((acts[-1], W, y, torch.empty_like(W), torch.empty_like(acts[-1])))
        acts.append(y)

    def floor_step():
        for a, W, y, _, _ in work:
            torch.mm(a, W.t(), out=y)                    # forward: y = a @ W^T
        for i, (a, W, y, dW, da) in enumerate(reversed(work)):
            torch.mm(y.t(), a, out=dW)                   # dW = dy^T @ a (y stands in for dy: same shape)
            if i < len(work) - 1:
                torch.mm(y, W, out=da)                   # da = dy @ W, not for the first layer

    return floor_step


def time_interleaved(functions, device, rounds, min_time=0.05):
    """Median seconds per call of each function, timed in interleaved rounds after warm-up."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    reps = {}
    for name, fn in functions.items():
        for _ in range(3):
            fn()
        sync()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < min_time or n < 3:
            fn()
            n += 1
        sync()
        reps[name] = n
    samples = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            samples[name].append(_time(fn, reps[name], device, sync))
    return {name: statistics.median(s) for name, s in samples.items()}


def _time(fn, n, device, sync):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000 / n
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def peak_step_memory(fn, device):
    """(low, high) peak bytes allocated while one step runs, relative to what was allocated before it (negative
    allocations, such as gradients freed by ``zero_grad(set_to_none=True)``, count).

    On the CPU, from the profiler's events. Memory freed inside an op's scope (autograd frees a node's saved
    tensors and its incoming gradient inside its evaluate_function, while or after the node computes) is
    reported with that op, not when it happened: counted at the scope's start it gives ``low``, at its end
    ``high``; the true peak lies between. Frees in Python, between ops (manualnet's), are exact: low == high.
    On CUDA both are the allocator's exact peak."""
    fn()  # first step creates lazy state (momentum buffers): not transient memory
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        return peak, peak
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    bounds = []
    for freed_at_end in (False, True):
        changes = []
        for e in prof.events():
            delta = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
            late = freed_at_end and delta < 0 and e.name != "[memory]"
            changes.append((e.time_range.end if late else e.time_range.start, delta))
        current = peak = 0
        for _, delta in sorted(changes, key=lambda change: change[0]):
            current += delta
            peak = max(peak, current)
        bounds.append(peak)
    return tuple(bounds)


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side logs each start and stop on file descriptor 2: keep the table readable."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def bench_size(name, device, dtype, rounds):
    sizes, batch = SIZES[name]
    functions, resident_bytes = step_functions(sizes, batch, device, dtype)
    seconds = time_interleaved(functions, device, rounds)
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    flops = 6 * params * batch
    transient = {k: peak_step_memory(functions[k], device) for k in ("manualnet", "autograd")}
    resident = resident_bytes()
    memory = {k: [resident[k] + b for b in transient[k]] for k in transient}
    return {
        "size": name, "layers": "-".join(map(str, sizes)), "batch": batch,
        "manualnet_steps_per_s": 1 / seconds["manualnet"], "autograd_steps_per_s": 1 / seconds["autograd"],
        "floor_steps_per_s": 1 / seconds["floor"], "ratio_vs_autograd": seconds["autograd"] / seconds["manualnet"],
        "manualnet_gflops": flops / seconds["manualnet"] / 1e9,
        "fraction_of_floor": seconds["floor"] / seconds["manualnet"],
        "manualnet_peak_bytes": memory["manualnet"][1], "autograd_peak_bytes_low": memory["autograd"][0],
        "autograd_peak_bytes": memory["autograd"][1],
    }


# -- the training loop's own cost ----------------------------------------------------------------------


def trainer_overhead(config_path, rounds, overrides=()):
    """What ``manualnet train``'s loop costs beyond the shortest loop that trains the same way, from
    ``rounds`` rounds of a whole run (a quiet Trainer's fit), of that bare loop, and of the bare steps on
    batches gathered beforehand (the trainer first in every other round, last in the others).

    The loop is timed from the start of fit's loop to its end, which includes the logger's hand-off of the
    events it still held (the run's last second of TensorBoard events: logging work, paid there), less the
    validation passes (training, not bookkeeping: ``validation_share`` is their time over the bare loop's).
    The bare loop takes each epoch's batches from the trainer's own data loader (the same seeded order and
    gathers, which a shuffled epoch has to pay whoever writes the loop: so the loader's own cost is not in
    the overhead) and runs the trainer's step on each (forward, loss, backward with zero_grad folded in, the
    clipping when ``train.grad_clip`` is set, optimizer and schedule step), nothing else.

    ``overhead`` is from per-step medians: for each step i, the median over rounds of the time from step
    i's start to the next step's start (step i, the loop's work after it: logging, an epoch's end, a
    checkpoint, and fetching the next batch) less the bare loop's median for the same interval, summed with
    the difference before the first step, over the sum of the bare loop's medians; each round's times are
    taken relative to its bare loop's median interval (``_extra_times``), so a slower minute on the shared
    host, which slows both, does not count as the loop's (``overhead_unscaled``: the same from the seconds
    themselves). A burst of load from a neighbour slows some steps of one round, which the per-step medians
    discard and a whole-run ratio takes in: ``overhead_per_round``, the median over rounds of (loop -
    validation) / bare loop - 1. ``costs`` says where the overhead goes, by kind of step (see ``_costs``).
    ``overhead_pregathered`` is the unscaled figure over the bare steps alone on copies of the batches made
    before the timer starts (``pure_steps_*``), as this benchmark measured the loop until 1 December 2026:
    the batches' fetching and each epoch's shuffle then count as the loop's.
    """
    from manualnet.config.load import load_config
    from manualnet.training.threads import torch_threads

    config, base_dir = load_config(config_path, overrides), Path(config_path).parent
    looped, bare, pure, loops, validations, fetches = [], [], [], [], [], []

    def run_trainer():
        trainer, clock = _fit(config, base_dir)
        looped.append(clock.intervals())
        fetches.append(clock.fetches(len(trainer.batches)))
        loops.append(clock.ended - clock.begun)
        validations.append(sum(seconds for _, seconds in clock.validations))
        return trainer

    def run_bare(threads):
        with torch_threads(threads):  # the threads the trainer ran on (train.threads as it resolved)
            bare.append(_bare_loop(config, base_dir))
            pure.append([])
            _pure_steps(*_pure_work(config, base_dir), step_times=pure[-1])

    trainer = run_trainer()
    run_bare(trainer.threads)
    for r in range(1, rounds):  # the other way round every other round: neither side always runs second
        if r % 2:
            run_bare(trainer.threads)
            trainer = run_trainer()
        else:
            trainer = run_trainer()
            run_bare(trainer.threads)
    (start, *extra), bare_median = _extra_times(looped, bare)
    raw_extra, raw_median = _extra_times(looped, bare, scaled=False)
    pure_extra, pure_median = _extra_times(looped, [[0.0, *p] for p in pure], scaled=False)  # none before step 1
    per_round = list(zip(loops, validations, [sum(b) for b in bare], strict=True))
    return {"config": str(config_path), "overrides": list(overrides), "steps": trainer.at.step,
            "threads": trainer.threads or torch.get_num_threads(),  # train.threads as it resolved
            "loop_s": statistics.median(loops), "validation_s": statistics.median(validations),
            "bare_loop_s": statistics.median(b for _, _, b in per_round), "bare_loop_median_s": bare_median,
            "pure_steps_s": statistics.median(sum(p) for p in pure), "pure_steps_median_s": pure_median,
            "overhead": (start + sum(extra)) / bare_median, "overhead_unscaled": sum(raw_extra) / raw_median,
            "overhead_per_round": statistics.median((loop - val) / b for loop, val, b in per_round) - 1,
            "overhead_with_validation": statistics.median(loop / b for loop, _, b in per_round) - 1,
            "overhead_pregathered": sum(pure_extra) / pure_median,
            "validation_share": statistics.median(val / b for _, val, b in per_round),
            "batch_fetch_s": sum(statistics.median(f) for f in zip(*fetches, strict=True)),
            "costs": _costs(config, len(trainer.batches), start, extra)}


def _extra_times(looped, alone, scaled=True):
    """(each interval's extra seconds in ``looped`` over ``alone``, the sum of ``alone``'s), from rounds of
    intervals (``LoopClock.intervals``): with ``scaled``, each round's intervals counted in its own median
    interval alone (the host's speed in that round, which moves from minute to minute), the median over rounds
    of each interval taken in those units, then turned back into seconds at the rounds' median speed; without,
    the medians of the seconds themselves."""
    units = [max(statistics.median(a), 1e-9) if scaled else 1.0 for a in alone]

    def in_units(rounds):
        return zip(*([t / u for t in r] for r, u in zip(rounds, units, strict=True)), strict=True)
    unit = statistics.median(units)
    medians = [(statistics.median(loop), statistics.median(a))
               for loop, a in zip(in_units(looped), in_units(alone), strict=True)]
    return [unit * (loop - a) for loop, a in medians], unit * sum(a for _, a in medians)


def _costs(config, steps_per_epoch, start, extra):
    """{kind: {"steps": how many, "total_s": their summed extra time, "median_s": a step's}} for the steps
    that end an epoch (validation excluded: the epoch's metrics, the best weights, a checkpoint when due),
    that log histograms, that log scalars, and the others; ``start`` is the time before the first step,
    ``end`` the last step's (the last epoch's end, its checkpoint, the events handed off); ``extra`` is each
    step's median time beyond the bare loop's (``trainer_overhead``)."""
    kinds = {"epoch end": [], "histogram": [], "logging": [], "other": [], "end": []}
    hist_every, log_every = config.log.histograms_every, config.log.every
    for step, seconds in enumerate(extra, 1):
        kind = "other" if step % log_every else "logging"
        kind = "histogram" if hist_every and step % hist_every == 0 else kind
        kind = "epoch end" if step % steps_per_epoch == 0 else kind
        kinds["end" if step == len(extra) else kind].append(seconds)
    costs = {kind: {"steps": len(v), "total_s": sum(v), "median_s": statistics.median(v)}
             for kind, v in kinds.items() if v}
    costs["start"] = {"steps": 0, "total_s": start, "median_s": start}
    return costs


def _bare_loop(config, base_dir):
    """The shortest loop training a fresh build of ``config`` as the trainer does (``trainer_overhead``): its
    intervals as ``LoopClock.intervals`` gives the trainer's, from the loop's start to the first step, from
    each step's start to the next one's, and from the last to the loop's end."""
    setup, batches = _built(config, base_dir)
    step, marks = _bare_step(setup), [time.perf_counter()]
    with torch.no_grad():
        for epoch in range(config.train.epochs):
            for xb, tb, _ in batches.epoch(epoch, reuse=True):
                marks.append(time.perf_counter())
                step(xb, tb)
    marks.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(marks)]


class LoopClock:
    """The trainer's hooks (``Trainer(hooks=...)``), timing its loop from outside: each step's start and end,
    each validation pass and the loop's end."""

    def __init__(self):
        self.begun, self.ended, self.starts, self.ends, self.validations = None, None, [], [], []
        self._validating = None

    def step_started(self):
        self.starts.append(time.perf_counter())

    def step_ended(self):
        self.ends.append(time.perf_counter())

    def fetches(self, steps_per_epoch):
        """Seconds from each step's end to the next step's start within an epoch: fetching the next batch
        (a gather, or a view of the epoch's shuffled copy), as the loop does it."""
        return [self.starts[i + 1] - self.ends[i] for i in range(len(self.starts) - 1)
                if (i + 1) % steps_per_epoch]

    def validation_started(self):
        self._validating = time.perf_counter()

    def validation_ended(self):  # it ran after step number len(starts)
        self.validations.append((len(self.starts), time.perf_counter() - self._validating))

    def loop_ended(self):
        self.ended = time.perf_counter()

    def intervals(self):
        """Seconds from the loop's start to the first step, then from each step's start to the next one's
        (the last: to the loop's end), less the validation passes in them."""
        marks = [self.begun, *self.starts, self.ended]
        intervals = [b - a for a, b in itertools.pairwise(marks)]
        for after_steps, seconds in self.validations:
            intervals[after_steps] -= seconds
        return intervals


def _fit(config, base_dir):
    """A quiet Trainer's fit of ``config`` in a temporary run directory, timed by a LoopClock; returns both."""
    from manualnet.config.setup import build
    from manualnet.training.trainer import Trainer

    setup, clock = build(config, base_dir=base_dir), LoopClock()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = Trainer(setup, run_dir, quiet=True, hooks=clock)
            clock.begun = time.perf_counter()
            trainer.fit()
    return trainer, clock


def _built(config, base_dir):
    """A fresh build of ``config`` and its training split's batches, as the trainer makes them."""
    from manualnet.config.setup import build
    from manualnet.data import Batches

    setup = build(config, base_dir=base_dir)
    x, targets, labels = setup.split("train")
    return setup, Batches(x, targets, config.train.batch_size, config.seed, labels=labels)


def _pure_work(config, base_dir):
    """A fresh build of ``config`` and copies of the batches its training run visits, in order."""
    setup, batches = _built(config, base_dir)
    return setup, [tuple(t.clone() for t in b) for e in range(config.train.epochs) for b in batches.epoch(e)]


def _bare_step(setup):
    """The trainer's training step and nothing else, as a function of a batch (x, targets): with
    ``train.grad_clip``, the clipping too."""
    model, loss, optimizer, schedule = setup.model, setup.loss, setup.optimizer, setup.schedule
    max_norm = setup.config.train.grad_clip
    model.train()
    first = next(iter(model.children()), None)
    if hasattr(first, "needs_input_grad"):  # as the trainer sets it
        first.needs_input_grad = False

    def step(xb, tb):
        optimizer.zero_grad()
        loss(model(xb), tb)
        model.backward(loss.backward())
        if max_norm is not None:
            clip_grad_norm(optimizer.grad_buffers(), max_norm)
        optimizer.step()
        schedule.step()
    return step


def _pure_steps(setup, work, step_times=None):
    """Seconds for the training steps alone on ``work``; with ``step_times``, each step's appended too."""
    step = _bare_step(setup)
    start = step_start = time.perf_counter()
    with torch.no_grad():
        for xb, tb, _ in work:
            step(xb, tb)
            if step_times is not None:
                now = time.perf_counter()
                step_times.append(now - step_start)
                step_start = now
    return time.perf_counter() - start


def format_rows(rows):
    header = (f"{'size':<7}{'layers':<22}{'batch':>6}{'manualnet/s':>13}{'autograd/s':>12}{'ratio':>7}"
              f"{'GFLOP/s':>9}{'floor/s':>11}{'of floor':>9}{'peak MB (mn / ag low-high)':>29}")
    lines = [header]
    for r in rows:
        lines.append(f"{r['size']:<7}{r['layers']:<22}{r['batch']:>6}{r['manualnet_steps_per_s']:>13.1f}"
                     f"{r['autograd_steps_per_s']:>12.1f}{r['ratio_vs_autograd']:>7.2f}{r['manualnet_gflops']:>9.1f}"
                     f"{r['floor_steps_per_s']:>11.1f}{r['fraction_of_floor']:>9.2f}"
                     f"{r['manualnet_peak_bytes'] / 2**20:>12.2f} / {r['autograd_peak_bytes_low'] / 2**20:.2f}-"
                     f"{r['autograd_peak_bytes'] / 2**20:<6.2f}")
    return "\n".join(lines)


def format_costs(costs):
    """``trainer_overhead``'s costs as one line: each kind's total and a step's median."""
    parts = []
    for kind, c in costs.items():
        each = f" ({c['steps']} x {1e6 * c['median_s']:+.0f} us)" if c["steps"] else ""
        parts.append(f"{kind} {1e3 * c['total_s']:+.1f} ms{each}")
    return ", ".join(parts)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    heap, argv = _take_heap(argv)  # before any of the modes' parsers, which do not know it
    if heap == "default" and "--distributed" in argv:
        print("bench: error: --heap default cannot reach --distributed's ranks: each is a manualnet train process, "
              "which keeps its own heap warm", file=sys.stderr)
        return 2
    if heap not in HEAPS and not {"-h", "--help"} & set(argv):
        got = "nothing" if heap is None else repr(heap)
        print(f"bench: error: --heap takes one of {', '.join(HEAPS)}, got {got}", file=sys.stderr)
        return 2
    if heap == "kept":
        keep_freed_memory()
    if "--distributed" in argv:  # 1 against N processes: its own script, with its own options
        scaling = runpy.run_path(str(Path(__file__).resolve().with_name("bench_distributed.py")), run_name="scaling")
        return scaling["main"]([a for a in argv if a != "--distributed"])
    if "--conv" in argv:  # conv nets' steps: their own script, with its own options
        conv = runpy.run_path(str(Path(__file__).resolve().with_name("bench_conv.py")), run_name="conv")
        return conv["main"]([a for a in argv if a != "--conv"])
    if "--gpt" in argv:  # a transformer's step: its own script, with its own options
        gpt = runpy.run_path(str(Path(__file__).resolve().with_name("bench_gpt.py")), run_name="bench_gpt")
        return gpt["main"]([a for a in argv if a != "--gpt"])
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--distributed", action="store_true",
                        help="measure data-parallel scaling instead (scripts/bench_distributed.py; --help there)")
    parser.add_argument("--conv", action="store_true",
                        help="time conv nets' training steps instead (scripts/bench_conv.py; --help there)")
    parser.add_argument("--gpt", action="store_true",
                        help="time a GPT's training step instead (scripts/bench_gpt.py; --help there)")
    parser.add_argument("--heap", choices=HEAPS, default="kept",
                        help="kept: the C heap keeps freed memory, as manualnet train sets it (the default); "
                             "default: glibc's own thresholds")
    parser.add_argument("--sizes", default="small,mnist,large", help="comma-separated: small, mnist, large, tiny")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--json", metavar="FILE", help="write the rows and the machine description here")
    parser.add_argument("--trainer", metavar="CONFIG", help="also measure the training loop's overhead on CONFIG")
    parser.add_argument("--trainer-rounds", type=int, default=5)
    parser.add_argument("--trainer-set", metavar="KEY=VALUE", action="append", default=[],
                        help="override a key of the --trainer config, as train's --set does (repeatable)")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        print(f"bench: error: unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}", file=sys.stderr)
        return 2
    problem = next((f"{flag} must be at least 1, got {value}" for flag, value in
                    (("--rounds", args.rounds), ("--trainer-rounds", args.trainer_rounds), ("--threads", args.threads))
                    if value is not None and value < 1), None)
    if problem is None and args.json and not Path(args.json).resolve().parent.is_dir():
        problem = f"--json {args.json}: its folder does not exist"
    if problem is not None:  # said now, not after minutes of benchmarking
        print(f"bench: error: {problem}", file=sys.stderr)
        return 2
    if args.trainer_set and not args.trainer:
        print("bench: error: --trainer-set overrides the --trainer config; give --trainer CONFIG too", file=sys.stderr)
        return 2
    if args.trainer:  # a bad config is said now, not after minutes of benchmarking
        from manualnet.config.load import load_config

        try:
            load_config(args.trainer, args.trainer_set)
        except ManualnetError as e:
            print(f"bench: error: {e}", file=sys.stderr)
            return 2
    from manualnet.config.setup import resolve_device

    try:
        device = resolve_device(args.device)  # "cuda" without CUDA: one line, as train's --device
    except ManualnetError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    machine = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
               "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
               "dtype": args.dtype, "rounds": args.rounds}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    print(f"manualnet bench: torch {machine['torch']}, {machine['threads']} threads, {device}, {args.dtype}, "
          f"median of {args.rounds} interleaved rounds")
    rows = [bench_size(name, device, dtype, args.rounds) for name in names]
    print(format_rows(rows))
    result, code = {"machine": machine, "rows": rows}, 0
    if args.trainer:
        try:
            loop = trainer_overhead(args.trainer, args.trainer_rounds, args.trainer_set)
        except ManualnetError as e:  # found only when the run is built (its data set's files, its sizes)
            print(f"bench: error: {e}", file=sys.stderr)
            code = 2  # the sizes' rows are still written
        else:
            sets = "".join(f" --set {o}" for o in args.trainer_set)
            print(f"manualnet train loop on {loop['config']}{sets}: {loop['steps']} steps on {loop['threads']} "
                  f"thread(s) in {loop['loop_s']:.3f} s ({loop['validation_s']:.3f} s of it validating) against "
                  f"{loop['bare_loop_s']:.3f} s of a bare loop over the same batches (medians of "
                  f"{args.trainer_rounds} rounds): overhead {100 * loop['overhead']:.1f}% without the validation "
                  f"passes (per-step medians at each round's speed; in seconds: "
                  f"{100 * loop['overhead_unscaled']:.1f}%; per round: {100 * loop['overhead_per_round']:.1f}%, "
                  f"{100 * loop['overhead_with_validation']:.1f}% with the validation passes)")
            print("where it goes, beyond the bare loop: " + format_costs(loop["costs"]))
            print(f"against the bare steps on batches gathered beforehand ({loop['pure_steps_s']:.3f} s; per-step "
                  f"medians in seconds, as measured until 1 December 2026): overhead "
                  f"{100 * loop['overhead_pregathered']:.1f}%, fetching the batches within the epochs "
                  f"{1e3 * loop['batch_fetch_s']:.1f} ms of it")
            result["trainer"] = loop
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main())
