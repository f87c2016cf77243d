"""Every registered loss against autograd and finite differences, its reductions and its misuse errors."""

import pytest
import torch
import torch.nn.functional as F

from manualnet import LayerError, Loss, MSELoss
from manualnet.verify import all_passed, check_loss, format_table
from tests.conftest import loss_case_for


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_matches_autograd_in_float64(loss_case, reduction):
    pred, target = loss_case.data()
    rows = check_loss(loss_case.make(reduction=reduction), pred, target, tol=1e-10)
    assert all_passed(rows), format_table(rows)
    assert [row.tensor for row in rows] == ["loss", "dpred"]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_matches_finite_differences(loss_case, reduction):
    pred, target = loss_case.data(seed=1)
    rows = check_loss(loss_case.make(reduction=reduction), pred, target, fd=True)
    assert all_passed(rows), format_table(rows)
    assert [(row.tensor, row.method) for row in rows][-1] == ("dpred", "finite-diff")


def test_loss_matches_autograd_in_float32(loss_case):
    pred, target = loss_case.data(seed=2, dtype=torch.float32)
    rows = check_loss(loss_case.make(), pred, target, dtype=torch.float32)
    assert all_passed(rows), format_table(rows)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_loss_matches_autograd_on_cuda(loss_case, dtype):
    pred, target = loss_case.data(seed=3, dtype=dtype, device="cuda")
    rows = check_loss(loss_case.make(), pred, target, dtype=dtype, fd=True)
    assert all_passed(rows), format_table(rows)


def test_sum_is_mean_times_the_count(loss_case):
    pred, target = loss_case.data()
    mean, total = loss_case.make(reduction="mean"), loss_case.make(reduction="sum")
    count = loss_case.divisor(pred)
    torch.testing.assert_close(total.forward(pred, target), mean.forward(pred, target) * count)
    torch.testing.assert_close(total.backward(), mean.backward() * count)


def test_mse_sum_and_mean_differ_by_the_element_count():
    pred, target = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]), torch.zeros(2, 3)
    assert MSELoss(reduction="sum").forward(pred, target).item() == 15.0
    assert MSELoss(reduction="mean").forward(pred, target).item() == 2.5


def test_backward_is_the_same_each_time_and_keeps_nothing(loss_case):
    loss = loss_case.make()
    pred, target = loss_case.data()
    loss.forward(pred, target)
    first = loss.backward(0.5)
    loss.forward(pred, target)
    torch.testing.assert_close(loss.backward(0.5), first, rtol=0, atol=0)
    assert loss.cache is None


def test_scale_of_dloss_multiplies_dpred(loss_case):
    loss = loss_case.make()
    pred, target = loss_case.data()
    loss.forward(pred, target)
    unit = loss.backward()
    loss.forward(pred, target)
    torch.testing.assert_close(loss.backward(-3.0), -3.0 * unit)


# -- misuse ----------------------------------------------------------------------------------------------------

def test_backward_before_forward_is_refused(loss_case):
    with pytest.raises(LayerError, match=f"^{loss_case.name}: backward called without a forward"):
        loss_case.make().backward()


def test_pred_target_shape_mismatch_is_refused(loss_case):
    pred, target = loss_case.data()
    with pytest.raises(LayerError, match=rf"^{loss_case.name}: .*shape.*\(3,"):
        loss_case.make().forward(pred, target[:-1])


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_pred_is_refused_with_a_cast_hint(loss_case, dtype):
    pred, target = loss_case.data()
    with pytest.raises(LayerError, match=rf"^{loss_case.name}: pred has dtype {dtype}.*cast it with pred\.float\(\)"):
        loss_case.make().forward(pred.to(dtype), target)


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "NLLLoss"])
@pytest.mark.parametrize("bad", [5, -1, 99])
def test_class_index_out_of_range_is_refused(name, bad):
    case = loss_case_for(name)
    pred, target = case.data()
    target[2] = bad
    with pytest.raises(LayerError, match=rf"^{name}: class index {bad} is out of range for 5 classes \(valid: 0..4\)"):
        case.make().forward(pred, target)


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "NLLLoss"])
def test_class_index_target_must_be_integer(name):
    case = loss_case_for(name)
    pred, target = case.data()
    with pytest.raises(LayerError, match=rf"^{name}: target must hold integer class indices"):
        case.make().forward(pred, target.double())


