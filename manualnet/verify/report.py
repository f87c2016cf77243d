"""One compared tensor per Row, the tolerance that judges it, and the table that shows the rows.

Rows are plain dataclasses: ``row_as_json(row)`` is ``dataclasses.asdict(row)`` ready for a strict
``json.dumps``, so a CLI, a log file or a training audit can store them as they are.
"""

import dataclasses
import html
import math

import torch

# torch.testing.assert_close's defaults (rtol, atol) per dtype.
TESTING_DEFAULTS = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}
FLOAT64_MAX_REL_ERR = 1e-10


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Either a bound on the max relative error, max|a - b| / max|b| <= ``rel``, or torch.allclose's rule,
    |a - b| <= atol + rtol |b| elementwise (``rel`` None)."""

    rel: float | None = None
    rtol: float = 0.0
    atol: float = 0.0
    label: str = ""

    def passes(self, actual, expected, max_rel_err):
        if self.rel is not None:
            return max_rel_err <= self.rel
        return bool(torch.allclose(actual, expected, rtol=self.rtol, atol=self.atol))

    def __str__(self):
        if self.label:
            return self.label
        if self.rel is not None:
            return f"rel err <= {self.rel:.0e}"
        return f"allclose({self.rtol:.2g}, {self.atol:.2g})"


# gradcheck's rule for analytic (a) against numeric (n) derivatives.
FINITE_DIFF = Tolerance(rtol=1e-3, atol=1e-5, label="|a-n| <= 1e-5 + 1e-3|n|")


def tolerance_for(dtype, tol=None):
    """The Tolerance a check at ``dtype`` uses: ``tol`` a Tolerance, a float (max relative error) or an
    ``(rtol, atol)`` pair; by default max relative error <= 1e-10 in float64, else torch.testing's allclose."""
    if isinstance(tol, Tolerance):
        return tol
    if isinstance(tol, (int, float)):
        return Tolerance(rel=float(tol))
    if tol is not None:
        rtol, atol = tol
        return Tolerance(rtol=rtol, atol=atol)
    if dtype == torch.float64:
        return Tolerance(rel=FLOAT64_MAX_REL_ERR)
    rtol, atol = TESTING_DEFAULTS.get(dtype, TESTING_DEFAULTS[torch.float32])
    return Tolerance(rtol=rtol, atol=atol)


@dataclasses.dataclass
class Row:
    """One tensor of a manual computation compared with its reference.

    ``index`` is the module's path in the model (``"0"``, ``"1.fc1"``, ``"loss"``; None for a lone module or
    the whole model), ``layer`` its
    description, ``tensor`` the compared tensor ("y", "dx", "dweight", "loss", "dpred", ...), ``method``
    "autograd", "finite-diff" or "accumulate". Relative error is max|a - b| / max(max|b|, tiny). A ``skipped``
    row stands for something that could not be checked at all (``note`` says why): it neither passes nor
    fails, and the verdict lists it.
    """

    index: str | int | None
    layer: str
    tensor: str
    shape: tuple
    exact: bool
    allclose: bool
    max_abs_diff: float
    max_rel_err: float
    tolerance: str
    passed: bool
    method: str
    note: str = ""
    skipped: bool = False


def compare_tensors(actual, expected, tolerance, *, index, layer, tensor, method, note=""):
    """The Row for manual ``actual`` against reference ``expected`` (missing, mis-shaped or mis-typed fails)."""
    label = dict(index=index, layer=layer, tensor=tensor, method=method, note=note)
    problem = mismatch(actual, expected)
    if problem:
        return failed_row(problem, tolerance, shape=tuple(expected.shape), **label)
    a, b = actual.detach(), expected.detach()
    abs_diff = _max_abs_diff(a, b)
    finite_b = b[torch.isfinite(b)]
    scale = finite_b.abs().max().item() if finite_b.numel() else 0.0
    rel_err = abs_diff / max(scale, torch.finfo(b.dtype).tiny) if abs_diff else 0.0
    rtol, atol = (tolerance.rtol, tolerance.atol) if tolerance.rel is None else TESTING_DEFAULTS.get(
        b.dtype, TESTING_DEFAULTS[torch.float32])
    return Row(**label, shape=tuple(b.shape), exact=torch.equal(a, b),
               allclose=bool(torch.allclose(a, b, rtol=rtol, atol=atol)), max_abs_diff=abs_diff,
               max_rel_err=rel_err, tolerance=str(tolerance), passed=tolerance.passes(a, b, rel_err))


