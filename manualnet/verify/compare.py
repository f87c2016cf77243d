"""Check gradients derived by hand for any function written with torch ops, the way the notebooks do.

``fn(**inputs)`` returns a dict of named tensors, its intermediates and its output ``out``; ``manual`` holds
the user's d out/d name for some of those names and of the inputs' (a non-scalar ``out`` is summed, i.e.
gets ones as its upstream gradient). ``compare`` checks them against autograd, ``finite_differences`` the
inputs' against central differences.
"""

import dataclasses

import torch

from manualnet.errors import LayerError
from manualnet.registry import closest
from manualnet.verify import finite_diff
from manualnet.verify.report import FINITE_DIFF, Tolerance, compare_tensors, failed_row, mismatch, verdict


@dataclasses.dataclass
class Report:
    """The rows of a ``compare``; ``str(report)`` is the table name | shape | exact | approximate | maxdiff."""

    rows: list

    @property
    def ok(self):
        return bool(self.rows) and all(row.passed for row in self.rows)

    def __str__(self):
        header = ("name", "shape", "exact", "approximate", "maxdiff")
        lines = [header] + [(row.tensor, "x".join(map(str, row.shape)) or "()", str(row.exact), str(row.passed),
                             f"{row.max_abs_diff:.3g}" + (f"  ({row.note})" if row.note else "")) for row in self.rows]
        return _aligned(lines) + "\n" + verdict(self.rows)


@dataclasses.dataclass
class FiniteDiffReport(Report):
    """The rows of ``finite_differences`` and every checked coordinate (name, index, analytic, numeric);
    ``str(report)`` is the analytic | numeric | difference table, one line per coordinate."""

    coordinates: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)

    def __str__(self):
        header = ("name", "index", "analytic", "numeric", "difference")
        lines = [header] + [(name, str(index), f"{a:.10g}", f"{n:.10g}", f"{a - n:.3g}")
                            for name, index, a, n in self.coordinates]
        extra = [f"{row.tensor}: {row.note}" for row in self.rows if row.note]
        if self.skipped:
            names = ", ".join(self.skipped)
            extra.append(f"skipped (not floating inputs of fn; compare checks intermediates): {names}")
        return "\n".join([_aligned(lines), *extra, verdict(self.rows)])


def compare(fn, inputs, manual, output="out", *, rtol=1e-5, atol=1e-8):
    """Each ``manual[name]`` against autograd's d out/d name, computed on float64 leaf copies of ``inputs``
    with every intermediate's gradient retained. "approximate" is ``torch.allclose(manual, autograd, rtol,
    atol)`` (the notebooks' test); "exact" is ``torch.equal`` after casting the manual value to float64."""
    with torch.inference_mode(False), torch.enable_grad():
        leaves = {name: _as_float64(value) for name, value in inputs.items()}
        for leaf in leaves.values():
            leaf.requires_grad_(leaf.is_floating_point())
        values = _call(fn, leaves, output)
        for tensor in values.values():
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad and not tensor.is_leaf:
                tensor.retain_grad()
        out = values[output]
        if not out.requires_grad:
            raise LayerError(f"compare: {output!r} does not depend on any floating input, so it has no gradient")
        out.backward(torch.ones_like(out))
    known = {**values, **leaves}
    tolerance, rows = Tolerance(rtol=rtol, atol=atol), []
    for name, grad in manual.items():
        tensor = _lookup(known, name, output)
        if not isinstance(tensor, torch.Tensor) or not tensor.requires_grad:
            raise LayerError(f"compare: {name!r} does not depend on the inputs, so autograd has no gradient for it")
        expected = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
        rows.append(compare_tensors(_manual(grad, expected), expected.detach(), tolerance, index=None, layer="",
                                    tensor=name, method="autograd"))
    return Report(rows)


def finite_differences(fn, inputs, manual, output="out", h=finite_diff.H, *, seed=0):
    """Each ``manual[name]`` of an input against central differences of sum(fn(**inputs)[output]) in float64
    with step ``h``: all coordinates up to 10,000 elements, a seeded sample beyond; rule
    |a - n| <= 1e-5 + 1e-3|n|. Names of intermediates are listed as skipped."""
    tensors = {name: _as_float64(value) for name, value in inputs.items()}
    generator, rows, coordinates = torch.Generator().manual_seed(seed), [], []

    def objective():
        with torch.no_grad():
            return float(_call(fn, tensors, output)[output].sum())

    for name, grad in manual.items():
        if name not in tensors or not tensors[name].is_floating_point():
            continue
        tensor = tensors[name]
        flat = finite_diff.coordinates(tensor.numel(), generator)
        numeric = finite_diff.numeric_gradient(objective, tensor, flat, h)
        analytic = _manual(grad, tensor)
        where = dict(index=None, layer="", tensor=name, method="finite-diff")
        problem = mismatch(analytic, tensor)
        if problem:
            rows.append(failed_row(problem, FINITE_DIFF, shape=tuple(tensor.shape), **where))
            continue
        picked = analytic.reshape(-1)[flat].cpu()
        row = compare_tensors(picked, numeric, FINITE_DIFF, **where)
        row.shape = tuple(tensor.shape)
        rows.append(row)
        coordinates += [(name, tuple(int(i) for i in torch.unravel_index(torch.tensor(f), tensor.shape)), a, n)
                        for f, a, n in zip(flat.tolist(), picked.tolist(), numeric.tolist(), strict=True)]
    skipped = [name for name in manual if name not in tensors or not tensors[name].is_floating_point()]
    return FiniteDiffReport(rows, coordinates, skipped)


def _as_float64(value):
    """A float64 copy of a number or floating tensor; integer tensors (indices, labels) stay as they are."""
    if isinstance(value, torch.Tensor) and not value.is_floating_point():
        return value.detach().clone()
    return torch.as_tensor(value).detach().to(torch.float64).clone()


def _manual(grad, like):
    """The user's gradient as a float64 tensor on ``like``'s device (a float or a float32 tensor is fine)."""
    if isinstance(grad, torch.Tensor):
        return grad.detach().to(device=like.device, dtype=torch.float64)
    return torch.as_tensor(grad, dtype=torch.float64, device=like.device)


def _call(fn, tensors, output):
    values = fn(**tensors)
    if not isinstance(values, dict) or output not in values:
        got = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise LayerError(f"compare: fn must return a dict of named tensors including {output!r}, got {got}")
    return values


def _lookup(known, name, output):
    if name not in known:
        raise LayerError(f"compare: manual gradient {name!r} names no input or value of fn{closest(name, known)}; "
                         f"known: {', '.join(sorted(known))} (the output is {output!r})")
    return known[name]


def _aligned(lines):
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    padded = (" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(line.rstrip() for line in padded)
