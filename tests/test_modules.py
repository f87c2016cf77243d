"""Modules: registration by attribute, torch.nn parity of Sequential and user composites, state dicts, dtype
and device moves, the checks on the training path, and verify on composite modules."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import manualnet as mn
from manualnet import LayerError, Sequential
from manualnet.verify import all_passed, check_model, check_module, format_table
from manualnet.verify.command import verify_model
from tests.conftest import randn

# manualnet layer -> the torch.nn module computing the same function
TORCH_EQUIVALENT = {
    mn.Linear: lambda layer: torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None),
    mn.ReLU: lambda layer: torch.nn.ReLU(),
    mn.LeakyReLU: lambda layer: torch.nn.LeakyReLU(layer.negative_slope),
    mn.Sigmoid: lambda layer: torch.nn.Sigmoid(),
    mn.Tanh: lambda layer: torch.nn.Tanh(),
    mn.Softmax: lambda layer: torch.nn.Softmax(layer.dim),
    mn.LogSoftmax: lambda layer: torch.nn.LogSoftmax(layer.dim),
    mn.Flatten: lambda layer: torch.nn.Flatten(layer.start_dim, layer.end_dim),
    mn.Identity: lambda layer: torch.nn.Identity(),
    mn.Dropout: lambda layer: torch.nn.Dropout(layer.p),
}


def every_builtin_model(generator_seed=0):
    """A model using every built-in one-input layer once, 6 features in, 4 class scores out."""
    torch.manual_seed(generator_seed)
    return Sequential(
        mn.Flatten(), mn.Linear(6, 8), mn.ReLU(), mn.Linear(8, 8, init="xavier_uniform"), mn.LeakyReLU(0.1),
        mn.Dropout(0.25, generator=torch.Generator().manual_seed(3)), mn.Tanh(), mn.Identity(), mn.Linear(8, 5),
        mn.Sigmoid(), mn.Linear(5, 4, bias=False), mn.Softmax(dim=1), mn.Linear(4, 4), mn.LogSoftmax(dim=1),
    ).to(torch.float64)


def torch_copy(model):
    twin = torch.nn.Sequential(*(TORCH_EQUIVALENT[type(layer)](layer) for layer in model)).to(torch.float64)
    twin.load_state_dict(model.state_dict())
    return twin


# -- user composites: a residual MLP block and a two-input module ------------------------------------------------

class ResidualMLP(mn.Module):
    """y = x + fc2(relu(fc1(x)))."""

    def __init__(self, d, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = mn.Linear(d, hidden), mn.ReLU(), mn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))

    def backward(self, dy):
        return dy + self.fc1.backward(self.act.backward(self.fc2.backward(dy)))


class Gate(mn.Module):
    """y = proj(a) * sigmoid(gate(b)): two inputs, each with its own path."""

    def __init__(self, d):
        super().__init__()
        self.proj, self.gate, self.sigmoid = mn.Linear(d, d), mn.Linear(d, d), mn.Sigmoid()

    def forward(self, a, b):
        p, s = self.proj(a), self.sigmoid(self.gate(b))
        self.cache = (p, s)
        return p * s

    def backward(self, dy):
        p, s = self.take_cache()
        da = self.proj.backward(dy * s)                           # d(p * s)/dp = s
        db = self.gate.backward(self.sigmoid.backward(dy * p))    # d(p * s)/ds = p
        return da, db


class Net(mn.Module):
    """Two residual blocks, then a gate of the features with themselves, then a head."""

    def __init__(self, d=6, classes=3):
        super().__init__()
        self.blocks = mn.ModuleList([ResidualMLP(d, 2 * d) for _ in range(2)])
        self.gate, self.head = Gate(d), mn.Linear(d, classes)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(self.gate(x, x))

    def backward(self, dy):
        da, db = self.gate.backward(self.head.backward(dy))
        dx = da + db                                # x fed both inputs: the gradients of the two uses add
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        return dx


class TorchResidualMLP(torch.nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))


class TorchGate(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj, self.gate = torch.nn.Linear(d, d), torch.nn.Linear(d, d)

    def forward(self, a, b):
        return self.proj(a) * torch.sigmoid(self.gate(b))


class TorchNet(torch.nn.Module):
    def __init__(self, d=6, classes=3):
        super().__init__()
        self.blocks = torch.nn.ModuleList([TorchResidualMLP(d, 2 * d) for _ in range(2)])
        self.gate, self.head = TorchGate(d), torch.nn.Linear(d, classes)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(self.gate(x, x))


def test_parameters_are_named_by_attribute_path_like_torch():
    ours, theirs = Net(), TorchNet()
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in theirs.named_parameters()]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert all(isinstance(p, mn.Parameter) and not p.requires_grad for p in ours.parameters())


def test_composite_matches_torch_nn_outputs_and_every_gradient_in_float64():
    torch.manual_seed(0)
    ours = Net().to(torch.float64)
    theirs = TorchNet().to(torch.float64)
    theirs.load_state_dict(ours.state_dict())
    x = randn((5, 6), seed=1).requires_grad_()
    target = torch.tensor([0, 2, 1, 1, 0])
    loss = mn.CrossEntropyLoss()
    value = loss(ours(x.detach()), target)
    dx = ours.backward(loss.backward())
    expected = F.cross_entropy(theirs(x), target)
    expected.backward()
    torch.testing.assert_close(value, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(dx, x.grad, rtol=1e-10, atol=1e-15)
    for (name, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert (p.grad - tp.grad).abs().max() <= 1e-10 * tp.grad.abs().max(), name
    ours_back = Net().to(torch.float64)       # and the other way: torch's weights into manualnet
    ours_back.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours_back(x.detach()), theirs(x).detach(), rtol=0, atol=0)


def train(model, optimizer, steps=100, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 6, generator=gen)
    target = torch.randint(0, 3, (32,), generator=gen)
    loss = mn.CrossEntropyLoss()
    for _ in range(steps):
        optimizer.zero_grad()
        loss(model(x), target)
        model.backward(loss.backward())
        optimizer.step()
    return loss(model(x), target).item()


def test_torch_optim_and_manualnet_optim_train_a_composite_to_the_same_weights():
    torch.manual_seed(0)
    model = Net()
    twin = copy.deepcopy(model)
    first = train(model, torch.optim.Adam(model.parameters(), lr=3e-3))
    second = train(twin, mn.optim.Adam(twin.parameters(), lr=3e-3))
    assert abs(first - second) < 1e-6 and first < 0.5
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_verify_passes_a_composite_and_checks_every_module_at_its_real_inputs():
    torch.manual_seed(0)
    model = Net().to(torch.float64)
    x, target = randn((5, 6), seed=1), torch.tensor([0, 2, 1, 1, 0])
    rows = verify_model(model, mn.CrossEntropyLoss(), x, target, fd=True)
    assert all_passed(rows), format_table(rows)
    checked = {row.index for row in rows}
    assert {"blocks.0", "blocks.0.fc1", "blocks.1.act", "gate", "gate.proj", "gate.sigmoid", "head", "loss",
            None} <= checked
    gate_rows = {row.tensor for row in rows if row.index == "gate" and row.method == "autograd"}
    assert {"dx0", "dx1", "dproj.weight", "dgate.bias"} <= gate_rows


class ResidualForgettingTheSkip(ResidualMLP):
    def backward(self, dy):
        return self.fc1.backward(self.act.backward(self.fc2.backward(dy)))      # bug: no "dy +"


class GateDroppingAnInput(Gate):
    def backward(self, dy):
        da, _ = super().backward(dy)
        return da, torch.zeros_like(da)                                         # bug: b's gradient dropped


@pytest.mark.parametrize(("where", "mutant", "failing"), [
    ("blocks.1", ResidualForgettingTheSkip, {("blocks.1", "dx")}),
    ("gate", GateDroppingAnInput, {("gate", "dx1")}),
])
def test_verify_fails_a_planted_composite_bug_at_that_module(where, mutant, failing):
    torch.manual_seed(0)
    model = Net().to(torch.float64)
    dict(model.named_modules())[where].__class__ = mutant      # the same weights, the buggy backward
    rows = verify_model(model, mn.CrossEntropyLoss(), randn((5, 6), seed=1), torch.tensor([0, 2, 1, 1, 0]))
    failed = {(row.index, row.tensor) for row in rows if not row.passed}
    assert failing <= failed, failed
    assert (None, "dx") in failed                     # end to end, the model's input gradient is wrong too
    assert not any(index in ("head", "blocks.0.fc1", "gate.proj") for index, _ in failed)


def test_residual_container_matches_its_written_out_block():
    torch.manual_seed(0)
    block = mn.Residual([mn.Linear(4, 8), mn.ReLU(), mn.Linear(8, 4)]).to(torch.float64)
    assert [name for name, _ in block.named_parameters()] == ["block.0.weight", "block.0.bias", "block.2.weight",
                                                               "block.2.bias"]
    rows = check_module(block, randn((3, 4), seed=0), fd=True)
    assert all_passed(rows), format_table(rows)


@pytest.mark.parametrize("module", [mn.Add(), mn.Concat(dim=1), mn.MatMul()])
def test_multi_input_modules_return_one_gradient_per_input(module):
    _, inputs = type(module).example(torch.Generator().manual_seed(0))
    y = module(*inputs)
    grads = module.backward(torch.ones_like(y))
    assert isinstance(grads, tuple) and [g.shape for g in grads] == [x.shape for x in inputs]


# -- the API a torch user reaches for ------------------------------------------------------------------------

def test_subpackages_are_reachable_from_the_top_level_import():
    assert mn.optim.SGD is not None and mn.verify.check_module is not None and mn.data is not None
    assert mn.nn.Linear is mn.Linear


def test_sequential_indexes_slices_and_counts_like_torch():
    model = Sequential(mn.Linear(3, 4), mn.ReLU(), mn.Linear(4, 2))
    assert isinstance(model[0], mn.Linear) and isinstance(model[-1], mn.Linear) and len(model) == 3
    head = model[1:]
    assert isinstance(head, Sequential) and len(head) == 2 and head[1] is model[2]
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize("args", [(torch.float64,), ("cpu", torch.float64), ("cpu",)])
def test_to_takes_device_and_dtype_positionally_and_keeps_parameter_identity(args):
    model = Net()
    params = dict(model.named_parameters())
    model.to(*args)
    expected = torch.float64 if torch.float64 in args else torch.float32
    assert all(p is params[name] and p.dtype == expected for name, p in model.named_parameters())
    with pytest.raises(LayerError, match="floating dtype"):
        model.to(torch.int64)


def test_train_and_eval_reach_every_descendant():
    model = Net().eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_tied_weights_are_one_parameter_whose_gradient_sums_both_uses():
    torch.manual_seed(0)
    first, second = mn.Linear(4, 4, bias=False), mn.Linear(4, 4, bias=False)
    second.weight = first.weight
    model = Sequential(first, mn.Tanh(), second).to(torch.float64)
    assert [name for name, _ in model.named_parameters()] == ["0.weight"]
    assert list(model.state_dict()) == ["0.weight", "2.weight"]
    rows = check_model(model, mn.MSELoss(), randn((3, 4), seed=0), randn((3, 4), seed=1))
    assert all_passed(rows), format_table(rows)


def test_assigning_a_non_parameter_to_a_parameter_name_is_refused():
    layer = mn.Linear(2, 2)
    with pytest.raises(LayerError, match=r"Linear.weight is a registered parameter; assign a Parameter"):
        layer.weight = torch.zeros(2, 2)


# -- the seeds' way: each layer's backward by hand ----------------------------------------------------------------

def test_each_layers_backward_by_hand_works_after_repeated_forwards():
    model = Sequential(mn.Linear(3, 4), mn.Sigmoid(), mn.Linear(4, 2))
    x = torch.randn(5, 3)
    results = []
    for _ in range(2):
        model.forward(x)
        d = torch.ones(5, 2)
        for layer in reversed(model.layers):
            d = layer.backward(d)
        results.append(d)
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


# -- checks on the training path ------------------------------------------------------------------------------

class WrongShapeDx(mn.Module):
    def forward(self, x):
        return 2 * x

    def backward(self, dy):
        return 2 * dy[:, :1]                      # bug: one column of dx


def test_a_backward_returning_a_wrongly_shaped_dx_is_caught_on_the_first_step():
    model = Sequential(mn.Linear(3, 3), WrongShapeDx())
    y = model(torch.randn(5, 3))
    with pytest.raises(LayerError, match=r"WrongShapeDx: backward returned a gradient of shape \(5, 1\) for "
                                         r"input 0, which has shape \(5, 3\)"):
        model.backward(torch.ones_like(y))


def test_the_full_checks_run_once_per_input_signature():
    class Counted(mn.Linear):
        def check_inputs(self, x):
            calls.append(tuple(x.shape))

    layer, calls = Counted(3, 2), []
    for rows in (4, 4, 2, 4, 2):
        layer(torch.randn(rows, 3))
        layer.backward(torch.ones(rows, 2))
    assert calls == [(4, 3), (2, 3)]


def test_forward_under_inference_mode_keeps_no_cache():
    model = every_builtin_model()
    with torch.inference_mode():
        y = model.forward(randn((3, 6), seed=0))
    assert all(layer.cache is None for layer in model)
    with pytest.raises(LayerError, match="call forward first"):
        model.backward(torch.ones_like(y))


# -- state dicts ---------------------------------------------------------------------------------------------

def test_state_dict_loads_into_torch_sequential_with_the_same_outputs_and_gradients():
    model = every_builtin_model().eval()
    twin = torch_copy(model).eval()
    x, target = randn((7, 2, 3), seed=0), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    y = model.forward(x)
    torch.testing.assert_close(y, twin(x), rtol=1e-12, atol=1e-14)
    loss = mn.CrossEntropyLoss()
    loss.forward(y, target)
    model.backward(loss.backward())
    F.cross_entropy(twin(x), target).backward()
    for (name, p), (_, tp) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, tp.grad, rtol=1e-10, atol=1e-14, msg=name)


def test_loading_torch_parameters_that_require_grad_keeps_ours_free_of_autograd():
    torch.manual_seed(0)
    model = Sequential(mn.Linear(3, 4), mn.ReLU(), mn.Linear(4, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model.load_state_dict(dict(twin.named_parameters()))
    for name, p in model.named_parameters():
        assert not p.requires_grad and p.grad_fn is None
        assert torch.equal(p, twin.state_dict()[name])


def test_strict_load_lists_missing_unexpected_and_misshaped_names():
    model = Sequential(mn.Linear(3, 4), mn.ReLU(), mn.Linear(4, 2))
    state = dict(model.state_dict())
    del state["2.bias"]
    state["5.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(4, 4)
    with pytest.raises(LayerError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "missing 2.bias" in message and "unexpected 5.weight" in message
    assert "mis-shaped 0.weight: given (4, 4) vs model (4, 3)" in message


def test_non_strict_load_skips_missing_and_unexpected_names_but_not_misshaped():
    model = Sequential(mn.Linear(3, 4))
    before = model[0].bias.clone()
    model.load_state_dict({"0.weight": torch.ones(4, 3), "9.weight": torch.ones(1)}, strict=False)
    assert torch.equal(model[0].weight, torch.ones(4, 3)) and torch.equal(model[0].bias, before)
    with pytest.raises(LayerError, match=r"mis-shaped 0.weight: given \(3, 3\) vs model \(4, 3\)"):
        model.load_state_dict({"0.weight": torch.ones(3, 3)}, strict=False)


def test_repr_shows_each_layer_and_the_parameter_counts():
    text = repr(Sequential(mn.Linear(3, 4), mn.ReLU(), mn.Linear(4, 2)))
    assert "(0): Linear(in_features=3, out_features=4, bias=True)  # 16 params" in text
    assert "(1): ReLU()" in text and "(1): ReLU()  #" not in text
    assert text.endswith(")  # 26 parameters")


# -- check_model -----------------------------------------------------------------------------------------------

def test_check_model_passes_a_model_of_every_builtin_layer_in_train_mode():
    model = every_builtin_model()
    x, target = randn((5, 6), seed=1), torch.tensor([0, 3, 1, 2, 3])
    rows = check_model(model, mn.NLLLoss(), x, target, fd=True, tol=1e-10)
    assert all_passed(rows), format_table(rows)
    per_layer = {(row.index, row.layer) for row in rows if row.index is not None}
    assert per_layer == {(str(i), layer.describe()) for i, layer in enumerate(model)} | {("loss", "NLLLoss")}
    end_to_end = [row.tensor for row in rows if row.index is None]
    assert end_to_end == ["loss", "dx"] + [f"d{name}" for name, _ in model.named_parameters()]


def test_check_model_points_at_the_wrong_layer():
    class SigmoidMissingAFactor(mn.Sigmoid):
        def backward(self, dy):
            y = self.take_cache()
            return dy * y                       # forgot (1 - y)

    model = Sequential(mn.Linear(4, 5), SigmoidMissingAFactor(), mn.Linear(5, 3)).to(torch.float64)
    rows = check_model(model, mn.MSELoss(), randn((6, 4), seed=0), randn((6, 3), seed=1), fd=True)
    failed = {(row.index, row.tensor) for row in rows if not row.passed}
    assert ("1", "dx") in failed and not any(index in ("0", "2", "loss") for index, _ in failed)
    assert {(None, "d0.weight"), (None, "dx")} <= failed
    assert (None, "d2.weight") not in failed    # downstream of the bug, the gradients are still right


def test_check_model_leaves_the_model_untouched():
    model = every_builtin_model()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {name: p.clone() for name, p in model.named_parameters()}
    generator_state = model[5].generator.get_state()
    check_model(model, mn.NLLLoss(), randn((5, 6), seed=1), torch.tensor([0, 3, 1, 2, 3]))
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert torch.equal(model[5].generator.get_state(), generator_state)


@pytest.mark.cuda
def test_check_model_passes_on_cuda():
    model = Sequential(mn.Linear(6, 8), mn.ReLU(), mn.Dropout(0.2), mn.Linear(8, 4)).to(device="cuda")
    rows = check_model(model, mn.CrossEntropyLoss(), torch.randn(5, 6, device="cuda"),
                       torch.tensor([0, 1, 2, 3, 0], device="cuda"), fd=True)
    assert all_passed(rows), format_table(rows)


class WrongShapeGrad(mn.Linear):
    def backward(self, dy):
        dx = super().backward(dy)
        self.bias.grad = torch.zeros(1)           # bug: a gradient of the wrong shape (torch refuses it)
        return dx


def test_a_backward_setting_a_wrongly_shaped_parameter_gradient_is_one_layer_error():
    model = Sequential(mn.Linear(3, 3), WrongShapeGrad(3, 3))
    y = model(torch.randn(5, 3))
    with pytest.raises(LayerError, match=r"^Linear\(3->3\): backward set a parameter's gradient of the "
                                         r"wrong shape \(.*size '\[1\]'.*'\[3\]'"):
        model.backward(torch.ones_like(y))


PLUGIN = """
import torch
import manualnet


