#!/usr/bin/env python3
"""Benchmark: a GPT's full training step (forward, loss, backward, AdamW) by hand against torch.nn + autograd.

One GPT (by default 4 layers, 4 heads, 128 wide, block 128, batch 16, a 101-character vocabulary) built three
ways from the same weights: manualnet with mn.optim.AdamW; the same model in torch.nn (tests/torch_gpt.py,
attention through scaled_dot_product_attention) with torch.optim.AdamW, eager; and that model under
torch.compile. Interleaved rounds in one process, medians; peak memory of a step; and where manualnet's step
spends its time (each module type's forward + backward, the loss, the optimizer). Run
``python scripts/bench.py --gpt``; ``--json FILE`` writes the rows.
"""

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench import idiomatic_step, peak_step_memory, time_interleaved  # noqa: E402

import manualnet as mn  # noqa: E402
from tests.torch_gpt import TorchGPT  # noqa: E402

LR, WEIGHT_DECAY = 1e-3, 0.1


def build(args, device, dtype):
    """The manualnet GPT, its torch.nn twin with the same weights, a batch and the step functions."""
    sizes = dict(vocab_size=args.vocab, block_size=args.block, n_layer=args.layers, n_head=args.heads,
                 n_embd=args.width)
    ours = mn.GPT(**sizes, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    theirs = TorchGPT(**sizes).to(device=device, dtype=dtype)
    theirs.load_state_dict(ours.state_dict())
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, args.vocab, (args.batch, args.block + 1), generator=gen).to(device)
    x, t = idx[:, :-1], idx[:, 1:]
    loss_fn, optimizer = mn.CrossEntropyLoss(), mn.optim.AdamW(ours.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def torch_step(model, opt):
        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x).flatten(0, 1), t.flatten()).backward()
            opt.step()
        return step

    steps = {"manualnet": idiomatic_step(ours, loss_fn, optimizer, x, t),
             "eager": torch_step(theirs, torch.optim.AdamW(theirs.parameters(), lr=LR, weight_decay=WEIGHT_DECAY))}
    if args.compile:
        twin = TorchGPT(**sizes).to(device=device, dtype=dtype)
        twin.load_state_dict(ours.state_dict())
        steps["compiled"] = torch_step(torch.compile(twin), torch.optim.AdamW(twin.parameters(), lr=LR,
                                                                                weight_decay=WEIGHT_DECAY))
    return ours, steps, (optimizer, loss_fn, x, t)


def where_time_goes(model, optimizer, loss_fn, x, t, steps=7):
    """{part: seconds per step} of manualnet's step: each module type's own forward + backward (its children's
    time taken out), the loss, the optimizer, each the median over ``steps`` steps (a burst of load from a
    neighbour slows some steps, not the medians); "other" is the median step's remaining time (residual adds,
    Python)."""
    spent, wrapped, totals = defaultdict(float), [], []
    for module in [*model.modules(), loss_fn]:
        for method in ("forward", "backward"):
            wrapped.append((module, method))
            object.__setattr__(module, method, _timed(module, getattr(module, method), spent))
    per_step = defaultdict(list)
    try:
        with torch.no_grad():
            for _ in range(steps):
                spent.clear()
                start = time.perf_counter()
                optimizer.zero_grad()
                loss_fn(model(x), t)
                model.backward(loss_fn.backward())
                opt_start = time.perf_counter()
                optimizer.step()
                spent["AdamW"] += time.perf_counter() - opt_start
                totals.append(time.perf_counter() - start)
                for name, seconds in spent.items():
                    per_step[name].append(seconds)
    finally:
        for module, method in wrapped:
            vars(module).pop(method, None)
    medians = {name: statistics.median(s) for name, s in per_step.items()}
    parts = {name: s for name, s in sorted(medians.items(), key=lambda kv: -kv[1]) if s > 0}
    parts["other"] = statistics.median(totals) - sum(parts.values())
    return parts


_stack = []  # the timed calls now running: a parent's own time excludes its children's


def _timed(module, fn, spent):
    name = type(module).__name__

    def timed(*args, **kwargs):
        _stack.append(0.0)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            children = _stack.pop()
            spent[name] += elapsed - children
            if _stack:
                _stack[-1] += elapsed

    return timed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.py --gpt", description=__doc__.splitlines()[0])
    for flag, default in (("--layers", 4), ("--heads", 4), ("--width", 128), ("--block", 128), ("--batch", 16),
                          ("--vocab", 101), ("--rounds", 7)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile row")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model, steps, (optimizer, loss_fn, x, t) = build(args, device, dtype)
    for step in steps.values():  # torch.compile compiles here, outside the timing
        step()
    seconds = time_interleaved(steps, device, args.rounds)
    peak = {name: peak_step_memory(step, device) for name, step in steps.items() if name != "compiled"}
    parts = where_time_goes(model, optimizer, loss_fn, x, t)
    row = {"model": f"GPT {args.layers}x{args.width}, {args.heads} heads, block {args.block}, batch {args.batch}",
           "threads": torch.get_num_threads(), "dtype": args.dtype, "rounds": args.rounds,
           "ms_per_step": {k: 1e3 * s for k, s in seconds.items()},
           "speedup": {k: seconds[k] / seconds["manualnet"] for k in seconds if k != "manualnet"},
           "peak_step_mb": {k: high / 2**20 for k, (_, high) in peak.items()},
           "eager_peak_step_mb_low": peak["eager"][0] / 2**20,
           "manualnet_ms_by_part": {k: 1e3 * s for k, s in parts.items()}}
    print(format_row(row))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2) + "\n")
    return 0


def format_row(row):
    times = ", ".join(f"{k} {v:.1f} ms" for k, v in row["ms_per_step"].items())
    ratios = ", ".join(f"{v:.2f}x {k}'s speed" for k, v in row["speedup"].items())
    memory = ", ".join(f"{k} {row['eager_peak_step_mb_low']:.1f}-{v:.1f} MB" if k == "eager" else f"{k} {v:.1f} MB"
                       for k, v in row["peak_step_mb"].items())
    total = sum(row["manualnet_ms_by_part"].values())
    parts = ", ".join(f"{k} {v:.1f} ms ({100 * v / total:.0f}%)" for k, v in row["manualnet_ms_by_part"].items())
    return (f"{row['model']}, {row['dtype']}, {row['threads']} threads, median of {row['rounds']} interleaved "
            f"rounds\nstep: {times}\nmanualnet runs at {ratios}\npeak step memory: {memory}\n"
            f"manualnet's step by part: {parts}")


if __name__ == "__main__":
    sys.exit(main())
