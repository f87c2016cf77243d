"""Verification of hand-written gradients: the one place in manualnet where autograd runs.

``check_module`` (``check_layer`` for one input), ``check_loss`` and ``check_model`` compare a module's, a
loss's or a whole model's manual backward with autograd on its reference (and, with ``fd=True``, with finite
differences) and return Rows;
``format_table(rows)`` shows them with a verdict. ``compare`` and ``finite_differences`` check gradients
derived by hand for any function written with torch ops, as in the backprop exercises.
"""

from manualnet.verify.compare import FiniteDiffReport, Report, compare, finite_differences
from manualnet.verify.engine import check_layer, check_loss, check_model, check_module
from manualnet.verify.reference import reference_of
from manualnet.verify.report import FINITE_DIFF, Row, Rows, Tolerance, all_passed, format_table, tolerance_for, verdict

__all__ = [
    "FINITE_DIFF", "FiniteDiffReport", "Report", "Row", "Rows", "Tolerance", "all_passed", "check_layer", "check_loss",
    "check_model", "check_module", "compare", "finite_differences", "format_table", "reference_of", "tolerance_for",
    "verdict",
]
