"""The verify engine itself: compare / finite_differences on the notebooks' exercises, checks of layers users
write (no reference, random, wrong), and the rows, tolerances and table."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import manualnet as mn
from manualnet import LayerError, LeakyReLU, Linear, Module, ReLU
from manualnet.verify import (
    Row,
    Tolerance,
    all_passed,
    check_layer,
    check_model,
    compare,
    finite_differences,
    format_table,
    tolerance_for,
    verdict,
)
from manualnet.verify.finite_diff import FULL_LIMIT, SAMPLE, coordinates
from tests.conftest import randn


def practice_one(x, y):
    """f(x, y) = (x + sigmoid(y)) / (sigmoid(x) + (x + y)^2), broken into pieces as in the notebook."""
    sy = torch.sigmoid(y)
    num = x + sy
    sx = torch.sigmoid(x)
    xpy = x + y
    xpysqr = xpy ** 2
    den = sx + xpysqr
    invden = 1.0 / den
    return dict(sy=sy, num=num, sx=sx, xpy=xpy, xpysqr=xpysqr, den=den, invden=invden, out=num * invden)


def practice_one_backward(v):
    """The notebook's hand-derived backward pass, by the forward's names."""
    dnum = v["invden"]
    dinvden = v["num"]
    dden = -(1 / v["den"] ** 2) * dinvden
    dxpy = 2 * v["xpy"] * dden
    dx = dxpy + v["sx"] * (1 - v["sx"]) * dden + dnum
    dy = dxpy + v["sy"] * (1 - v["sy"]) * dnum
    return dict(x=dx, y=dy, num=dnum, invden=dinvden, den=dden, xpysqr=dden, sx=dden, xpy=dxpy, sy=dnum)


POINT = {"x": torch.tensor(2.0), "y": torch.tensor(-2.0)}


def test_correct_hand_derived_gradients_pass_with_the_notebooks_values():
    manual = practice_one_backward(practice_one(**{k: v.double() for k, v in POINT.items()}))
    assert manual["x"].item() == pytest.approx(0.8485, abs=5e-5)
    assert manual["y"].item() == pytest.approx(0.1192, abs=5e-5)
    report = compare(practice_one, POINT, manual)
    assert report.ok, str(report)
    assert [row.tensor for row in report.rows] == list(manual)
    assert max(row.max_abs_diff for row in report.rows) < 1e-15


def test_a_wrong_hand_derived_gradient_fails_and_is_named():
    manual = practice_one_backward(practice_one(**{k: v.double() for k, v in POINT.items()}))
    manual["x"] = manual["x"] - manual["num"]       # forgot the numerator's path into x
    report = compare(practice_one, POINT, manual)
    assert not report.ok
    assert [row.tensor for row in report.rows if not row.passed] == ["x"]
    text = str(report)
    assert [cell.strip() for cell in text.splitlines()[0].split("|")] == ["name", "shape", "exact", "approximate",
                                                                        "maxdiff"]
    assert text.endswith(f"FAIL: 1 of {len(manual)} checks failed: x (autograd)")


def test_finite_differences_print_analytic_numeric_and_difference(capsys):
    manual = practice_one_backward(practice_one(**{k: v.double() for k, v in POINT.items()}))
    report = finite_differences(practice_one, POINT, manual)
    assert report.ok, str(report)
    assert capsys.readouterr().out == str(report) + "\n"
    lines = str(report).splitlines()
    assert [cell.strip() for cell in lines[0].split("|")] == ["name", "index", "analytic", "numeric", "difference"]
    name, index, analytic, numeric, _ = (cell.strip() for cell in lines[1].split("|"))
    assert (name, index) == ("x", "()")
    assert float(numeric) == pytest.approx(0.848532355548892, abs=1e-9)
    assert float(analytic) == pytest.approx(float(numeric), abs=1e-9)
    assert "skipped (values inside fn, not inputs" in str(report) and report.skipped[:2] == ["num", "invden"]


def test_finite_differences_quiet_prints_nothing(capsys):
    report = finite_differences(practice_one, POINT, {"x": 0.8485323555, "y": 0.1192029220}, quiet=True)
    assert report.ok and capsys.readouterr().out == ""


def test_finite_differences_fail_a_wrong_gradient():
    report = finite_differences(practice_one, POINT, {"x": 0.8485323555 * 1.01, "y": 0.1192029220}, quiet=True)
    assert [row.passed for row in report.rows] == [False, True]


def test_a_notebook_cell_ending_in_compare_shows_the_table():
    manual = practice_one_backward(practice_one(**{k: v.double() for k, v in POINT.items()}))
    report = compare(practice_one, POINT, manual)
    fd = finite_differences(practice_one, POINT, {"x": manual["x"]}, quiet=True)
    for shown, header in ((report, "name shape exact approximate maxdiff"),
                          (fd, "name index analytic numeric difference")):
        assert repr(shown) == str(shown)
        assert " ".join(repr(shown).splitlines()[0].replace("|", " ").split()) == header


def mse_exercise(X, y, W, b):
    """The seed notebook's linear regression, node by node: loss = mean((y - (X W + b))^2)."""
    matmul = X @ W
    pred = matmul + b
    diff = y - pred
    diff2 = diff ** 2
    return dict(matmul=matmul, pred=pred, diff=diff, diff2=diff2, out=diff2.mean(0))


