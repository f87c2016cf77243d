import io
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from manualnet import Linear, Parameter, ReLU, Sequential
from manualnet.errors import CheckpointError, ConfigError
from manualnet.optim import OPTIMIZERS, SGD, Adam, AdamW, clip_grad_norm, grad_norm

SHAPES = {"0.weight": (5, 3), "0.bias": (5,), "2.weight": (2, 5), "2.bias": (2,)}

# Settings compared with torch.optim: (ours, torch's, keyword arguments both take).
PARITY = [
    (SGD, torch.optim.SGD, {"lr": 0.1}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.01}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.8, "dampening": 0.1, "weight_decay": 0.01}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (Adam, torch.optim.Adam, {}),
    (Adam, torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6}),
    (Adam, torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
    (Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    (Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    (AdamW, torch.optim.AdamW, {"lr": 0.01}),
    (AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
]

# The smallest valid keyword arguments of each registered optimizer (a new one without required arguments
# needs no entry here).
REQUIRED = {"SGD": {"lr": 0.1}}


def make_params(seed=0):
    """Named parameters with zero gradients, as a model's ``named_parameters()`` would give them."""
    gen = torch.Generator().manual_seed(seed)
    params = {name: Parameter(torch.randn(shape, generator=gen, dtype=torch.float64)) for name, shape in SHAPES.items()}
    for p in params.values():
        p.grad = torch.zeros_like(p)
    return params


def named(params):
    return list(params.items())


def feed(params, gen):
    """Fill every parameter's gradient with fresh random values; return copies of them."""
    for p in params.values():
        p.grad.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return [p.grad.clone() for p in params.values()]


def run(optimizer, params, steps, gen, lr_of_step=None):
    for t in range(steps):
        if lr_of_step:
            optimizer.lr = lr_of_step(t)
        feed(params, gen)
        optimizer.step()


def varying_lr(kwargs):
    base = kwargs.get("lr", 1e-3)
    return lambda t: base * (1 + 0.5 * math.sin(t))   # as a schedule would, so lr is read at every step


def test_registry_holds_the_three_optimizers():
    assert OPTIMIZERS.names() == ["Adam", "AdamW", "SGD"]


@pytest.mark.parametrize("foreach", [False, True], ids=["torch-single-tensor", "torch-foreach"])
@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PARITY, ids=lambda v: getattr(v, "__name__", None))
def test_optimizer_matches_torch_optim_for_100_steps(ours, theirs, kwargs, foreach):
    params = make_params()
    torch_params = [p.detach().clone().requires_grad_() for p in params.values()]
    optimizer = ours(named(params), **kwargs)
    reference = theirs(torch_params, foreach=foreach, **kwargs)
    gen, lr_of_step = torch.Generator().manual_seed(1), varying_lr(kwargs)
    ours_after, theirs_after = [], []                  # all parameters after each step, compared at the end
    for t in range(100):
        optimizer.lr = reference.param_groups[0]["lr"] = lr_of_step(t)
        for tp, g in zip(torch_params, feed(params, gen), strict=True):
            tp.grad = g
        optimizer.step()
        reference.step()
        ours_after.append(torch.cat([p.flatten() for p in params.values()]))
        theirs_after.append(torch.cat([tp.detach().flatten() for tp in torch_params]))
    torch.testing.assert_close(torch.stack(ours_after), torch.stack(theirs_after), rtol=1e-12, atol=0)


@pytest.mark.parametrize("layout", ["flat", "per-parameter"])
@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PARITY, ids=lambda v: getattr(v, "__name__", None))
def test_float32_updates_are_torch_optims_bit_for_bit(ours, theirs, kwargs, layout):
    params = {k: v.float() for k, v in make_params().items()}
    torch_params = [p.detach().clone().requires_grad_() for p in params.values()]
    optimizer, reference = ours(named(params), **kwargs), theirs(torch_params, foreach=False, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        for p, tp in zip(params.values(), torch_params, strict=True):
            g = torch.randn(p.shape, generator=gen)
            if layout == "flat":
                p.grad.copy_(g)
            else:  # a new .grad tensor: the group leaves its flat buffers
                p.grad = g
            tp.grad = g.clone()
        optimizer.step()
        reference.step()
    assert len(optimizer.grad_buffers()) == (1 if layout == "flat" else len(params))
    assert all(torch.equal(p, tp.detach()) for p, tp in zip(params.values(), torch_params, strict=True))


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PARITY, ids=lambda v: getattr(v, "__name__", None))
def test_flat_model_matches_torch_optim_when_a_tensor_leaves_the_layout(ours, theirs, kwargs):
    torch.manual_seed(0)
    model = Sequential(Linear(3, 5), ReLU(), Linear(5, 2)).to(dtype=torch.float64)
    torch_params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    optimizer, reference = ours(model.named_parameters(), **kwargs), theirs(torch_params, **kwargs)
    assert len(optimizer.grad_buffers()) == 1
    gen, params = torch.Generator().manual_seed(1), dict(model.named_parameters())
    for t in range(30):
        if t == 10:    # one tensor leaves the flat buffer, as Module.to moves it: per-parameter updates
            model[2].weight.data = model[2].weight.data.clone()
        if t == 20:
            saved_mid_layout = optimizer.state_dict()
        for tp, g in zip(torch_params, feed(params, gen), strict=True):
            tp.grad = g
        optimizer.step()
        reference.step()
    assert len(optimizer.grad_buffers()) == 4
    for p, tp in zip(model.parameters(), torch_params, strict=True):
        torch.testing.assert_close(p, tp.detach(), rtol=1e-12, atol=0)
    restored = ours(model.named_parameters(), **kwargs)
    restored.load_state_dict(saved_mid_layout)
    assert restored.state_dict()["steps"] == 20


def test_flat_model_is_updated_as_one_tensor_per_op():
    torch.manual_seed(0)
    model = Sequential(Linear(3, 5), ReLU(), Linear(5, 2))
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    run(optimizer, dict(model.named_parameters()), 2, torch.Generator().manual_seed(1))
    with ListSizes() as log:
        optimizer.step()
        optimizer.zero_grad()
    flat_size = sum(p.numel() for p in model.parameters())
    # b = momentum * b + g, p -= lr * b, then the gradients zeroed: each op on the whole flat buffer
    assert log.calls == [("mul_", [flat_size]), ("add_", [flat_size]), ("add_", [flat_size]),
                         ("_foreach_zero_", [flat_size])]


class ListSizes(TorchDispatchMode):
    """Records each op with the sizes of the tensors in its first argument (a tensor or a list)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = args[0] if args else None
        if isinstance(first, (list, tuple)):
            self.calls.append((func.overloadpacket.__name__, [t.numel() for t in first]))
        elif isinstance(first, torch.Tensor):
            self.calls.append((func.overloadpacket.__name__, [first.numel()]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PARITY, ids=lambda v: getattr(v, "__name__", None))
def test_step_leaves_gradients_untouched(ours, theirs, kwargs):
    params = make_params()
    optimizer = ours(named(params), **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        given = feed(params, gen)
        optimizer.step()
        for p, g0 in zip(params.values(), given, strict=True):
            assert torch.equal(p.grad, g0)


def test_step_updates_the_layers_own_tensors_and_zero_grad_clears_them():
    torch.manual_seed(0)
    model = Sequential(Linear(3, 4, dtype=torch.float64), ReLU(), Linear(4, 2, dtype=torch.float64))
    weight = model[0].weight
    before = weight.clone()
    optimizer = SGD(model.parameters(), lr=0.5)
    weight.grad.fill_(2.0)
    optimizer.step()
    assert model[0].weight is weight
    torch.testing.assert_close(weight, before - 1.0, rtol=0, atol=1e-15)
    optimizer.zero_grad()
    assert all(torch.count_nonzero(g) == 0 for g in (p.grad for p in model.parameters()))


class OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((func.overloadpacket.__name__, func._overloadname))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PARITY, ids=lambda v: getattr(v, "__name__", None))
def test_step_writes_in_place_without_host_sync(ours, theirs, kwargs):
    params = make_params()
    optimizer = ours(named(params), **kwargs)
    gen = torch.Generator().manual_seed(1)
    run(optimizer, params, 2, gen)                 # the first step creates the state
    with OpLog() as log:
        optimizer.step()
    assert log.ops, "step ran no tensor op"
    # in place (add_) or into a given tensor (add.out): no per-step allocation; no .item() or the like
    assert all(name.endswith("_") or overload == "out" for name, overload in log.ops), log.ops
    assert not any(name in ("_local_scalar_dense", "item", "is_nonzero") for name, _ in log.ops), log.ops


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PARITY, ids=lambda v: getattr(v, "__name__", None))
def test_state_dict_round_trip_mid_run_continues_identically(ours, theirs, kwargs):
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    params_a, params_b = make_params(), make_params()
    a, b = ours(named(params_a), **kwargs), ours(named(params_b), **kwargs)
    lr_of_step = varying_lr(kwargs)
    run(a, params_a, 50, gen_a, lr_of_step)
    run(b, params_b, 50, gen_b, lr_of_step)

    buffer = io.BytesIO()
    torch.save(b.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = ours(named(params_b), lr=123.0)     # other hyperparameters: the state dict restores them
    resumed.load_state_dict(saved)
    assert resumed.steps == 50 and resumed.lr == b.lr

    for t in range(50, 100):
        a.lr = resumed.lr = lr_of_step(t)
        feed(params_a, gen_a)
        feed(params_b, gen_b)
        a.step()
        resumed.step()
        for p, q in zip(params_a.values(), params_b.values(), strict=True):
            assert torch.equal(p, q)


def only_plain_values(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and only_plain_values(v) for k, v in value.items())
    if isinstance(value, list):
        return all(only_plain_values(v) for v in value)
    return isinstance(value, (torch.Tensor, int, float, str))


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_state_dict_holds_only_plain_values_keyed_by_parameter_name(name):
    params = make_params()
    optimizer = OPTIMIZERS.get(name)(named(params), **REQUIRED.get(name, {}))
    run(optimizer, params, 2, torch.Generator().manual_seed(1))
    state = optimizer.state_dict()
    assert only_plain_values(state)
    assert state["optimizer"] == name and state["steps"] == 2
    assert list(state["state"]) == list(SHAPES)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_descends_a_quadratic(name):
    """L = sum_p ||p||^2 / 2, so dL/dp = p: 200 steps must shrink every parameter a lot."""
    params = make_params()
    optimizer = OPTIMIZERS.get(name)(named(params), **{**REQUIRED.get(name, {}), "lr": 0.05})
    start = sum(p.square().sum() for p in params.values())
    for _ in range(200):
        for p in params.values():
            p.grad.copy_(p)
        optimizer.step()
    assert sum(p.square().sum() for p in params.values()) < 0.05 * start


def stepped_sgd(shapes=SHAPES, momentum=0.9):
    gen = torch.Generator().manual_seed(0)
    params = {name: Parameter(torch.randn(shape, generator=gen, dtype=torch.float64)) for name, shape in shapes.items()}
    for p in params.values():
        p.grad = torch.ones_like(p)
    optimizer = SGD(named(params), lr=0.1, momentum=momentum)
    optimizer.step()
    return optimizer


@pytest.mark.parametrize(("change", "message"), [
    (lambda sd: sd["state"].pop("2.bias"), r"missing parameters \['2.bias'\]"),
    (lambda sd: sd["state"].update(extra={}), r"unexpected parameters \['extra'\]"),
    (lambda sd: sd["state"]["0.weight"].update(momentum_buffer=torch.zeros(3, 5)),
     r"momentum_buffer of '0.weight' has shape \(3, 5\), parameter has \(5, 3\)"),
    (lambda sd: sd["state"]["0.bias"].clear(), r"'0.bias' has buffers \[\], expected \['momentum_buffer'\]"),
    (lambda sd: sd.update(optimizer="Adam"), r"state dict is for 'Adam', this optimizer is 'SGD'"),
    (lambda sd: sd.pop("steps"), r"expected a dict with keys"),
    (lambda sd: sd["param_groups"][0].update(momentum=-1.0), r"momentum=-1.0"),
])
def test_load_state_dict_rejects_mismatch_and_changes_nothing(change, message):
    state_dict = stepped_sgd().state_dict()
    change(state_dict)
    optimizer = stepped_sgd(momentum=0.5)
    group = optimizer.param_groups[0]
    buffer_before = group.state["momentum_buffer"][0].clone()
    with pytest.raises(CheckpointError, match=message):
        optimizer.load_state_dict(state_dict)
    assert group.momentum == 0.5 and optimizer.steps == 1
    assert torch.equal(group.state["momentum_buffer"][0], buffer_before)


def test_adam_state_dict_does_not_load_into_sgd():
    params = make_params()
    with pytest.raises(CheckpointError, match="for 'Adam', this optimizer is 'SGD'"):
        SGD(named(params), lr=0.1).load_state_dict(Adam(named(params)).state_dict())


@pytest.mark.parametrize(("make", "argument"), [
    (lambda m: SGD(m, lr=-0.1), "lr"),
    (lambda m: SGD(m, lr=float("nan")), "lr"),
    (lambda m: SGD(m, lr="0.1"), "lr"),
    (lambda m: SGD(m, lr=0.1, momentum=-0.9), "momentum"),
    (lambda m: SGD(m, lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda m: SGD(m, lr=0.1, nesterov=True), "nesterov"),
    (lambda m: SGD(m, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda m: Adam(m, lr=-1e-3), "lr"),
    (lambda m: Adam(m, betas=(1.0, 0.999)), "betas"),
    (lambda m: Adam(m, betas=(0.9, -0.1)), "betas"),
    (lambda m: Adam(m, betas=0.9), "betas"),
    (lambda m: Adam(m, eps=-1e-8), "eps"),
    (lambda m: AdamW(m, weight_decay=-0.01), "weight_decay"),
    (lambda m: Adam(m, amsgrad="yes"), "amsgrad"),
])
def test_invalid_argument_is_a_config_error_naming_it(make, argument):
    with pytest.raises(ConfigError, match=rf"argument {argument}="):
        make(named(make_params()))


def test_every_invalid_argument_is_a_line_of_one_error():
    with pytest.raises(ConfigError) as e:
        SGD(named(make_params()), lr=-1, momentum=-0.5, nesterov="yes")
    assert str(e.value).splitlines() == ["SGD argument lr=-1: expected a finite number >= 0",
                                         "SGD argument momentum=-0.5: expected a finite number >= 0",
                                         "SGD argument nesterov='yes': expected True or False"]


def test_lr_setter_rejects_negative_lr():
    optimizer = SGD(named(make_params()), lr=0.1)
    with pytest.raises(ConfigError, match="argument lr=-1"):
        optimizer.lr = -1
    assert optimizer.lr == 0.1


@pytest.mark.parametrize(("params", "message"), [
    (Sequential(Linear(2, 2)), r"expected model.parameters\(\)"),
    ([], "no parameters"),
    ([torch.zeros(2, dtype=torch.long)], "not a floating torch tensor"),
    ([{"params": [torch.zeros(2)], "momentun": 0.9}], r"unknown keys \['momentun'\]"),
    ([("a", torch.zeros(2))] * 1 + [("a", torch.ones(2))], "names repeat"),
])
def test_unfit_parameters_are_a_config_error(params, message):
    with pytest.raises(ConfigError, match=message):
        SGD(params, lr=0.1)


def test_tied_parameters_are_rejected():
    w = torch.zeros(2)
    with pytest.raises(ConfigError, match="'a' and 'b' are the same tensor"):
        SGD([("a", w), ("b", w)], lr=0.1)


def test_param_groups_get_their_own_lr_and_weight_decay_as_in_torch_optim():
    torch.manual_seed(0)
    ours = Sequential(Linear(3, 5), ReLU(), Linear(5, 2)).to(torch.float64)
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)).double()
    theirs.load_state_dict(ours.state_dict())

    def groups(model):
        return [{"params": model[0].parameters(), "lr": 0.1, "weight_decay": 0.5}, {"params": model[2].parameters()}]

    a, b = SGD(groups(ours), lr=0.01, momentum=0.9), torch.optim.SGD(groups(theirs), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        for p, tp in zip(ours.parameters(), theirs.parameters(), strict=True):
            tp.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad.copy_(tp.grad)
        a.step()
        b.step()
    for p, tp in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, tp.detach(), rtol=1e-12, atol=0)
    a.lr = 0.02                               # a schedule moves every group, keeping their ratio
    assert [g.lr for g in a.param_groups] == [0.02, pytest.approx(0.002)]


def test_torch_optim_trains_a_manualnet_model_and_zero_grad_set_to_none_is_fine():
    torch.manual_seed(0)
    model = Sequential(Linear(3, 5), ReLU(), Linear(5, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    for _ in range(2):
        optimizer.zero_grad()                 # torch's default: the gradients become None
        assert model[0].weight.grad is None
        model.backward(torch.ones_like(model(x)))
        optimizer.step()
    assert model[0].weight.grad.shape == (5, 3) and not model[0].weight.requires_grad


def test_zero_grad_in_place_after_dropping_the_gradients_before_any_backward_does_nothing():
    model = Sequential(Linear(3, 5), ReLU(), Linear(5, 2))
    optimizer = SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad(set_to_none=True)
    optimizer.zero_grad()  # as torch.optim's: no gradient to zero is no error
    assert all(p.grad is None for p in model.parameters())
    model.backward(torch.ones_like(model(torch.randn(4, 3))))
    optimizer.step()  # the gradients backward allocated, per parameter: the step takes them
    assert model[0].weight.grad.shape == (5, 3)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    params = make_params()
    feed(params, torch.Generator().manual_seed(3))
    grads = {name: p.grad for name, p in params.items()}
    torch_params = [torch.zeros_like(g, requires_grad=True) for g in grads.values()]
    for tp, g in zip(torch_params, grads.values(), strict=True):
        tp.grad = g.clone()
    expected = torch.nn.utils.clip_grad_norm_(torch_params, max_norm, norm_type)
    total = clip_grad_norm(grads, max_norm, norm_type)
    assert total.dim() == 0
    torch.testing.assert_close(total, expected, rtol=1e-14, atol=0)
    for g, tp in zip(grads.values(), torch_params, strict=True):
        torch.testing.assert_close(g, tp.grad, rtol=1e-14, atol=0)


def test_clipped_gradients_have_max_norm_and_small_ones_are_kept():
    grads = {"w": torch.tensor([3.0, 4.0], dtype=torch.float64)}
    assert clip_grad_norm(grads, 1.0).item() == 5.0
    torch.testing.assert_close(grads["w"], torch.tensor([0.6, 0.8], dtype=torch.float64) * 5 / (5 + 1e-6))
    assert clip_grad_norm(grads, 10.0).item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(grads["w"], torch.tensor([0.6, 0.8], dtype=torch.float64), atol=1e-6, rtol=0)


def test_grad_norm_is_the_global_norm_and_leaves_gradients_alone():
    grads = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[2.0], [4.0]])}
    assert grad_norm(grads).item() == 5.0
    assert grad_norm(grads.values(), float("inf")).item() == 4.0
    assert grads["b"][1, 0] == 4.0
    assert grad_norm({}).item() == 0.0


@pytest.mark.parametrize("max_norm", [0, -1.0, "1"])
def test_clip_grad_norm_rejects_non_positive_max_norm(max_norm):
    with pytest.raises(ConfigError, match="max_norm"):
        clip_grad_norm({"w": torch.ones(2)}, max_norm)


def test_param_groups_are_read_and_set_by_key_as_torch_optims_dicts_are():
    model = Sequential(Linear(3, 2))
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.1 and group["momentum"] == 0.9 and len(group["params"]) == 2
    group["lr"] = 0.02                        # a hand-written schedule, torch-style
    assert optimizer.lr == 0.02 and optimizer.state_dict()["param_groups"][0]["lr"] == 0.02
    with pytest.raises(KeyError, match="betas"):
        group["betas"] = (0.9, 0.99)


@pytest.mark.parametrize("key", ["momentum", "dampening", "weight_decay"])
def test_sgd_refuses_an_infinite_coefficient_as_adam_does(key):
    with pytest.raises(ConfigError, match=f"SGD argument {key}=inf: expected a finite number >= 0"):
        SGD([torch.zeros(2)], lr=0.1, **{key: math.inf})


def test_clip_grad_norm_takes_parameters_as_torch_does_and_scales_their_gradients_not_them():
    model = Sequential(Linear(3, 4), ReLU(), Linear(4, 2))
    model.zero_grad()
    model.backward(model(torch.randn(5, 3)))
    twin = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
    for t, p in zip(twin, model.parameters(), strict=True):
        t.grad = p.grad.clone()
    weights = [p.detach().clone() for p in model.parameters()]
    expected = torch.nn.utils.clip_grad_norm_(twin, 0.1)
    torch.testing.assert_close(clip_grad_norm(model.parameters(), 0.1), expected)
    for p, w, t in zip(model.parameters(), weights, twin, strict=True):
        assert torch.equal(p, w)                        # the weights are left alone
        torch.testing.assert_close(p.grad, t.grad)      # the gradients are clipped as torch clips them
    weight = model[0].weight                            # one parameter, as torch takes it too
    expected = torch.nn.utils.clip_grad_norm_(twin[0], 0.01)
    torch.testing.assert_close(clip_grad_norm(weight, 0.01), expected)
    assert torch.equal(weight, weights[0]) and torch.allclose(weight.grad, twin[0].grad)


@pytest.mark.parametrize("name, kwargs", [("Adam", {}), ("AdamW", {}), ("SGD", {"lr": 0.1, "momentum": 0.9})])
def test_a_model_moved_to_another_dtype_after_steps_goes_on_with_its_state_cast(name, kwargs):
    torch.manual_seed(0)
    model = Sequential(Linear(3, 4), ReLU(), Linear(4, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    twin.load_state_dict(model.state_dict())
    ours, theirs = OPTIMIZERS.get(name)(model.parameters(), **kwargs), getattr(torch.optim, name)(twin.parameters(),
                                                                                                  **kwargs)
    x = torch.randn(5, 3)

    def step(dtype):
        ours.zero_grad()
        model(x.to(dtype))
        model.backward(torch.ones(5, 2, dtype=dtype))
        ours.step()
        theirs.zero_grad()
        twin(x.to(dtype)).backward(torch.ones(5, 2, dtype=dtype))
        theirs.step()

    for _ in range(3):
        step(torch.float32)
    model.to(torch.float64)
    twin.to(torch.float64)
    for state in theirs.state.values():  # what torch.optim's load_state_dict does; a plain .to() leaves it
        state.update({k: v.double() for k, v in state.items() if k != "step" and v.is_floating_point()})
    for _ in range(3):
        step(torch.float64)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p, q, rtol=1e-12, atol=0)
