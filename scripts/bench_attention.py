#!/usr/bin/env python3
"""Benchmark: attention's backward recomputing p = softmax(q k^T / sqrt(d) + M) (manualnet's way) against
keeping p from the forward, on a GPT's full training step (forward, loss, backward, AdamW).

The cached variant differs in two methods, here, for the comparison only: its forward forms p (no fused
scaled_dot_product_attention) and keeps it, and the backward (CausalSelfAttention's own) reads each group of
heads' p from it instead of recomputing it. Both give the same gradients (printed). Interleaved rounds in
one process, medians, and each step's peak memory. Run ``python scripts/bench_attention.py [--threads N]``.
"""

import argparse
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench import idiomatic_step, peak_step_memory, time_interleaved  # noqa: E402

import manualnet as mn  # noqa: E402
from manualnet.nn.layers.attention import CausalSelfAttention  # noqa: E402
from manualnet.nn.pieces import pieces_along  # noqa: E402


def attend_keeping_p(self, q, k, v):
    """o = p @ v with p formed and kept for backward (no dropout), in the groups of heads backward walks."""
    p = CausalSelfAttention.probabilities(self, q, k)
    self.kept = iter([p[h] for h in pieces_along(p.shape[0], p.shape[1] * p.shape[1])])
    o = p @ v
    return o.view(-1, self.num_heads, *o.shape[1:]), None


def kept_probabilities(self, q, k):
    """The forward's p of the group of heads backward asks for next, read instead of recomputed."""
    return next(self.kept)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vocab, cpu = 101, torch.device("cpu")
    sizes = dict(vocab_size=vocab, block_size=args.block, n_layer=args.layers, n_head=args.heads, n_embd=args.width)
    models = {name: mn.GPT(**sizes, generator=torch.Generator().manual_seed(0)) for name in ("recomputed", "kept")}
    for block in models["kept"].blocks:
        block.attn.attend = types.MethodType(attend_keeping_p, block.attn)
        block.attn.probabilities = types.MethodType(kept_probabilities, block.attn)
    idx = torch.randint(0, vocab, (args.batch, args.block + 1), generator=torch.Generator().manual_seed(1))
    steps = {name: idiomatic_step(model, mn.CrossEntropyLoss(), mn.optim.AdamW(model.parameters(), lr=1e-3),
                                  idx[:, :-1], idx[:, 1:]) for name, model in models.items()}
    for step in steps.values():
        step()
    grads = [[p.grad for p in model.parameters()] for model in models.values()]
    diff = max((a - b).abs().max().item() for a, b in zip(*grads, strict=True))
    print(f"GPT {args.layers}x{args.width}, {args.heads} heads, block {args.block}, batch {args.batch}, "
          f"{args.threads} thread(s); largest gradient difference {diff:.1e}")
    times = time_interleaved(steps, cpu, rounds=args.rounds)
    print(f"step: p recomputed {1e3 * times['recomputed']:.1f} ms, p kept {1e3 * times['kept']:.1f} ms "
          f"(kept / recomputed: {times['kept'] / times['recomputed']:.3f})")
    peaks = {name: peak_step_memory(step, cpu)[1] / 2**20 for name, step in steps.items()}
    print(f"peak step memory: p recomputed {peaks['recomputed']:.1f} MB, p kept {peaks['kept']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
