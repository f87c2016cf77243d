"""MaxPool2d, AvgPool2d and AdaptiveAvgPool2d against their torch.nn twins and finite differences; where a
max-pool's gradient goes at a tie, and how finite differences keep away from ties."""

import pytest
import torch

import manualnet as mn
from manualnet.verify import all_passed, check_layer, format_table
from manualnet.verify.finite_diff import KINK_OFFSET, spread_ties
from tests.twins import finite_difference_grads, rel_err, run_twins, seeded

CASES = [  # (manualnet layer, torch.nn twin, input shape)
    (lambda: mn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2), (2, 3, 8, 8)),
    (lambda: mn.MaxPool2d(3, (2, 1), 1, (1, 2)), lambda: torch.nn.MaxPool2d(3, (2, 1), 1, (1, 2)), (2, 3, 7, 8)),
    (lambda: mn.MaxPool2d(3, 2, 1, ceil_mode=True), lambda: torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 2, 8, 9)),
    (lambda: mn.AvgPool2d(2), lambda: torch.nn.AvgPool2d(2), (2, 3, 8, 7)),
    (lambda: mn.AvgPool2d((3, 2), 2, 1, True, False), lambda: torch.nn.AvgPool2d((3, 2), 2, 1, True, False),
     (2, 3, 8, 7)),
    (lambda: mn.AvgPool2d(3, 2, 1, ceil_mode=True), lambda: torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True), (2, 3, 8, 7)),
    (lambda: mn.AvgPool2d(2, 3), lambda: torch.nn.AvgPool2d(2, 3), (2, 3, 8, 7)),   # rows no window reaches
    (lambda: mn.AvgPool2d(3, 1, 1, count_include_pad=False),
     lambda: torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False), (2, 3, 5, 7)),
    (lambda: mn.AdaptiveAvgPool2d(1), lambda: torch.nn.AdaptiveAvgPool2d(1), (2, 3, 7, 5)),
    (lambda: mn.AdaptiveAvgPool2d((3, None)), lambda: torch.nn.AdaptiveAvgPool2d((3, None)), (2, 3, 7, 5)),
    (lambda: mn.AdaptiveAvgPool2d((4, 3)), lambda: torch.nn.AdaptiveAvgPool2d((4, 3)), (2, 3, 7, 5)),
]
IDS = [f"{i}-{repr(case[0]())}" for i, case in enumerate(CASES)]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pool_matches_torch_autograd_in_float64(case):
    ours, theirs, shape = case
    got, want = run_twins(ours(), theirs().double(), seeded(shape, 0))
    errors = {name: rel_err(got[name], want[name]) for name in want}
    assert max(errors.values()) <= 1e-10, errors


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pool_matches_torch_autograd_in_float32(case):
    ours, theirs, shape = case
    got, want = run_twins(ours(), theirs(), seeded(shape, 1, torch.float32))
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pool_matches_finite_differences(case):
    ours, _, shape = case
    manual, numeric = finite_difference_grads(ours(), seeded(shape, 2))
    torch.testing.assert_close(manual["dx"], numeric["dx"], rtol=1e-6, atol=1e-7)


def test_max_pool_tie_sends_all_of_dy_to_the_first_maximum_in_row_major_order():
    x = torch.tensor([[[[1.0, 3.0, 0.0, 0.0],
                        [3.0, 2.0, 0.0, 0.0]]]], dtype=torch.float64)
    pool = mn.MaxPool2d(2)
    pool(x)
    dx = pool.backward(torch.tensor([[[[10.0, 20.0]]]], dtype=torch.float64))
    assert dx.tolist() == [[[[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]]   # the 3 at (0, 1); the 0 at (0, 2)
    x_leaf = x.clone().requires_grad_(True)
    torch.nn.functional.max_pool2d(x_leaf, 2).backward(torch.tensor([[[[10.0, 20.0]]]], dtype=torch.float64))
    assert torch.equal(dx, x_leaf.grad)                                        # autograd picks the same one


def test_overlapping_max_pool_windows_add_their_gradients_in_one_input():
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[0, 0, 1, 1] = 5.0                        # the max of all four 2x2 windows of stride 1
    pool = mn.MaxPool2d(2, stride=1)
    pool(x)
    dx = pool.backward(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64))
    assert dx[0, 0, 1, 1] == 10.0 and dx.sum() == 10.0


def test_spread_ties_separates_near_equal_entries_per_plane_keeping_order():
    x = torch.tensor([[[[0.0, 0.0, 1.0], [0.0, 2.0, 1.0 + 1e-9]]]], dtype=torch.float64)
    spread, moved = spread_ties(x, 2)
    assert moved == 3                          # the second and third 0, and 1 + 1e-9
    assert spread.flatten().tolist() == pytest.approx([0.0, KINK_OFFSET, 1.0, 2 * KINK_OFFSET, 2.0, 1.0 + KINK_OFFSET])
    assert torch.equal(spread_ties(seeded((2, 3, 4, 4), 0), 2)[0], seeded((2, 3, 4, 4), 0))   # no ties: unchanged


def test_verify_finite_differences_keep_off_max_pool_ties():
    x = torch.relu(seeded((2, 2, 6, 6), 3))    # ReLU's zeros: whole windows of tied maxima
    rows = check_layer(mn.MaxPool2d(2), x, fd=True)
    assert all_passed(rows), format_table(rows)
    fd_row = next(row for row in rows if row.method == "finite-diff")
    assert "spread" in fd_row.note
    with pytest.raises(AssertionError):        # without the spreading, the stencils straddle the ties
        manual, numeric = finite_difference_grads(mn.MaxPool2d(2), x)
        torch.testing.assert_close(manual["dx"], numeric["dx"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layer, shape, message", [
    (lambda: mn.MaxPool2d(2), (3, 8, 8), "expects x of shape (N, C, H, W), got (3, 8, 8)"),
    (lambda: mn.AvgPool2d(5), (1, 1, 4, 4), "input (4, 4) padded by (0, 0) is smaller than the window (5, 5)"),
    (lambda: mn.AdaptiveAvgPool2d(1), (4, 4), "expects x of shape (N, C, H, W), got (4, 4)"),
])
def test_pool_refuses_inputs_that_are_not_image_batches(layer, shape, message):
    with pytest.raises(mn.LayerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layer()(torch.zeros(shape))
