"""Check gradients derived by hand for any function written with torch ops, the way the notebooks do.

``fn(**inputs)`` returns a dict of named tensors, its intermediates and its output ``out``; ``manual`` holds
the user's d L/d name for some of those names and of the inputs', where L = sum(upstream * out): the
vector-Jacobian product with ``upstream`` (the seeds' ``y.backward(gradients)``), ones by default (a
non-scalar ``out`` is summed). ``compare`` checks them against autograd, ``finite_differences`` the
inputs' against central differences, printing its table. Integer inputs stay integer (they may be indices or
labels), so they have no gradient: cast the ones that hold numbers to float first, ``x.double()``.
"""

import dataclasses
import html

import torch

from manualnet.errors import LayerError
from manualnet.registry import closest
from manualnet.verify import finite_diff
from manualnet.verify.report import FINITE_DIFF, Tolerance, compare_tensors, html_table, verdict


@dataclasses.dataclass(repr=False)
class Report:
    """The rows of a ``compare``. ``str(report)``, and ``repr(report)`` (what a notebook cell shows), is the
    table name | shape | exact | approximate | maxdiff, then the verdict."""

    rows: list

    @property
    def ok(self):
        return bool(self.rows) and all(row.passed for row in self.rows)

    def __str__(self):
        header, body = self._table()
        return _aligned([header, *body]) + "\n" + verdict(self.rows)

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        """The same table as HTML, for Jupyter."""
        return html_table(*self._table()) + f"<p>{html.escape(verdict(self.rows))}</p>"

    def _table(self):
        header = ("name", "shape", "exact", "approximate", "maxdiff")
        return header, [(row.tensor, "x".join(map(str, row.shape)) or "()", str(row.exact), str(row.passed),
                         f"{row.max_abs_diff:.3g}" + (f"  ({row.note})" if row.note else "")) for row in self.rows]


@dataclasses.dataclass(repr=False)
class FiniteDiffReport(Report):
    """The rows of ``finite_differences`` and every checked coordinate (name, index, analytic, numeric);
    ``str`` and ``repr`` are the analytic | numeric | difference table, one line per coordinate."""

    coordinates: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)

    def _table(self):
        header = ("name", "index", "analytic", "numeric", "difference")
        return header, [(name, str(index), f"{a:.10g}", f"{n:.10g}", f"{a - n:.3g}")
                        for name, index, a, n in self.coordinates]

    def __str__(self):
        header, body = self._table()
        lines = [header, *body]
        extra = [f"{row.tensor}: {row.note}" for row in self.rows if row.note]
        if self.skipped:
            names = ", ".join(self.skipped)
            extra.append(f"skipped (values inside fn, not inputs: finite differences perturb inputs only; "
                         f"compare checks them): {names}")
        return "\n".join([_aligned(lines), *extra, verdict(self.rows)])


def compare(fn, inputs, manual, output="out", upstream=None, *, rtol=1e-5, atol=1e-8):
    """Each ``manual[name]`` against autograd's d L/d name, L = sum(upstream * out), one row each.

    Autograd runs in the dtype of the manual gradient, on copies of ``inputs`` cast to it, with every
    intermediate's gradient retained: a float32 gradient (the notebooks' default) is compared with what
    PyTorch computes in float32, so "exact" (``torch.equal``) means bit-identical to autograd, as in the
    notebooks' ``cmp``; a float64 gradient or a Python number with autograd in float64. "approximate" is
    ``torch.allclose(manual, autograd, rtol, atol)``, the notebooks' test, and decides the row; "maxdiff" is
    max|manual - autograd|.
    """
    manual = {name: _as_tensor(grad) for name, grad in manual.items()}
    graphs = {dtype: _autograd(fn, inputs, output, dtype, upstream)
              for dtype in dict.fromkeys(g.dtype for g in manual.values())}
    tolerance, rows = Tolerance(rtol=rtol, atol=atol), []
    for name, grad in manual.items():
        expected = _gradient(graphs[grad.dtype], name, output)
        rows.append(compare_tensors(grad.to(expected.device), expected, tolerance, index=None, layer="",
                                    tensor=name, method="autograd"))
    return Report(rows)


def finite_differences(fn, inputs, manual, output="out", upstream=None, h=finite_diff.H, *, seed=0,
                       quiet=False):
    """Each ``manual[name]`` of an input against central differences of sum(upstream * fn(**inputs)[output])
    in float64 (upstream: ones by default) with step ``h``: all coordinates up to 10,000 elements, a seeded
    sample beyond; rule |a - n| <= 1e-5 + 1e-3|n|. Prints the table (analytic | numeric | difference per
    coordinate, then the verdict) unless ``quiet``, and returns it as a FiniteDiffReport. Names of
    intermediates are listed as skipped."""
    tensors = {name: _leaf(value, torch.float64, grad=False) for name, value in inputs.items()}
    known = None  # fn's values, computed once if a manual gradient names something other than an input
    generator, rows, coordinates, skipped = torch.Generator().manual_seed(seed), [], [], []

    def objective():
        with torch.no_grad():
            out = _call(fn, tensors, output)[output]
            return float((out * _upstream(upstream, out)).sum())

    for name, grad in manual.items():
        if name not in tensors:  # an intermediate (checked to be one of fn's values) or a misspelling
            known = _call(fn, tensors, output) if known is None else known
            _lookup({**known, **tensors}, name, output, "finite_differences")
            skipped.append(name)
            continue
        tensor = _differentiable(tensors[name], name, "finite_differences")
        analytic = _as_tensor(grad).to(device=tensor.device, dtype=torch.float64)
        row, checked = finite_diff.checked_row(objective, tensor, analytic, generator, h, index=None, layer="",
                                               tensor=name, method="finite-diff")
        if checked is None:
            rows.append(row)
            continue
        flat, picked, numeric = checked
        if not row.passed:
            row.note = "; ".join(filter(None, [row.note, _kink(objective, tensor, name, flat, picked, numeric)]))
        rows.append(row)
        coordinates += [(name, tuple(int(i) for i in torch.unravel_index(torch.tensor(f), tensor.shape)), a, n)
                        for f, a, n in zip(flat.tolist(), picked.tolist(), numeric.tolist(), strict=True)]
    report = FiniteDiffReport(rows, coordinates, skipped)
    if not quiet:
        print(report)
    return report