def test_unknown_reduction_is_refused(loss_case):
    with pytest.raises(LayerError, match=rf"^{loss_case.name}: reduction must be 'mean' or 'sum', got 'max'"):
        loss_case.make(reduction="max")


def test_bce_refuses_pred_outside_zero_one():
    case = loss_case_for("BCELoss")
    pred, target = case.data()
    with pytest.raises(LayerError, match="^BCELoss: pred must hold probabilities in"):
        case.make().forward(pred + 1, target)


# -- extreme inputs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bce_with_logits_stays_finite_at_1e4(dtype):
    pred = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], dtype=dtype)
    target = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 1.0]], dtype=dtype)
    loss = loss_case_for("BCEWithLogitsLoss").make()
    value = loss.forward(pred, target)
    dpred = loss.backward()
    assert torch.isfinite(value) and torch.isfinite(dpred).all()
    torch.testing.assert_close(value, F.binary_cross_entropy_with_logits(pred, target))
    assert value.item() > 1e3                   # the two confidently wrong logits cost about 1e4 each
    rows = check_loss(loss, pred, target, dtype=dtype)
    assert all_passed(rows), format_table(rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cross_entropy_stays_finite_at_1e4(dtype):
    pred = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4]], dtype=dtype)
    target = torch.tensor([1, 2, 0])
    loss = loss_case_for("CrossEntropyLoss").make()
    value = loss.forward(pred, target)
    dpred = loss.backward()
    assert torch.isfinite(value) and torch.isfinite(dpred).all()
    torch.testing.assert_close(value, F.cross_entropy(pred, target))
    rows = check_loss(loss, pred, target, dtype=dtype)
    assert all_passed(rows), format_table(rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_stays_finite_and_matches_autograd_at_the_edges_of_its_domain(loss_case, dtype):
    pred, target = loss_case.extreme_data(dtype)
    loss = loss_case.make()
    value = loss.forward(pred, target)
    dpred = loss.backward()
    assert torch.isfinite(value) and torch.isfinite(dpred).all(), (value, dpred)
    rows = check_loss(loss, pred, target, dtype=dtype)
    assert all_passed(rows), format_table(rows)


# -- the engine on losses users write --------------------------------------------------------------------------

class L1WithoutReference(Loss):
    """L = reduce(|pred - target|), no reference: verify differentiates this forward itself."""

    def forward(self, pred, target):
        diff = pred - target
        self.cache = diff
        return self.reduce(diff.abs())

    def backward(self, dloss=1.0):
        diff = self.take_cache()
        return torch.sign(diff) * (self.scale(diff.numel()) * dloss)


class L1ForgettingTheMean(L1WithoutReference):
    def backward(self, dloss=1.0):
        return torch.sign(self.take_cache()) * dloss


def test_user_loss_without_reference_is_checked_through_its_own_forward():
    pred, target = loss_case_for("MSELoss").data()
    rows = check_loss(L1WithoutReference(), pred, target, fd=True)
    assert all_passed(rows), format_table(rows)


def test_user_loss_with_a_wrong_scale_fails_both_checks():
    pred, target = loss_case_for("MSELoss").data()
    rows = check_loss(L1ForgettingTheMean(), pred, target, fd=True)
    assert [(row.tensor, row.method, row.passed) for row in rows] == [
        ("loss", "autograd", True), ("dpred", "autograd", False), ("dpred", "finite-diff", False)]
    assert rows[1].max_rel_err == pytest.approx(11.0)   # 12 elements: off by a factor of 12
