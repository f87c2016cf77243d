"""Every registered layer against autograd and finite differences, its misuse errors, and the built-ins' own
promises (Softmax's full Jacobian, Dropout's scaling, PyTorch's initialisation)."""

import math

import pytest
import torch
import torch.nn.functional as F

from manualnet import Dropout, LayerError, Linear, Softmax
from manualnet.nn.init import INITS
from manualnet.verify import all_passed, check_layer, check_module, format_table
from tests.conftest import randn


def param_rows(rows, method):
    return {row.tensor for row in rows if row.method == method}


def reseed(layer, seed=0):
    """Rewind every random stream the layer draws from, so a second forward draws the same numbers."""
    torch.manual_seed(seed)
    for value in vars(layer).values():
        if isinstance(value, torch.Generator):
            value.manual_seed(seed)


# -- gradients: every registered layer -----------------------------------------------------------------------

def gradient_names(layer, inputs):
    """The rows a check of ``layer`` must have: dL/d(each floating input) and each parameter's gradient."""
    floating = [i for i, x in enumerate(inputs) if x.is_floating_point()]
    return {"dx" if len(inputs) == 1 else f"dx{i}" for i in floating} | {f"d{n}" for n, _ in layer.named_parameters()}


def test_layer_matches_autograd_in_float64(layer_case):
    layer, inputs = layer_case.make(), layer_case.inputs()
    rows = check_module(layer, *inputs, tol=1e-10)
    assert all_passed(rows), format_table(rows)
    assert param_rows(rows, "autograd") - {"y", "y0", "y1"} == gradient_names(layer, inputs)
    assert max(row.max_rel_err for row in rows) <= 1e-10


def test_layer_matches_finite_differences(layer_case):
    layer, inputs = layer_case.make(), layer_case.inputs(seed=1)
    rows = [row for row in check_module(layer, *inputs, fd=True) if row.method == "finite-diff"]
    assert all_passed(rows), format_table(rows)
    assert {row.tensor for row in rows} == gradient_names(layer, inputs)


def test_layer_matches_autograd_in_float32(layer_case):
    layer = layer_case.make(dtype=torch.float32)
    rows = check_module(layer, *layer_case.inputs(seed=2, dtype=torch.float32), dtype=torch.float32)
    assert all_passed(rows), format_table(rows)
    assert all(row.tolerance == "allclose(1.3e-06, 1e-05)" for row in rows)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_matches_autograd_on_cuda(layer_case, dtype):
    layer = layer_case.make(dtype=dtype, device="cuda")
    rows = check_module(layer, *layer_case.inputs(seed=3, dtype=dtype, device="cuda"), dtype=dtype, fd=True)
    assert all_passed(rows), format_table(rows)


def test_layer_takes_non_contiguous_input_and_a_batch_of_one(layer_case):
    layer = layer_case.make()
    dims = len(layer_case.shape)
    x = layer_case.input(shape=layer_case.shape[::-1]).permute(*reversed(range(dims)))
    assert not x.is_contiguous()
    rows = check_layer(layer, x, fd=True) + check_layer(layer, layer_case.input(shape=(1, *layer_case.shape[1:])))
    assert all_passed(rows), format_table(rows)


def test_gradients_accumulate_until_zero_grad(layer_case):
    layer = layer_case.make()
    x = layer_case.input()
    reseed(layer)
    dy = randn(layer.forward(x).shape, seed=5)

    def forward_backward():
        reseed(layer)
        layer.forward(x)
        return layer.backward(dy)

    dx_once = forward_backward()
    once = {name: g.clone() for name, g in ((n, p.grad) for n, p in layer.named_parameters())}
    dx_twice = forward_backward()
    assert layer_case.takes_ids or torch.equal(dx_once, dx_twice)   # dx is not accumulated, only parameter grads
    for name, g in ((n, p.grad) for n, p in layer.named_parameters()):
        assert once[name].abs().sum() > 0
        # the GEMM adds into the buffer itself (beta=1), so the sum may round differently from 2 * once
        torch.testing.assert_close(g, 2 * once[name], rtol=1e-12, atol=0)
    layer.zero_grad()
    assert all(torch.equal(g, torch.zeros_like(g)) for g in (p.grad for p in layer.parameters()))


