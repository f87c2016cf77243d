"""Mutation test: the classic backward bugs, planted in copies of real layers, are each caught by verify;
each correct original passes."""

import pytest
import torch

import manualnet as mn
from manualnet.verify.command import verify_model


class MissingTranspose(mn.Linear):
    def backward(self, dy):
        x = self.take_cache()
        self.weight.grad.addmm_(dy.t(), x)
        self.bias.grad += dy.sum(0)
        return dy @ self.weight.t()   # bug: dx = dy @ W^T instead of dy @ W


class DiagonalSoftmax(mn.Softmax):
    def backward(self, dy):
        y = self.take_cache()
        return dy * y * (1 - y)                 # bug: only the Jacobian's diagonal


class SumInsteadOfMean(mn.MSELoss):
    def backward(self, dloss=1.0):
        diff = self.take_cache()
        return 2 * diff * dloss                 # bug: forgets the mean's 1 / count


class DroppedBias(mn.Linear):
    def backward(self, dy):
        x = self.take_cache()
        self.weight.grad.addmm_(dy.t(), x)  # bug: no bias gradient
        return dy @ self.weight


class Overwrites(mn.Linear):
    def backward(self, dy):
        x = self.take_cache()
        self.weight.grad.copy_(dy.t() @ x)  # bug: overwrites instead of accumulating
        self.bias.grad.copy_(dy.sum(0))
        return dy @ self.weight


class WrongSign(mn.Sigmoid):
    def backward(self, dy):
        y = self.take_cache()
        return -dy * y * (1 - y)                # bug: sign


def model_with(layer_type, loss_type=mn.CrossEntropyLoss):
    """A small float64 model around the layer under test: 6 -> 5 -> [layer] -> 4 classes."""
    torch.manual_seed(0)
    middle = {mn.Linear: lambda: layer_type(5, 5), mn.Softmax: lambda: layer_type(dim=-1),
              mn.Sigmoid: lambda: layer_type()}
    base = next(b for b in (mn.Linear, mn.Softmax, mn.Sigmoid) if issubclass(layer_type, b))
    layers = [mn.Linear(6, 5), middle[base](), mn.Linear(5, 4)]
    return mn.Sequential(*layers).to(dtype=torch.float64), loss_type()


def batch(loss):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 6, generator=gen, dtype=torch.float64)
    if isinstance(loss, mn.MSELoss):
        return x, torch.randn(7, 4, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, 4, (7,), generator=gen)


MUTANTS = [
    (MissingTranspose, mn.CrossEntropyLoss, "dx"),
    (DiagonalSoftmax, mn.CrossEntropyLoss, "dx"),
    (DroppedBias, mn.CrossEntropyLoss, "dbias"),
    (Overwrites, mn.CrossEntropyLoss, "dweight accumulates"),
    (WrongSign, mn.CrossEntropyLoss, "dx"),
]


@pytest.mark.parametrize("mutant, loss_type, tensor", MUTANTS, ids=lambda m: getattr(m, "__name__", str(m)))
def test_planted_layer_bug_is_caught(mutant, loss_type, tensor):
    model, loss = model_with(mutant, loss_type)
    rows = verify_model(model, loss, *batch(loss))
    failed = [(r.index, r.tensor) for r in rows if not r.passed]
    assert ("1", tensor) in failed, failed


@pytest.mark.parametrize("mutant", [m for m, _, _ in MUTANTS], ids=lambda m: m.__name__)
def test_correct_original_passes(mutant):
    model, loss = model_with(mutant.__mro__[1])
    rows = verify_model(model, loss, *batch(loss), fd=True)
    assert all(r.passed for r in rows), [r for r in rows if not r.passed]


def test_mean_sum_slip_in_a_loss_is_caught():
    model, loss = model_with(mn.Sigmoid, SumInsteadOfMean)
    rows = verify_model(model, loss, *batch(loss))
    assert [(r.index, r.tensor) for r in rows if not r.passed and r.index == "loss"] == [("loss", "dpred")]
    model, loss = model_with(mn.Sigmoid, mn.MSELoss)
    assert all(r.passed for r in verify_model(model, loss, *batch(loss)))