def mse_exercise_backward(X, y, W, b):
    v = mse_exercise(X, y, W, b)
    ddiff2 = torch.ones_like(v["diff"]) / v["diff"].shape[0]
    ddiff = 2 * v["diff"] * ddiff2
    dpred = -ddiff
    return dict(diff2=ddiff2, diff=ddiff, y=ddiff, pred=dpred, matmul=dpred, b=dpred.sum(0), X=dpred @ W.T,
                W=X.T @ dpred)


def test_a_float32_exercise_is_exact_where_float32_autograd_agrees_bit_for_bit():
    """As in the notebook: every float32 gradient equals what PyTorch computes in float32, so all are exact
    (against float64 autograd only two would be)."""
    g = torch.Generator().manual_seed(111111)
    inputs = {name: torch.randn(shape, generator=g) for name, shape in
              (("X", (10, 10)), ("y", (10, 1)), ("W", (10, 1)), ("b", (1,)))}
    manual = mse_exercise_backward(**inputs)
    report = compare(mse_exercise, inputs, manual)
    assert report.ok, str(report)
    assert [(row.tensor, row.exact, row.max_abs_diff) for row in report.rows] == [(name, True, 0.0) for name in manual]
    in_float64 = compare(mse_exercise, inputs, {name: grad.double() for name, grad in manual.items()})
    assert in_float64.ok and not all(row.exact for row in in_float64.rows)


def test_integer_inputs_that_hold_numbers_must_be_cast_and_the_error_says_so():
    gen = torch.Generator().manual_seed(42)
    T, X, W = (torch.randint(0, 4, shape, generator=gen) for shape in ((4, 2), (4, 3), (3, 2)))

    def f(X, W, T):
        Y = X.mm(W)
        return dict(Y=Y, out=(Y - T).pow(2).sum() / 2.0)

    with pytest.raises(LayerError, match=r"'out' does not depend on any floating input, so it has no gradient: X, "
                                         r"W, T are integer tensors; cast the inputs that hold numbers to float"):
        compare(f, {"X": X, "W": W, "T": T}, {"W": X.t().mm(X.mm(W) - T)})
    with pytest.raises(LayerError, match=r"^finite_differences: 'W' is an integer tensor \(torch.int64\), which "
                                         r"has no gradient; if it holds numbers, cast it to float: W.double\(\)"):
        finite_differences(f, {"X": X, "W": W, "T": T}, {"W": X.t().mm(X.mm(W) - T)})
    X, W, T = X.double(), W.double(), T.double()
    assert compare(f, {"X": X, "W": W, "T": T}, {"W": X.t().mm(X.mm(W) - T)}).ok


