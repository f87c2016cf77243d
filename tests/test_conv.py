"""Conv2d against torch.nn.Conv2d (same state dict) and finite differences, over strides, paddings, dilations
and groups; its initialisation, its first-layer shortcut, its accumulation and its errors."""

import pytest
import torch

import manualnet as mn
from tests.twins import finite_difference_grads, rel_err, run_twins, seeded

# (in, out, kernel, stride, padding, dilation, groups, input H x W)
CASES = [
    (3, 5, 3, 1, 0, 1, 1, (8, 8)),
    (3, 4, 3, 1, 1, 1, 1, (6, 7)),                 # "same" padding
    (4, 6, (3, 2), (2, 1), (1, 2), (1, 2), 2, (7, 6)),
    (2, 4, 3, 3, 1, 2, 2, (9, 10)),                # stride 3 cuts rows off: dx needs output_padding
    (6, 6, 3, 2, 1, 1, 6, (11, 7)),                # depthwise
    (4, 8, 1, 1, 0, 1, 4, (5, 5)),                 # 1x1 grouped
    (1, 3, 5, 2, 2, 1, 1, (12, 9)),
    (2, 2, (1, 4), (1, 3), (0, 1), (1, 1), 1, (3, 13)),
]
IDS = [f"k{c[2]}-s{c[3]}-p{c[4]}-d{c[5]}-g{c[6]}" for c in CASES]


def twins(case, dtype, bias=True, seed=0):
    c_in, c_out, k, s, p, d, g, size = case
    torch.manual_seed(seed)
    ours = mn.Conv2d(c_in, c_out, k, s, p, d, g, bias=bias).to(dtype=dtype)
    theirs = torch.nn.Conv2d(c_in, c_out, k, s, p, d, g, bias=bias).to(dtype)
    return ours, theirs, seeded((3, c_in, *size), seed + 1, dtype)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_torch_autograd_in_float64(case, bias):
    ours, theirs, x = twins(case, torch.float64, bias)
    got, want = run_twins(ours, theirs, x)
    assert set(got) == {"y", "dx", "dweight"} | ({"dbias"} if bias else set())
    errors = {name: rel_err(got[name], want[name]) for name in want}
    assert max(errors.values()) <= 1e-10, errors


def random_case(rng):
    """Random channels, kernel, stride, padding, dilation and groups that fit a random input."""
    pick = lambda low, high: int(torch.randint(low, high + 1, (), generator=rng))   # noqa: E731
    groups = pick(1, 3)
    k, d, s = (pick(1, 4), pick(1, 3)), (pick(1, 2), pick(1, 2)), (pick(1, 3), pick(1, 3))
    p = tuple(pick(0, kk // 2) for kk in k)
    size = tuple(dd * (kk - 1) + 1 + pick(0, 6) for kk, dd in zip(k, d, strict=True))
    return groups * pick(1, 3), groups * pick(1, 3), k, s, p, d, groups, size


def test_conv2d_matches_torch_autograd_on_random_shapes():
    rng = torch.Generator().manual_seed(17)
    for trial in range(12):
        case = random_case(rng)
        got, want = run_twins(*twins(case, torch.float64, seed=trial))
        errors = {name: rel_err(got[name], want[name]) for name in want}
        assert max(errors.values()) <= 1e-10, (case, errors)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv2d_matches_torch_autograd_in_float32(case):
    ours, theirs, x = twins(case, torch.float32)
    got, want = run_twins(ours, theirs, x)
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


@pytest.mark.parametrize("case", [CASES[2], CASES[3]], ids=[IDS[2], IDS[3]])
def test_conv2d_matches_finite_differences(case):
    ours, _, x = twins(case, torch.float64)
    manual, numeric = finite_difference_grads(ours, x[:2])
    for name in manual:
        torch.testing.assert_close(manual[name], numeric[name], rtol=1e-6, atol=1e-7, msg=name)


def test_conv2d_default_init_draws_torchs_weights():
    torch.manual_seed(3)
    ours = mn.Conv2d(4, 6, 3, groups=2)
    torch.manual_seed(3)
    theirs = torch.nn.Conv2d(4, 6, 3, groups=2)
    assert torch.equal(ours.weight, theirs.weight.detach()) and torch.equal(ours.bias, theirs.bias.detach())
    assert float(ours.weight.abs().max()) <= 1 / (2 * 9) ** 0.5   # U(+-1/sqrt(fan_in)), fan_in = C/G * 3 * 3


def test_conv2d_state_dict_loads_into_torch_and_back():
    ours = mn.Conv2d(2, 3, 3, padding=1)
    theirs = torch.nn.Conv2d(2, 3, 3, padding=1)
    theirs.load_state_dict(ours.state_dict())
    x = seeded((2, 2, 5, 5), 0, torch.float32)
    torch.testing.assert_close(ours(x), theirs(x).detach())
    ours.load_state_dict(torch.nn.Conv2d(2, 3, 3, padding=1).state_dict())
    assert list(ours.state_dict()) == ["weight", "bias"]


def test_conv2d_first_layer_skips_dx_but_fills_weight_grads():
    ours, theirs, x = twins(CASES[1], torch.float64)
    ours.needs_input_grad = False
    got, want = run_twins(ours, theirs, x)
    assert got["dx"] is None
    assert rel_err(got["dweight"], want["dweight"]) <= 1e-10 and rel_err(got["dbias"], want["dbias"]) <= 1e-10


def test_conv2d_gradients_accumulate_until_zero_grad():
    ours, _, x = twins(CASES[2], torch.float64)
    dy = seeded(ours(x).shape, 5)
    ours.backward(dy)
    once = ours.weight.grad.clone()
    ours(x)
    ours.backward(dy)
    torch.testing.assert_close(ours.weight.grad, 2 * once, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape, message", [
    ((2, 3, 8, 8), "expects x of shape (N, 4, H, W), got (2, 3, 8, 8)"),
    ((4, 8, 8), "expects x of shape (N, 4, H, W), got (4, 8, 8)"),
    ((1, 4, 2, 2), "input (2, 2) padded by (0, 0) is smaller than the dilated kernel (3, 3)"),
])
def test_conv2d_refuses_inputs_it_cannot_convolve(shape, message):
    with pytest.raises(mn.LayerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mn.Conv2d(4, 2, 3)(torch.zeros(shape))


def test_conv2d_refuses_channels_groups_do_not_divide():
    with pytest.raises(mn.LayerError, match="must both be divisible by groups 2"):
        mn.Conv2d(3, 4, 3, groups=2)