@manualnet.register_layer("HalfDx")
class HalfDx(manualnet.Module):
    def forward(self, x):
        return 2 * x

    def backward(self, dy):
        return 2 * dy[:, : dy.shape[1] // 2]      # bug: half of dx
"""


def test_training_with_a_plugin_whose_backward_returns_a_wrongly_shaped_dx_is_one_line_and_exit_2(tmp_path,
                                                                                                  capsys):
    from manualnet.cli.main import main
    from tests.helpers import config_path

    (tmp_path / "half.py").write_text(PLUGIN)
    code = main(["train", "--config", str(config_path("mlp")), "--run-dir", str(tmp_path / "run"), "--quiet",
                 "--set", f"plugins=[{tmp_path / 'half.py'}]", "--set", "train.epochs=1",
                 "--set", "model=[{type: Linear, out_features: 32}, {type: HalfDx}, {type: Linear, out_features: 10}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "HalfDx: backward returned a gradient of shape (64, 16) for input 0, which has shape (64, 32)" in err[0]


# -- mistakes a PyTorch user makes, each one line naming the module ---------------------------------------------

def test_a_linear_takes_a_single_sample_as_torch_does():
    layer = mn.Linear(3, 2).to(torch.float64)
    rows = check_module(layer, randn((3,), seed=0), fd=True)
    assert all_passed(rows), format_table(rows)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Sequential(mn.Linear(4, 8)).to(torch.float64)(torch.randn(2, 4)),
     r"^Sequential: layer 0: Linear\(4->8\): input 0 is torch.float32 on cpu, its parameters torch.float64 on cpu"),
    (lambda: mn.Residual(mn.Linear(3, 4))(torch.randn(2, 3)),
     r"^Residual: the block turns \(2, 3\) into \(2, 4\); a skip connection needs the block to keep its input's"),
    (lambda: mn.Concat(1)(torch.randn(2, 3), torch.randn(3, 3)),
     r"^Concat: inputs must be equal in every dim but dim=1, got \(2, 3\), \(3, 3\)$"),
    (lambda: mn.Concat(2)(torch.randn(2, 3), torch.randn(2, 3)), r"^Concat: dim=2 is out of range for inputs of 2"),
    (lambda: mn.Concat(1)(torch.randn(3, 4), torch.randn(3)),
     r"^Concat: inputs must be equal in every dim but dim=1, got \(3, 4\), \(3,\)$"),
    (lambda: mn.Concat()(), r"^Concat: takes one input or more, got none$"),
])
def test_a_forward_that_cannot_work_is_one_layer_error(make, message):
    with pytest.raises(LayerError, match=message):
        make()


@pytest.mark.parametrize(("grads", "message"), [
    ((torch.ones(2, 3), torch.ones(2, 3)), r"backward got 2 gradients, expected 1 \(one per output of forward\)"),
    ((torch.ones(2, 3, dtype=torch.float64),), r"backward got dy of dtype torch.float64, but forward's output is "
                                                r"torch.float32$"),
    ((np.ones((2, 3)),), r"backward got a ndarray, expected torch.Tensors"),
])
def test_backward_says_what_is_wrong_with_its_gradients(grads, message):
    model = Sequential(mn.Linear(3, 3))
    model(torch.randn(2, 3))
    with pytest.raises(LayerError, match=rf"^Sequential: {message}"):
        model.backward(*grads)


def test_forgetting_super_init_is_named():
    class Forgot(mn.Module):
        def __init__(self):
            self.fc = mn.Linear(2, 2)

    with pytest.raises(LayerError, match=r"^Forgot.fc: call super\(\).__init__\(\) first in Forgot.__init__"):
        Forgot()


def test_torch_conveniences_double_float_apply_and_load_state_dicts_report():
    model = Net()
    assert all(p.dtype == torch.float64 for p in model.double().parameters())
    assert all(p.dtype == torch.float32 for p in model.float().parameters())
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 7
    result = model.load_state_dict({"head.weight": torch.zeros(3, 6), "extra": torch.zeros(1)}, strict=False)
    assert result.unexpected_keys == ["extra"] and "head.bias" in result.missing_keys


def test_a_backward_returning_fewer_gradients_than_forward_took_inputs_is_named():
    class Product(mn.Module):
        def forward(self, a, b):
            self.cache = (a, b)
            return a * b

        def backward(self, dy):
            a, b = self.take_cache()
            return dy * b                        # forgot b's gradient, dy * a

    module = Product()
    module(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(LayerError, match=r"^Product: backward returned 1 gradient\(s\) for the 2 input\(s\)"):
        module.backward(torch.ones(2, 3))


class Masked(mn.Module):
    """forward(x, mask=None): the optional input's gradient may be left out."""

    def check_inputs(self, x, mask=None):
        super().check_inputs(x)

    def forward(self, x, mask=None):
        self.cache = mask
        return x if mask is None else x * mask

    def backward(self, dy):
        mask = self.take_cache()
        return dy if mask is None else dy * mask


class MaskedAlwaysPair(Masked):
    def backward(self, dy):
        mask = self.take_cache()
        return (dy if mask is None else dy * mask), None


class Gather(mn.Module):
    def check_inputs(self, x, index):
        super().check_inputs(x)

    def forward(self, x, index):
        self.cache = (x.shape, index)
        return x.gather(1, index)

    def backward(self, dy):
        shape, index = self.take_cache()
        return torch.zeros(shape, dtype=dy.dtype).scatter_add_(1, index, dy)   # and nothing for the indices


class MeanSquared(mn.MSELoss):
    def backward(self, dloss=1.0):
        return super().backward(dloss), None                                      # the target's: None


def test_inputs_after_the_last_floating_one_and_a_losss_target_may_get_no_gradient():
    x = torch.randn(2, 3)
    for module, inputs in ((Masked(), (x, None)), (Gather(), (x, torch.tensor([[0], [2]])))):
        module(*inputs)
        assert module.backward(torch.ones_like(module.forward(*inputs))).shape == x.shape
    loss = MeanSquared()
    loss(x, torch.randn(2, 3))
    assert loss.backward()[1] is None
    optional = MaskedAlwaysPair()
    optional(x)                                       # called without its mask: (dx, None), as torch accepts
    assert optional.backward(torch.ones(2, 3))[1] is None


class Promoting(mn.Module):
    """A parent whose child works in float64 on a float32 input: the child's dy is the parent's to give."""

    def __init__(self):
        super().__init__()
        self.act = mn.Sigmoid()

    def forward(self, x):
        return self.act(x.double()).float()

    def backward(self, dy):
        return self.act.backward(dy).float()


def test_a_childs_dy_of_another_dtype_from_its_parent_is_not_the_callers_mistake():
    module = Promoting()
    module(torch.randn(2, 3))
    assert module.backward(torch.ones(2, 3)).dtype == torch.float32


class ForgotInit(mn.Module):
    def __init__(self):  # no super().__init__(), and nothing assigned that would have said so
        pass

    def forward(self, x):
        return x


class Unreduced(mn.Loss):
    def forward(self, pred, target):
        self.cache = pred - target
        return self.cache ** 2  # the elementwise loss, not one number

    def backward(self, dloss=1.0):
        return 2 * self.take_cache() * dloss


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ForgotInit()(torch.randn(2, 3)),
     r"^ForgotInit: call super\(\).__init__\(\) first in ForgotInit.__init__$"),
    (lambda: Unreduced()(torch.randn(2, 3), torch.randn(2, 3)),
     r"^Unreduced: forward returned shape \(2, 3\); a loss is one number: reduce it"),
])
def test_a_students_layer_or_loss_mistake_is_one_layer_error(make, message):
    with pytest.raises(LayerError, match=message):
        make()


class WithProperty(mn.Module):
    def __init__(self):
        super().__init__()
        self.weight = mn.Parameter(torch.ones(2, 2))

    @property
    def weight_t(self):
        return self.wieght.t()  # a typo inside a property


def test_an_attribute_error_inside_a_property_names_the_missing_attribute():
    with pytest.raises(AttributeError, match="'wieght'"):
        _ = WithProperty().weight_t


class IntegerLoss(mn.Loss):
    def forward(self, pred, target):
        return (pred > target).sum()  # a count, not a loss

    def backward(self, dloss=1.0):
        return None


def test_a_loss_whose_value_is_not_a_floating_number_is_one_layer_error():
    with pytest.raises(LayerError, match=r"^IntegerLoss: forward returned a torch.int64 value; a loss is one number"):
        IntegerLoss()(torch.randn(2, 3), torch.randn(2, 3))