def test_integer_inputs_used_as_indices_stay_integer():
    def nll(logits, target):
        log_p = logits.log_softmax(1)
        return dict(log_p=log_p, out=-log_p[torch.arange(len(target)), target].mean())

    logits, target = randn((4, 3), 0), torch.tensor([0, 2, 1, 2])
    dlogits = (logits.softmax(1) - torch.nn.functional.one_hot(target, 3)) / 4
    assert compare(nll, {"logits": logits, "target": target}, {"logits": dlogits}).ok


def test_finite_differences_name_a_misspelled_input():
    with pytest.raises(LayerError, match=r"^finite_differences: manual gradient 'xx' names no input or value of fn "
                                         r"\(did you mean 'x'\?\)"):
        finite_differences(practice_one, POINT, {"xx": 1.0})


def test_a_gradient_of_the_wrong_shape_fails_even_when_it_broadcasts():
    def f(X, W, b):
        pred = X @ W + b
        return dict(pred=pred, out=pred.mean())

    X, W, b = randn((10, 4), 0), randn((4, 1), 1), randn((1,), 2)
    dpred = torch.full((10, 1), 0.1, dtype=torch.float64)
    manual = {"W": X.t() @ dpred, "b": dpred.sum(0, keepdim=True).reshape(1, 1), "pred": dpred}
    report = compare(f, {"X": X, "W": W, "b": b}, manual)
    assert [row.passed for row in report.rows] == [True, False, True]
    assert "manual shape (1, 1), expected (1,)" in str(report)


def test_a_misspelled_name_is_an_error_with_a_suggestion():
    with pytest.raises(LayerError, match=r"'nmu' names no input or value of fn \(did you mean 'num'\?\)"):
        compare(practice_one, POINT, {"nmu": 1.0})


def test_fn_must_return_a_dict_with_the_output():
    with pytest.raises(LayerError, match=r"fn must return a dict of named tensors including 'out', got \['y'\]"):
        compare(lambda x: {"y": x * 2}, {"x": 1.0}, {"x": 2.0})


# -- the engine on layers users write --------------------------------------------------------------------------

class Cube(Module):
    """y = x^3 (no reference: verify differentiates this forward itself)."""

    def forward(self, x):
        self.cache = x
        return x ** 3

    def backward(self, dy):
        x = self.take_cache()
        return dy * 3 * x ** 2                  # dx = dy * 3 x^2


class CubeWithWrongBackward(Cube):
    def backward(self, dy):
        x = self.take_cache()
        return dy * 2 * x ** 2


class NoisyScale(Module):
    """y = x * (1 + 0.1 z), z ~ N(0, 1) from the global RNG per forward: random, and no reference."""

    def forward(self, x):
        scale = 1 + 0.1 * torch.randn(x.shape, dtype=x.dtype)
        self.cache = scale
        return x * scale

    def backward(self, dy):
        return dy * self.take_cache()


class LinearForgettingBias(Linear):
    def backward(self, dy):
        dx = super().backward(dy)
        self.bias.grad.zero_()
        return dx


def test_user_layer_without_reference_is_checked_through_its_own_forward():
    rows = check_layer(Cube(), randn((3, 4), seed=0), fd=True)
    assert all_passed(rows), format_table(rows)


def test_user_layer_with_a_wrong_backward_fails_both_checks():
    rows = check_layer(CubeWithWrongBackward(), randn((3, 4), seed=0), fd=True)
    failed = {(row.tensor, row.method) for row in rows if not row.passed}
    assert failed == {("dx", "autograd"), ("dx", "finite-diff")}
    assert "FAIL: 2 of 3 checks failed" in format_table(rows)


def test_random_user_layer_is_replayed_from_the_same_rng_state():
    rows = check_layer(NoisyScale(), randn((3, 4), seed=0), fd=True)
    assert all_passed(rows), format_table(rows)


def test_a_missing_bias_gradient_is_caught_and_named():
    rows = check_layer(LinearForgettingBias(5, 3), randn((4, 5), seed=0), fd=True)
    assert {(row.tensor, row.method) for row in rows if not row.passed} == {  # (it zeroes .grad: no sum either)
        ("dbias", "autograd"), ("dbias", "finite-diff"), ("dbias accumulates", "accumulate")}