def test_check_leaves_the_layer_and_the_rng_as_they_were(layer_case):
    layer = layer_case.make()
    x = layer_case.input()
    layer.forward(x)
    for p in layer.parameters():
        p.grad = torch.full_like(p, 0.5)
    params = {name: p.clone() for name, p in layer.named_parameters()}
    cache, rng = layer.cache, torch.get_rng_state()
    check_layer(layer, x, fd=True)
    assert all(torch.equal(p, params[name]) for name, p in layer.named_parameters())
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in (p.grad for p in layer.parameters()))
    assert layer.cache is cache
    assert torch.equal(torch.get_rng_state(), rng)
    layer.backward(torch.ones_like(layer.forward(x)))   # the layer still works as before


# -- misuse: each error is a LayerError that names the layer -------------------------------------------------

def test_backward_before_forward_is_refused(layer_case):
    layer = layer_case.make()
    with pytest.raises(LayerError, match=f"^{layer_case.name}.*call forward first"):
        layer.backward(torch.zeros(3))


def test_second_backward_after_one_forward_is_refused(layer_case):
    layer = layer_case.make()
    y = layer.forward(layer_case.input())
    layer.backward(torch.ones_like(y))
    with pytest.raises(LayerError, match=f"^{layer_case.name}.*without a forward"):
        layer.backward(torch.ones_like(y))


def test_dy_of_the_wrong_shape_is_refused(layer_case):
    layer = layer_case.make()
    y = layer.forward(layer_case.input())
    wrong = (*y.shape[:-1], y.shape[-1] + 1)
    with pytest.raises(LayerError, match=rf"^{layer_case.name}.*{tuple(wrong)}.*expected the outputs' "):
        layer.backward(torch.zeros(wrong, dtype=y.dtype))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_and_bool_inputs_are_refused_with_a_cast_hint(layer_case, dtype):
    if layer_case.takes_ids:
        pytest.skip(f"{layer_case.name} takes integer token ids (tests/test_transformer_layers.py: floats refused)")
    layer = layer_case.make()
    with pytest.raises(LayerError, match=rf"^{layer_case.name}.*{dtype}.*cast it with x\.float\(\)"):
        layer.forward(*(torch.ones(x.shape, dtype=dtype) for x in layer_case.inputs()))


def test_linear_feature_mismatch_names_both_sizes():
    layer = Linear(5, 3)
    with pytest.raises(LayerError, match=r"^Linear\(5->3\): expects 5 input features, gets 7"):
        layer.forward(torch.ones(4, 7))


# -- extreme inputs -------------------------------------------------------------------------------------------

EXTREMES = (1e4, -1e4, 0.5, 1e4 - 1.0, -1e4 + 3.0, -0.25, 1e4)   # exp overflows, 1 - sigmoid rounds to 0, ties


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_stays_finite_and_matches_autograd_at_1e4(layer_case, dtype):
    layer_case.input()  # one-input layers: the extreme values fill that input
    if layer_case.takes_ids:
        pytest.skip(f"{layer_case.name} takes integer token ids: no extreme values to give it")
    layer = layer_case.make(dtype=dtype)
    numel = math.prod(layer_case.shape)
    x = torch.tensor(EXTREMES * numel, dtype=dtype)[:numel].reshape(layer_case.shape)
    reseed(layer)
    y = layer.forward(x)
    dx = layer.backward(randn(y.shape, seed=0, dtype=dtype))
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    # float32 sums of +-1e4 terms cancel: an entry near zero is rounding noise of the summands, so float32 is
    # judged by the error relative to the tensor's largest entry (float64 keeps its 1e-10 rule)
    rows = check_layer(layer, x, dtype=dtype, tol=1e-5 if dtype == torch.float32 else None)
    assert all_passed(rows), format_table(rows)


# -- Softmax ---------------------------------------------------------------------------------------------------

