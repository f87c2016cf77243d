#!/usr/bin/env python3
"""Conv rows of the benchmark: a conv net's whole training step by hand against torch.nn + autograd.

Two nets: the digits CNN of configs/cnn_digits.yaml (without its Dropout, whose masks the two sides would
draw differently) at batch 64 on (1, 8, 8) images, and a LeNet-size net (conv 6@5x5, pool, conv 16@5x5, pool,
120-84-10) at batch 128 on (1, 28, 28) images. Each step: zero_grad, forward, CrossEntropy, backward (no
gradient for the input images, as autograd skips them), SGD with momentum. Interleaved rounds, medians, as
``scripts/bench.py`` times the MLPs; peak memory is what the step allocates beyond what it started with plus
what both sides keep between steps (parameters, gradients, momentum buffers); see ``bench.py``'s
``peak_step_memory`` for why autograd's is a range.

A third row per net runs the same step with Conv2d's backward written the other way, by unfold (im2col)
and matrix products, ``UnfoldConv2d`` below: the library keeps the faster formulation.

Run ``python scripts/bench.py --conv [--rounds N] [--threads T] [--json FILE]``.
"""

import argparse
import json
import runpy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import manualnet as mn
from manualnet.optim import SGD

BENCH = runpy.run_path(str(Path(__file__).resolve().with_name("bench.py")), run_name="bench_conv_helpers")
LR, MOMENTUM = 0.01, 0.9
NETS = {"cnn_digits": ((1, 8, 8), 64), "lenet": ((1, 28, 28), 128)}