def test_a_backward_that_crashes_is_a_failed_check_not_an_abort():
    class Crashing(Cube):
        def backward(self, dy):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    rows = check_layer(Crashing(), randn((3, 4), seed=0), fd=True)
    assert [(row.tensor, row.method, row.passed) for row in rows] == [
        ("y", "autograd", True), ("dx", "autograd", False), ("dx", "finite-diff", False)]
    assert rows[1].note == "no manual value (None); backward raised RuntimeError: mat1 and mat2 shapes cannot be " \
                           "multiplied"


def test_checks_run_inside_inference_mode_and_no_grad():
    x = randn((4, 3), seed=0)
    with torch.inference_mode():
        rows = check_layer(Linear(3, 2), x, fd=True)
    with torch.no_grad():
        rows += check_layer(Linear(3, 2), x)
    assert all_passed(rows), format_table(rows)


def test_inputs_near_a_kink_are_moved_and_counted():
    x = randn((4, 5), seed=0)
    x[0, :3] = torch.tensor([0.0, 2e-6, -5e-6], dtype=torch.float64)
    for layer in (ReLU(), LeakyReLU(0.1)):
        rows = check_layer(layer, x, fd=True)
        fd_rows = [row for row in rows if row.method == "finite-diff"]
        assert all_passed(rows), format_table(rows)
        assert fd_rows[0].note == "3 input(s) within 1e-05 of the kink at 0 moved away"


# -- finite differences: which coordinates ----------------------------------------------------------------------

def test_all_coordinates_up_to_the_limit_and_a_seeded_sample_beyond():
    assert torch.equal(coordinates(FULL_LIMIT, torch.Generator()), torch.arange(FULL_LIMIT))
    sample = coordinates(FULL_LIMIT + 1, torch.Generator().manual_seed(4))
    assert len(sample) == SAMPLE >= 50 and len(set(sample.tolist())) == SAMPLE
    assert torch.equal(sample, coordinates(FULL_LIMIT + 1, torch.Generator().manual_seed(4)))


def test_big_parameters_are_sampled_and_say_so():
    layer = Linear(101, 100)                    # 10,100 weights: sampled; 100 biases: all
    rows = [row for row in check_layer(layer, randn((2, 101), 0), fd=True) if row.method == "finite-diff"]
    assert all_passed(rows), format_table(rows)
    notes = {row.tensor: row.note for row in rows}
    assert notes == {"dx": "", "dweight": f"{SAMPLE} of 10100 coordinates", "dbias": ""}


# -- rows, tolerances, table ------------------------------------------------------------------------------------

def test_rows_serialise_to_json():
    rows = check_layer(Linear(3, 2), randn((4, 3), 0), fd=True)
    data = json.loads(json.dumps([dataclasses.asdict(row) for row in rows]))
    assert data[2]["tensor"] == "dweight" and data[2]["shape"] == [2, 3] and data[2]["method"] == "autograd"
    assert {row["method"] for row in data} == {"autograd", "accumulate", "finite-diff"}


def test_default_tolerances_per_dtype():
    assert tolerance_for(torch.float64) == Tolerance(rel=1e-10)
    assert tolerance_for(torch.float32) == Tolerance(rtol=1.3e-6, atol=1e-5)
    assert tolerance_for(torch.float64, 1e-10) == Tolerance(rel=1e-10)
    assert tolerance_for(torch.float64, (1e-3, 1e-4)) == Tolerance(rtol=1e-3, atol=1e-4)


def test_relative_error_is_max_abs_diff_over_max_reference():
    class Doubled(Linear):
        def backward(self, dy):
            dx = super().backward(dy)
            self.bias.grad.mul_(1.5)
            return dx

    rows = check_layer(Doubled(3, 2), randn((4, 3), 0))
    dbias = next(row for row in rows if row.tensor == "dbias")
    assert dbias.max_rel_err == pytest.approx(0.5)
    assert not dbias.passed and not dbias.allclose and not dbias.exact


