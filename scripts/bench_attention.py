#!/usr/bin/env python3
"""Benchmark: attention's backward recomputing p = softmax(q k^T / sqrt(d) + M) (manualnet's way) against
keeping p from the forward, on a GPT's full training step (forward, loss, backward, AdamW).

The cached variant is written out here, for the comparison only: its forward forms p (no fused
scaled_dot_product_attention) and keeps it; its backward reads p instead of recomputing it. Both give the
same gradients (printed). Interleaved rounds in one process, medians, and each step's peak memory. Run
``python scripts/bench_attention.py [--threads N]``.
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
from manualnet.nn.pieces import pieces_along  # noqa: E402


def attend_keeping_p(self, q, k, v):
    """o = p @ v with p formed and kept for backward (no dropout)."""
    self.kept_p = self.probabilities(q, k)
    o = self.kept_p @ v
    return o.view(-1, self.num_heads, *o.shape[1:]), None


def backward_from_kept_p(self, dy):
    """CausalSelfAttention.backward, with the forward's p read instead of recomputed."""
    q, k, v, _, heads = self.take_cache()
    p_all, self.kept_p = self.kept_p, None
    dheads = self.proj.backward(self.resid_drop.backward(dy))
    do = self.split_out(dheads)
    rowdot = (dheads * heads).view(*dheads.shape[:2], self.num_heads, -1).sum(-1)
    rowdot = rowdot.transpose(1, 2).reshape(-1, rowdot.shape[1], 1)
    dqkv = torch.empty((3, *q.shape), dtype=q.dtype, device=q.device)
    for h in pieces_along(q.shape[0], q.shape[1] * q.shape[1]):
        p, (dq, dk, dv) = p_all[h], dqkv[:, h]
        torch.bmm(p.transpose(-2, -1), do[h], out=dv)
        ds = (do[h] @ v[h].transpose(-2, -1)).sub_(rowdot[h]).mul_(p)
        torch.bmm(ds, k[h], out=dq).mul_(self.scale)
        torch.bmm(ds.transpose(-2, -1), q[h], out=dk)
    return self.qkv.backward(self.merge_qkv(dqkv, dy.shape))


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
        block.attn.backward = types.MethodType(backward_from_kept_p, block.attn)
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