def test_softmax_backward_is_full_jacobian():
    x = torch.tensor([0.3, -1.2, 2.0, 0.5], dtype=torch.float64)
    layer = Softmax(dim=0)
    rows = []
    for j in range(4):                          # backward of e_j gives row j of J: dy^T J
        layer.forward(x)
        rows.append(layer.backward(F.one_hot(torch.tensor(j), 4).to(torch.float64)))
    jacobian = torch.stack(rows)
    expected = torch.autograd.functional.jacobian(lambda t: F.softmax(t, 0), x)
    torch.testing.assert_close(jacobian, expected, rtol=0, atol=1e-15)
    y = F.softmax(x, 0)
    torch.testing.assert_close(jacobian, torch.diag(y) - torch.outer(y, y), rtol=0, atol=1e-15)
    off_diagonal = jacobian[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().min() > 1e-3      # a diagonal-only backward would miss these


# -- Dropout ---------------------------------------------------------------------------------------------------

def test_dropout_with_a_seeded_generator_is_reproducible():
    x = torch.ones(50, 40, dtype=torch.float64)
    first = Dropout(0.3, generator=torch.Generator().manual_seed(11)).forward(x)
    second = Dropout(0.3, generator=torch.Generator().manual_seed(11)).forward(x)
    other = Dropout(0.3, generator=torch.Generator().manual_seed(12)).forward(x)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_dropout_scales_kept_entries_by_one_over_keep_probability():
    x = randn((200, 100), seed=0)
    layer = Dropout(0.25, generator=torch.Generator().manual_seed(0))
    y = layer.forward(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75, rtol=1e-15, atol=0)
    assert abs(kept.double().mean().item() - 0.75) < 0.01
    dy = randn(y.shape, seed=1)
    torch.testing.assert_close(layer.backward(dy), dy * kept / 0.75, rtol=1e-15, atol=0)


def test_dropout_in_eval_is_the_identity():
    x, dy = randn((8, 6), seed=0), randn((8, 6), seed=1)
    layer = Dropout(0.9).eval()
    assert torch.equal(layer.forward(x), x)
    assert torch.equal(layer.backward(dy), dy)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_probability_outside_zero_one_is_refused(p):
    with pytest.raises(LayerError, match=rf"^Dropout argument p={p}: expected a number in \[0, 1\)$"):
        Dropout(p)


# -- initialisation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [(7, 3), (64, 10), (1, 1)])
def test_linear_default_init_equals_torch_nn_linear(sizes):
    torch.manual_seed(123)
    ours = Linear(*sizes)
    torch.manual_seed(123)
    theirs = torch.nn.Linear(*sizes)
    assert torch.equal(ours.weight, theirs.weight.detach())
    assert torch.equal(ours.bias, theirs.bias.detach())


# name -> the torch.nn.init call drawing the same distribution
TORCH_INITS = {
    "default": lambda w, g: torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g),
    "kaiming_uniform": lambda w, g: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=g),
    "kaiming_normal": lambda w, g: torch.nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g),
    "xavier_uniform": lambda w, g: torch.nn.init.xavier_uniform_(w, generator=g),
    "xavier_normal": lambda w, g: torch.nn.init.xavier_normal_(w, generator=g),
    "zeros": lambda w, g: torch.nn.init.zeros_(w),
}
# name -> (distribution, its std from (fan_out, fan_in))
INIT_STATS = {
    "default": ("uniform", lambda fan_out, fan_in: 1 / math.sqrt(3 * fan_in)),
    "kaiming_uniform": ("uniform", lambda fan_out, fan_in: math.sqrt(2 / fan_in)),
    "kaiming_normal": ("normal", lambda fan_out, fan_in: math.sqrt(2 / fan_in)),
    "xavier_uniform": ("uniform", lambda fan_out, fan_in: math.sqrt(2 / (fan_in + fan_out))),
    "xavier_normal": ("normal", lambda fan_out, fan_in: math.sqrt(2 / (fan_in + fan_out))),
    "zeros": ("zeros", lambda fan_out, fan_in: 0.0),
}


@pytest.mark.parametrize("name", INITS.names())
def test_init_scheme_is_reproducible_with_a_seeded_generator(name):
    def draw(seed):
        return INITS.get(name)(torch.empty(30, 20, dtype=torch.float64), generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert torch.isfinite(draw(1)).all()
    if name != "zeros":
        assert not torch.equal(draw(1), draw(2))


@pytest.mark.parametrize("name", sorted(INIT_STATS))
def test_init_scheme_has_the_right_std_and_bounds(name):
    fan_out, fan_in = 300, 400
    w = INITS.get(name)(torch.empty(fan_out, fan_in, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    kind, std = INIT_STATS[name]
    expected_std = std(fan_out, fan_in)
    if kind == "zeros":
        assert torch.equal(w, torch.zeros_like(w))
        return
    assert abs(w.std().item() / expected_std - 1) < 0.01
    assert abs(w.mean().item()) < 0.01 * expected_std
    if kind == "uniform":
        bound = math.sqrt(3) * expected_std
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.999 * bound
    reference = TORCH_INITS[name](torch.empty_like(w), torch.Generator().manual_seed(0))
    torch.testing.assert_close(w, reference, rtol=1e-12, atol=1e-15)


def test_linear_takes_any_registered_init_and_zero_bias_for_non_default():
    for name in INITS.names():
        layer = Linear(6, 4, init=name, generator=torch.Generator().manual_seed(0))
        expected_bias_zero = name != "default"
        assert torch.equal(layer.bias, torch.zeros(4)) == expected_bias_zero