def test_missing_or_nan_gradients_fail():
    class NoBiasGradient(Linear):
        def backward(self, dy):
            dx = super().backward(dy)
            self.bias.grad = None
            return dx

    class NanInput(Linear):
        def backward(self, dy):
            return super().backward(dy) * math.nan

    rows = check_layer(NoBiasGradient(3, 2), randn((4, 3), 0)) + check_layer(NanInput(3, 2), randn((4, 3), 0))
    failed = [(row.tensor, row.note, row.max_abs_diff) for row in rows if not row.passed]
    assert failed == [("dbias", "no manual value (None)", math.inf), ("dx", "", math.inf)]


def test_table_has_the_columns_and_a_verdict():
    row = Row(index=2, layer="Linear(3->2)", tensor="dweight", shape=(2, 3), exact=False, allclose=True,
              max_abs_diff=1.5e-17, max_rel_err=3e-17, tolerance="rel err <= 1e-09", passed=True, method="autograd")
    bad = dataclasses.replace(row, tensor="dbias", shape=(2,), passed=False, max_rel_err=0.5, note="off")
    lines = format_table([row, bad]).splitlines()
    assert lines[0].split() == ["layer", "tensor", "check", "shape", "exact", "allclose", "max", "abs", "diff", "max",
                                "rel", "err", "tolerance", "result", "note"]
    assert lines[2].split() == ["2:Linear(3->2)", "dweight", "autograd", "2x3", "False", "True", "1.50e-17",
                                "3.00e-17", "rel", "err", "<=", "1e-09", "PASS"]
    assert lines[3].split()[-2:] == ["FAIL", "off"]
    assert lines[-1] == "FAIL: 1 of 2 checks failed: 2:Linear(3->2) dbias (autograd)"
    assert verdict([row]) == "PASS: all 1 checks passed"
    assert verdict([]) == "FAIL: nothing was checked" and not all_passed([])


# -- vector-Jacobian products, notebooks, awkward parameter names ------------------------------------------------

def test_compare_takes_an_upstream_gradient_like_y_backward_of_gradients():
    x, g = randn((3, 4), seed=0), randn((3, 4), seed=1)

    def fn(x):
        return {"out": torch.tanh(x)}

    right = g * (1 - torch.tanh(x) ** 2)
    assert compare(fn, {"x": x}, {"x": right}, upstream=g).ok
    assert not compare(fn, {"x": x}, {"x": 1 - torch.tanh(x) ** 2}, upstream=g).ok   # the vjp without g
    assert finite_differences(fn, {"x": x}, {"x": right}, upstream=g, quiet=True).ok
    with pytest.raises(LayerError, match=r"upstream has shape \(4,\), the output has \(3, 4\)"):
        compare(fn, {"x": x}, {"x": right}, upstream=torch.ones(4))


def test_reports_render_as_html_tables_in_jupyter_and_text_in_a_terminal():
    x = randn((2, 3), seed=0)
    report = compare(lambda x: {"out": x * x}, {"x": x}, {"x": 2 * x})
    rows = check_layer(Linear(3, 2).to(torch.float64), x)
    for shown in (report, rows):
        assert shown._repr_html_().startswith("<table>") and "PASS" in shown._repr_html_()
        assert "<table>" not in str(shown) and "PASS" in repr(shown)


def test_a_parameter_named_x_is_checked_beside_the_input_x():
    class ScaleByX(Module):
        def __init__(self):
            super().__init__()
            self.x = mn.Parameter(torch.tensor([1.5], dtype=torch.float64))

        def forward(self, x):
            self.cache = x
            return x * self.x

        def backward(self, dy):
            x = self.take_cache()
            self.x.grad += (dy * x).sum().reshape(1)
            return dy * self.x

    rows = check_layer(ScaleByX(), randn((3, 2), seed=0), fd=True)
    assert all_passed(rows), format_table(rows)
    assert {row.tensor for row in rows} >= {"dx", "d(x)"}


class LinearOverwritingGrad(Linear):
    def backward(self, dy):
        x = self.take_cache()
        self.weight.grad = dy.t() @ x        # = instead of +=: right from zero, wrong after another backward
        self.bias.grad += dy.sum(0)
        return dy @ self.weight