def failed_row(problem, tolerance, *, note="", **label):
    """A failing Row for a value that cannot be compared at all (``problem`` says why)."""
    return Row(**label, exact=False, allclose=False, max_abs_diff=math.inf, max_rel_err=math.inf,
               tolerance=str(tolerance), passed=False, note="; ".join(filter(None, [problem, note])))


def skipped_row(layer, reason):
    """The Row for a layer or loss that could not be checked, and why."""
    return Row(index=None, layer=layer, tensor="-", shape=(), exact=False, allclose=False, max_abs_diff=math.nan,
               max_rel_err=math.nan, tolerance="-", passed=False, method="-", note=reason, skipped=True)


def row_as_json(row):
    """``dataclasses.asdict(row)`` as strict JSON allows it: a max abs diff or max rel err that is infinite or
    NaN (there was nothing to compare) becomes null, and the note says what it was."""
    data = dataclasses.asdict(row)
    odd = []
    for key in ("max_abs_diff", "max_rel_err"):
        if not math.isfinite(data[key]):
            odd.append(f"{key} {data[key]}")
            data[key] = None
    if odd and not row.skipped:
        data["note"] = "; ".join(filter(None, [row.note, f"{', '.join(odd)} (null in JSON)"]))
    return data


def mismatch(actual, expected):
    """Why ``actual`` cannot be compared with ``expected`` entry by entry, or "" if it can."""
    if actual is None:
        return "no manual value (None)"
    if not isinstance(actual, torch.Tensor):
        return f"manual value is a {type(actual).__name__}, not a tensor"
    if actual.shape != expected.shape:
        return f"manual shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"manual dtype {actual.dtype}, expected {expected.dtype}"
    if actual.device != expected.device:
        return f"manual device {actual.device}, expected {expected.device}"
    return ""


def _max_abs_diff(a, b):
    """max|a - b|, where equal entries (infinities too) differ by 0 and a NaN anywhere else counts as inf."""
    if a.numel() == 0:
        return 0.0
    diff = torch.where(a == b, torch.zeros_like(a), (a - b).abs())
    return diff.nan_to_num(nan=math.inf).max().item()


# -- the table ---------------------------------------------------------------------------------------------

COLUMNS = ("layer", "tensor", "check", "shape", "exact", "allclose", "max abs diff", "max rel err", "tolerance",
           "result")


def all_passed(rows):
    """True when something was checked and every check passed (skipped rows aside)."""
    checked = [row for row in rows if not row.skipped]
    return bool(checked) and all(row.passed for row in checked)


def verdict(rows):
    """One line: PASS with the count, or FAIL naming each failing tensor; then what was skipped, if anything."""
    checked = [row for row in rows if not row.skipped]
    failed = [row for row in checked if not row.passed]
    skipped = [row.layer for row in rows if row.skipped]
    if not checked:
        line = "FAIL: nothing was checked"
    elif not failed:
        line = f"PASS: all {len(checked)} checks passed"
    else:
        names = ", ".join(f"{_where(row)} {row.tensor} ({row.method})".lstrip() for row in failed)
        line = f"FAIL: {len(failed)} of {len(checked)} checks failed: {names}"
    return line + (f"; {len(skipped)} skipped: {', '.join(skipped)}" if skipped else "")


def format_table(rows):
    """An aligned text table of the rows, a note column when any row has a note, then the verdict."""
    columns = COLUMNS + (("note",) if any(row.note for row in rows) else ())
    cells = [columns] + [_cells(row)[:len(columns)] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines + [verdict(rows)])


def _cells(row):
    if row.skipped:
        return (_where(row), "-", "-", "-", "-", "-", "-", "-", "-", "SKIPPED", row.note)
    return (_where(row), row.tensor, row.method, "x".join(map(str, row.shape)) or "()", str(row.exact),
            str(row.allclose), f"{row.max_abs_diff:.2e}", f"{row.max_rel_err:.2e}", row.tolerance,
            "PASS" if row.passed else "FAIL", row.note)


def _where(row):
    return row.layer if row.index is None else f"{row.index}:{row.layer}"


def html_table(header, rows):
    """An HTML table of strings: what Jupyter shows for a report (``_repr_html_``)."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Rows(list):
    """The rows a check returns: a list of Row that prints as ``format_table`` in a terminal and as an HTML
    table in Jupyter."""

    def __str__(self):
        return format_table(self)

    __repr__ = __str__

    def __add__(self, other):
        return Rows(list.__add__(self, other))

    def _repr_html_(self):
        columns = COLUMNS + (("note",) if any(row.note for row in self) else ())
        return html_table(columns, [_cells(row)[:len(columns)] for row in self]) + \
            f"<p>{html.escape(verdict(self))}</p>"