def _kink(objective, tensor, name, flat, analytic, numeric):
    """Where a failing coordinate sits on a kink of the function (its slopes from the left and the right
    differ), what they are: there the derivative does not exist, and any value between them is a
    subgradient; "" when none does."""
    for f, a, n in zip(flat.tolist(), analytic.tolist(), numeric.tolist(), strict=True):
        if abs(a - n) <= FINITE_DIFF.atol + FINITE_DIFF.rtol * abs(n):
            continue
        left, right = finite_diff.one_sided_slopes(objective, tensor, f)
        if abs(left - right) > 1e-3 * (1 + abs(left) + abs(right)):
            where = tuple(int(i) for i in torch.unravel_index(torch.tensor(f), tensor.shape))
            between = min(left, right) - 1e-6 <= a <= max(left, right) + 1e-6
            return (f"not differentiable at {name}{list(where)}: its slope is {left:.6g} from the left, {right:.6g} "
                    f"from the right{' (the manual value lies between: a subgradient)' if between else ''}")
    return ""


def _autograd(fn, inputs, output, dtype, upstream):
    """fn's values and its inputs (floating ones as ``dtype`` leaves), after ``out.backward(upstream)``."""
    with torch.inference_mode(False), torch.enable_grad():
        leaves = {name: _leaf(value, dtype, grad=True) for name, value in inputs.items()}
        values = _call(fn, leaves, output)
        for tensor in values.values():
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad and not tensor.is_leaf:
                tensor.retain_grad()
        out = values[output]
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise LayerError(f"compare: {output!r} does not depend on any floating input, so it has no gradient"
                             f"{_integer_hint(leaves)}")
        out.backward(_upstream(upstream, out))
    return {**values, **leaves}


def _upstream(upstream, out):
    """dL/d out: ones, or the given gradient (a tensor or number) in out's dtype; its shape must be out's."""
    if upstream is None:
        return torch.ones_like(out)
    grad = torch.as_tensor(upstream, device=out.device).to(out.dtype)
    if grad.shape != out.shape:
        raise LayerError(f"compare: upstream has shape {tuple(grad.shape)}, the output has {tuple(out.shape)}; "
                         "they must match")
    return grad


def _gradient(known, name, output):
    """autograd's d out/d name (zeros where out does not depend on it)."""
    tensor = _differentiable(_lookup(known, name, output, "compare"), name, "compare")
    if not tensor.requires_grad:
        raise LayerError(f"compare: {name!r} does not depend on the inputs, so autograd has no gradient for it")
    return (tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)).detach()


def _differentiable(tensor, name, who):
    if not isinstance(tensor, torch.Tensor):
        raise LayerError(f"{who}: {name!r} is a {type(tensor).__name__}, not a tensor, so it has no gradient")
    if not tensor.is_floating_point():
        raise LayerError(f"{who}: {name!r} is an integer tensor ({tensor.dtype}), which has no gradient; if it "
                         f"holds numbers, cast it to float: {name}.double()")
    return tensor


def _integer_hint(leaves):
    integer = [name for name, t in leaves.items() if not t.is_floating_point()]
    if not integer:
        return " (compute it from the inputs with torch ops: no .item(), numpy or .detach() on the way)"
    return (f": {', '.join(integer)} {'is an integer tensor' if len(integer) == 1 else 'are integer tensors'}; "
            "cast the inputs that hold numbers to float (x.double()): integer inputs stay as they are, since "
            "they may be indices or labels")


def _leaf(value, dtype, grad):
    """A copy of an input: a floating tensor or a number as ``dtype`` (requiring grad if ``grad``), an integer
    tensor (indices, labels) as it is."""
    if isinstance(value, torch.Tensor) and not value.is_floating_point():
        return value.detach().clone()
    return torch.as_tensor(value).detach().to(dtype).clone().requires_grad_(grad)


def _as_tensor(grad):
    """The user's gradient as a tensor: a floating tensor as it is, an integer one or a number as float64."""
    if isinstance(grad, torch.Tensor) and grad.is_floating_point():
        return grad.detach()
    return torch.as_tensor(grad).detach().to(torch.float64)


def _call(fn, tensors, output):
    values = fn(**tensors)
    if not isinstance(values, dict) or output not in values:
        got = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise LayerError(f"compare: fn must return a dict of named tensors including {output!r}, got {got}")
    return values


def _lookup(known, name, output, who):
    if name not in known:
        raise LayerError(f"{who}: manual gradient {name!r} names no input or value of fn{closest(name, known)}; "
                         f"known: {', '.join(sorted(known))} (the output is {output!r})")
    return known[name]


def _aligned(lines):
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    padded = (" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(line.rstrip() for line in padded)