class UnfoldConv2d(mn.Conv2d):
    """Conv2d with the im2col backward: cols = unfold(x) (N, C*kh*kw, L), per group dW = dy @ cols^T and
    dcols = W^T @ dy, dx = fold(dcols) (the sum of each column's patch back into place)."""

    def _weight_grad(self, x, dy):
        n, g = x.shape[0], self.groups
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        cols = cols.view(n, g, -1, cols.shape[-1])                         # (N, G, C/G*kh*kw, L)
        dy_g = dy.reshape(n, g, self.out_channels // g, -1)                # (N, G, O/G, L)
        return torch.einsum("ngol,ngkl->gok", dy_g, cols).reshape(self.weight.shape)

    def _input_grad(self, x_shape, dy):
        n, g = x_shape[0], self.groups
        w = self.weight.reshape(g, self.out_channels // g, -1)             # (G, O/G, C/G*kh*kw)
        dcols = torch.einsum("gok,ngol->ngkl", w, dy.reshape(n, g, self.out_channels // g, -1))
        return F.fold(dcols.reshape(n, -1, dcols.shape[-1]), x_shape[2:], self.kernel_size, self.dilation,
                      self.padding, self.stride)


def layers(name, conv):
    """The net's manualnet layers, convolutions of class ``conv``."""
    if name == "cnn_digits":
        return [conv(1, 32, 3, padding=1, bias=False), mn.BatchNorm2d(32), mn.ReLU(), mn.MaxPool2d(2),
                conv(32, 64, 3, padding=1, bias=False), mn.BatchNorm2d(64), mn.ReLU(), mn.MaxPool2d(2),
                mn.Flatten(), mn.Linear(256, 10)]
    return [conv(1, 6, 5, padding=2), mn.ReLU(), mn.MaxPool2d(2), conv(6, 16, 5), mn.ReLU(), mn.MaxPool2d(2),
            mn.Flatten(), mn.Linear(400, 120), mn.ReLU(), mn.Linear(120, 84), mn.ReLU(), mn.Linear(84, 10)]


TORCH_TWIN = {
    mn.Conv2d: lambda m: torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                         m.dilation, m.groups, bias=m.bias is not None),
    mn.BatchNorm2d: lambda m: torch.nn.BatchNorm2d(m.num_features), mn.ReLU: lambda m: torch.nn.ReLU(),
    mn.MaxPool2d: lambda m: torch.nn.MaxPool2d(m.kernel_size, m.stride), mn.Flatten: lambda m: torch.nn.Flatten(),
    mn.Linear: lambda m: torch.nn.Linear(m.in_features, m.out_features),
}


def build_pair(name, conv=mn.Conv2d, seed=0):
    """A manualnet net (first conv skipping dx) and the same net in torch.nn with the same state dict."""
    torch.manual_seed(seed)
    ours = mn.Sequential(*layers(name, conv))
    ours[0].needs_input_grad = False
    theirs = torch.nn.Sequential(*[TORCH_TWIN[next(c for c in TORCH_TWIN if isinstance(m, c))](m) for m in ours])
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def step_functions(name):
    """({"manualnet": fn, "unfold": fn, "autograd": fn}, resident_bytes) on one batch of random images."""
    shape, batch = NETS[name]
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    ours, theirs = build_pair(name)
    unfold, _ = build_pair(name, UnfoldConv2d)
    functions, kept = {}, {}
    for label, model in (("manualnet", ours), ("unfold", unfold)):
        functions[label], kept[label] = manual_step(model, x, t)
    torch_optimizer = torch.optim.SGD(theirs.parameters(), lr=LR, momentum=MOMENTUM)

    def autograd_step():
        torch_optimizer.zero_grad()
        F.cross_entropy(theirs(x), t).backward()
        torch_optimizer.step()

    functions["autograd"] = autograd_step

    def resident_bytes():
        ag = [*theirs.parameters(), *(p.grad for p in theirs.parameters() if p.grad is not None),
              *(s for st in torch_optimizer.state.values() for s in st.values() if torch.is_tensor(s))]
        return {"manualnet": kept["manualnet"](), "unfold": kept["unfold"](), "autograd": _nbytes(ag)}

    return functions, resident_bytes


def manual_step(model, x, t):
    """The trainer's step on ``model`` (zero_grad, forward, loss, backward, SGD), and what it keeps."""
    loss, optimizer = mn.CrossEntropyLoss(), SGD(model.named_parameters(), lr=LR, momentum=MOMENTUM)

    def resident():
        params = list(model.parameters())
        state = [t for group in optimizer.param_groups for ts in (group.state or {}).values() for t in ts]
        state += [t for group in optimizer.param_groups for t in group.scratch or []]
        return _nbytes([*params, *(p.grad for p in params if p.grad is not None), *state])

    return BENCH["idiomatic_step"](model, loss, optimizer, x, t), resident


def _nbytes(tensors):
    """Bytes of distinct storages (a flat buffer and its per-parameter views count once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def bench_net(name, rounds):
    functions, resident_bytes = step_functions(name)
    seconds = BENCH["time_interleaved"](functions, torch.device("cpu"), rounds)
    resident = resident_bytes()
    peaks = {k: [resident[k] + b for b in BENCH["peak_step_memory"](fn, torch.device("cpu"))]
             for k, fn in functions.items()}
    shape, batch = NETS[name]
    return {"net": name, "input": "x".join(map(str, shape)), "batch": batch,
            **{f"{k}_steps_per_s": 1 / s for k, s in seconds.items()},
            "ratio_vs_autograd": seconds["autograd"] / seconds["manualnet"],
            "unfold_ratio_vs_autograd": seconds["autograd"] / seconds["unfold"],
            **{f"{k}_peak_bytes": high for k, (_, high) in peaks.items()},
            "autograd_peak_bytes_low": peaks["autograd"][0]}


def format_rows(rows):
    lines = [f"{'net':<11}{'input':<9}{'batch':>6}{'manualnet/s':>13}{'unfold/s':>10}{'autograd/s':>12}"
             f"{'ratio':>7}{'unfold':>8}{'peak MB (mn / unfold / ag low-high)':>38}"]
    for r in rows:
        lines.append(f"{r['net']:<11}{r['input']:<9}{r['batch']:>6}{r['manualnet_steps_per_s']:>13.1f}"
                     f"{r['unfold_steps_per_s']:>10.1f}{r['autograd_steps_per_s']:>12.1f}"
                     f"{r['ratio_vs_autograd']:>7.2f}{r['unfold_ratio_vs_autograd']:>8.2f}"
                     f"{r['manualnet_peak_bytes'] / 2**20:>12.2f} / {r['unfold_peak_bytes'] / 2**20:.2f} / "
                     f"{r['autograd_peak_bytes_low'] / 2**20:.2f}-{r['autograd_peak_bytes'] / 2**20:.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.py --conv", description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="cnn_digits,lenet", help=f"comma-separated: {', '.join(NETS)}")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--json", metavar="FILE", help="write the rows here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    if any(n not in NETS for n in names):
        print(f"bench: error: unknown net in {args.nets!r}; choose from {', '.join(NETS)}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"manualnet conv bench: torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, float32, "
          f"median of {args.rounds} interleaved rounds")
    rows = [bench_net(name, args.rounds) for name in names]
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