def test_a_backward_that_overwrites_grad_is_caught_by_check_module_alone():
    rows = check_layer(LinearOverwritingGrad(5, 3), randn((4, 5), seed=0))
    assert {(row.tensor, row.method) for row in rows if not row.passed} == {("dweight accumulates", "accumulate")}


class LinearFailingOnFilledGrad(Linear):
    def backward(self, dy):
        if self.weight.grad.abs().sum() > 0:
            raise RuntimeError("only starts from zero")
        return super().backward(dy)


def test_a_backward_that_fails_only_after_another_backward_fails_its_accumulates_rows():
    rows = check_layer(LinearFailingOnFilledGrad(5, 3), randn((4, 5), seed=0))
    failed = [row for row in rows if not row.passed]
    assert [(row.tensor, row.method) for row in failed] == [("dweight accumulates", "accumulate"),
                                                            ("dbias accumulates", "accumulate")]
    assert "backward raised RuntimeError: only starts from zero" in failed[0].note


class TanhByKernel(mn.Module):
    def forward(self, x):
        self.cache = torch.tanh(x)
        return self.cache

    def backward(self, dy):
        return torch.ops.aten.tanh_backward(dy, self.take_cache())      # torch's kernel, not the math


class TanhByAutogradGrad(mn.Module):
    def forward(self, x):
        self.cache = x
        return torch.tanh(x)

    def backward(self, dy):
        with torch.enable_grad():
            x = self.take_cache().detach().requires_grad_()
            return torch.autograd.grad(torch.tanh(x), x, dy)[0]


class TanhByTensorBackward(TanhByAutogradGrad):
    def backward(self, dy):
        with torch.enable_grad():
            x = self.take_cache().detach().requires_grad_()
            torch.tanh(x).backward(dy)
            return x.grad


class LeakyInPlace(mn.Module):
    def forward(self, x):
        self.cache = x > 0
        x[x < 0] *= 0.1                                                  # the caller's batch, changed
        return x

    def backward(self, dy):
        return torch.where(self.take_cache(), dy, 0.1 * dy)

    def reference(self, x):
        return torch.nn.functional.leaky_relu(x, 0.1)


class ReluChangingDy(mn.Module):
    def forward(self, x):
        self.cache = x > 0
        return torch.relu(x)

    def backward(self, dy):
        dy[~self.take_cache()] = 0                                       # the caller's gradient, changed
        return dy


@pytest.mark.parametrize("layer, failed, note", [
    (TanhByKernel(), {("dx", "autograd")}, "backward called torch's own backward kernel aten.tanh_backward"),
    (TanhByAutogradGrad(), {("dx", "autograd")}, "it called torch.autograd.grad: manualnet's backward is written"),
    (TanhByTensorBackward(), {("dx", "autograd")}, "it called Tensor.backward"),
    (LeakyInPlace(), {("x", "in place")}, "forward changed x in place: it is the caller's tensor"),
    (ReluChangingDy(), {("dy", "in place")}, "backward changed dy in place: it is the caller's tensor"),
])
def test_a_backward_not_written_by_hand_or_changing_the_callers_tensors_fails_by_name(layer, failed, note):
    rows = check_layer(layer, randn((3, 4), seed=0))
    assert {(row.tensor, row.method) for row in rows if not row.passed} == failed, format_table(rows)
    assert note in next(row.note for row in rows if not row.passed)


class NumpyTanh(mn.Module):
    def forward(self, x):
        self.cache = torch.from_numpy(np.tanh(x.detach().numpy()))       # outside autograd's reach
        return self.cache

    def backward(self, dy):
        y = self.take_cache()
        return dy * (1 - y * y)


class ItemScale(mn.Module):
    def __init__(self):
        super().__init__()
        self.alpha = mn.Parameter(torch.tensor([1.5], dtype=torch.float64))

    def forward(self, x):
        self.cache = x
        return self.alpha.item() * x                                     # right value, no graph to alpha

    def backward(self, dy):
        self.alpha.grad += (dy * self.take_cache()).sum().reshape(1)     # right gradient
        return dy * self.alpha


