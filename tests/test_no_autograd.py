"""Autograd is never used by manualnet outside manualnet/verify: not in the source, not at run time."""

import ast
from pathlib import Path

import pytest
import torch

from manualnet import LayerError, Linear, MSELoss, Sequential
from manualnet.optim import SGD, Adam
from tests.conftest import randn

PACKAGE = Path(__file__).resolve().parent.parent / "manualnet"

# Files allowed to call .backward() on a torch tensor, and why.
TENSOR_METHODS = {"sum", "mean", "norm", "max", "min", "prod", "square", "pow", "abs"}


def torch_names(tree):
    """Names bound to torch or its submodules in a module (torch, F, nn, ...)."""
    names = {"torch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names
                      if alias.name.startswith("torch")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def root_name(node):
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def is_clearly_a_tensor(node, torch_aliases):
    """A torch op's result (``F.mse_loss(...)``, ``torch.sum(...)``) or a reduction (``x.sum()``): not a
    manualnet Loss, whose ``loss.backward()`` is the library's own API."""
    if not isinstance(node, ast.Call):
        return False
    if isinstance(node.func, ast.Attribute) and node.func.attr in TENSOR_METHODS:
        return True
    return root_name(node) in torch_aliases


def autograd_uses(source):
    """(line, what) for every use of autograd in a module's source."""
    tree = ast.parse(source)
    aliases, found = torch_names(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "autograd" and root_name(node) in aliases:
            found.append((node.lineno, "torch.autograd"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                "torch.autograd" in name for name in [getattr(node, "module", None) or ""] +
                [alias.name for alias in node.names]):
            found.append((node.lineno, "import of torch.autograd"))
        elif isinstance(node, ast.Attribute) and node.attr in ("requires_grad_", "retain_grad"):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.keyword) and node.arg == "requires_grad" and getattr(node.value, "value", 0):
            found.append((node.value.lineno, "requires_grad=True"))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "requires_grad"
                                                  for t in node.targets):
            found.append((node.lineno, "requires_grad assignment"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward"
              and is_clearly_a_tensor(node.func.value, aliases)):
            found.append((node.lineno, "tensor.backward()"))
    return sorted(found)


def test_source_outside_verify_never_uses_autograd():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "verify":
            continue
        for line, what in autograd_uses(path.read_text()):
            problems.append(f"manualnet/{relative}:{line}: {what}")
    assert not problems, "autograd outside manualnet/verify:\n" + "\n".join(problems)


def test_the_scan_finds_every_forbidden_pattern():
    source = "\n".join([
        "import torch",
        "import torch.nn.functional as F",
        "from torch.autograd import grad",
        "g = torch.autograd.grad(y, x)",
        "w.requires_grad_()",
        "t = torch.zeros(3, requires_grad=True)",
        "h.retain_grad()",
        "F.mse_loss(a, b).backward()",
        "(a * b).sum().backward()",
        "w.requires_grad = True",
        "loss.backward()",                      # a manualnet Loss: the library's API, allowed
        "self.loss.backward(weight)",
        "t = torch.zeros(3, requires_grad=False)",
    ])
    assert autograd_uses(source) == [
        (3, "import of torch.autograd"), (4, "torch.autograd"), (5, "requires_grad_"), (6, "requires_grad=True"),
        (7, "retain_grad"), (8, "tensor.backward()"), (9, "tensor.backward()"), (10, "requires_grad assignment"),
    ]


# -- at run time -------------------------------------------------------------------------------------------------

@pytest.fixture
def autograd_forbidden(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("autograd was called")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "grad", refuse)


def model_around(layer_case):
    """A Linear (so there is something to train) feeding the layer under test, in float64; a layer that takes
    token ids has its own parameters to train and comes first."""
    if layer_case.takes_ids:
        return Sequential(layer_case.make()).to(dtype=torch.float64)
    features = layer_case.shape[-1]
    return Sequential(Linear(features, features), layer_case.make()).to(dtype=torch.float64)


def requiring_grad(x):
    """x as a leaf that requires grad; integer token ids (Embedding, GPT) cannot, and stay as they are."""
    return x.requires_grad_() if x.is_floating_point() else x


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_training_cycle_runs_without_autograd(layer_case, optimizer, autograd_forbidden):
    model, loss = model_around(layer_case), MSELoss()
    opt = optimizer(model.parameters(), lr=0.05)
    x = requiring_grad(layer_case.input())
    before = {name: p.clone() for name, p in model.named_parameters()}
    target = randn(model.forward(x).shape, seed=1)
    for _ in range(2):
        opt.zero_grad()
        y = model.forward(x)
        value = loss.forward(y, target)
        dx = model.backward(loss.backward())
        opt.step()
        assert y.grad_fn is None and value.grad_fn is None and getattr(dx, "grad_fn", None) is None
    assert not any(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert not any(p.requires_grad or p.grad.requires_grad for p in model.parameters())
    with pytest.raises(AssertionError, match="autograd was called"):
        value.sum().backward()                  # the guard is really in place


def test_parameters_never_require_grad(layer_case):
    layer = layer_case.make().to(dtype=torch.float32)
    y = layer.forward(*map(requiring_grad, layer_case.inputs(dtype=torch.float32)))
    layer.backward(torch.ones_like(y))
    assert not any(p.requires_grad for p in layer.parameters())
    assert not any(p.grad.requires_grad for p in layer.parameters())


def test_an_input_that_requires_grad_gives_outputs_without_a_graph(layer_case):
    layer = layer_case.make()
    y = layer.forward(*map(requiring_grad, layer_case.inputs()))
    dy = torch.ones_like(y).requires_grad_()
    dxs = layer.backward(dy)
    assert y.grad_fn is None and all(getattr(dx, "grad_fn", None) is None
                                     for dx in (dxs if isinstance(dxs, tuple) else (dxs,)))
    assert all(g.grad_fn is None for g in (p.grad for p in layer.parameters()))


def test_a_loss_input_that_requires_grad_gives_outputs_without_a_graph(loss_case):
    pred, target = loss_case.data()
    loss = loss_case.make()
    value = loss.forward(pred.requires_grad_(), target)
    dpred = loss.backward()
    assert value.grad_fn is None and dpred.grad_fn is None


def test_backward_after_forward_under_inference_mode_is_refused_not_differentiated(layer_case):
    layer = layer_case.make()
    with torch.inference_mode():
        y = layer.forward(*layer_case.inputs())
    assert layer.cache is None
    with pytest.raises(LayerError, match="inference_mode"):
        layer.backward(torch.ones(y.shape, dtype=y.dtype))