def test_a_forward_autograd_cannot_reach_is_checked_by_finite_differences_and_named():
    rows = check_layer(NumpyTanh(), randn((3, 4), seed=0), fd=True, index="1")
    assert [(r.index, r.skipped) for r in rows if not r.passed] == [("1", True)]
    assert "does not depend on its inputs through autograd (.item(), numpy or .data" in rows[0].note
    assert [(r.tensor, r.method, r.passed) for r in rows[1:]] == [("dx", "finite-diff", True)]
    rows = check_layer(ItemScale(), randn((3, 4), seed=0), fd=True)
    failed = [r for r in rows if not r.passed]
    assert [(r.tensor, r.method) for r in failed] == [("dalpha", "autograd")]
    assert failed[0].note == "the reference does not reach it (.item(), numpy or .data in it break the graph?)"


class DoublingItsCache(mn.Module):
    def forward(self, x):
        self.cache = x
        return 2 * x

    def backward(self, dy):
        return self.take_cache().mul_(0).add_(2 * dy)                   # writes into the input it kept


def test_the_in_place_row_blames_the_backward_that_changed_an_input():
    rows = check_layer(DoublingItsCache(), randn((3, 4), seed=0))
    assert [(r.tensor, r.note) for r in rows if not r.passed] == [("x", "backward changed x in place: it is the "
                                                                        "caller's tensor")]


def test_a_model_with_a_module_autograd_cannot_reach_is_still_checked_by_finite_differences():
    model = mn.Sequential(mn.Linear(4, 3), NumpyTanh()).to(torch.float64)
    rows = check_model(model, mn.MSELoss(), randn((5, 4), seed=0), randn((5, 3), seed=1), fd=True)
    assert [(r.index, r.layer) for r in rows if r.skipped] == [("1", "NumpyTanh"), (None, "Sequential+MSELoss")]
    assert all(r.passed for r in rows if not r.skipped) and any(r.method == "finite-diff" for r in rows)


def test_only_the_thread_running_a_manual_backward_refuses_autograd():
    import threading

    from manualnet.errors import NotByHand
    from manualnet.verify.rules import by_hand

    original, x, seen = torch.autograd.grad, torch.ones(3, requires_grad=True), []
    with by_hand():
        other = threading.Thread(target=lambda: seen.append(torch.autograd.grad((x * x).sum(), x)[0]))
        other.start()
        other.join()
        with pytest.raises(NotByHand):
            torch.autograd.grad((x * x).sum(), x)
    assert torch.equal(seen[0], 2 * x.detach()) and torch.autograd.grad is original


def test_finite_differences_say_where_a_function_has_a_kink_and_that_a_subgradient_lies_between():
    def fn(x):
        r = torch.relu(x)
        return {"r": r, "out": r + x.abs()}

    report = finite_differences(fn, {"x": torch.tensor([0.0, 1.0])}, {"x": torch.tensor([2.0, 2.0])}, quiet=True)
    assert not report.rows[0].passed
    assert report.rows[0].note == ("not differentiable at x[0]: its slope is -1 from the left, 2 from the right "
                                   "(the manual value lies between: a subgradient)")
    wrong = finite_differences(fn, {"x": torch.tensor([0.5, 1.0])}, {"x": torch.tensor([2.0, 3.0])}, quiet=True)
    assert not wrong.rows[0].passed and "not differentiable" not in wrong.rows[0].note  # smooth there: just wrong


class LossWithoutDloss(mn.MSELoss):
    def backward(self):  # forgot the upstream dloss
        return super().backward()


def test_a_loss_backward_without_dloss_fails_with_a_hint():
    rows = mn.verify.check_loss(LossWithoutDloss(), randn((3, 2), seed=0), randn((3, 2), seed=1))
    failed = [r for r in rows if not r.passed]
    assert failed and failed[0].note.endswith("(a loss's backward takes dloss=1.0, a layer's one dy per output)")
