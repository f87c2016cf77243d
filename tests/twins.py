"""A manualnet layer and its torch.nn twin sharing one state dict, run on the same input and upstream gradient,
and finite differences of a manualnet layer's own forward."""

import torch

from manualnet.verify.finite_diff import numeric_gradient


def seeded(shape, seed, dtype=torch.float64):
    """Standard normal numbers drawn in float64 (the same values in every dtype)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def run_twins(ours, theirs, x, seed=0):
    """``(ours_grads, theirs_grads)``: y, dx and every parameter's gradient ("dweight", ...) of each, after
    one forward and backward of ``ours`` by hand and of ``theirs`` by autograd, with ``ours``'s state dict
    loaded into ``theirs`` unchanged (the names match torch.nn's or this fails)."""
    theirs.load_state_dict(ours.state_dict())
    y = ours(x)
    dy = seeded(y.shape, 1000 + seed, x.dtype)     # not the seed of the tests' inputs: dy must not be x
    dx = ours.backward(dy)
    x_leaf = x.detach().clone().requires_grad_(True)
    y_torch = theirs(x_leaf)
    y_torch.backward(dy)
    got = {"y": y, "dx": dx, **{f"d{name}": p.grad for name, p in ours.named_parameters()}}
    want = {"y": y_torch.detach(), "dx": x_leaf.grad, **{f"d{name}": p.grad for name, p in theirs.named_parameters()}}
    return got, want


def rel_err(actual, expected):
    """max |actual - expected| / max |expected|: the worst error relative to the tensor's scale."""
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300))


def finite_difference_grads(layer, x, seed=0):
    """``(manual, numeric)``: dx and each parameter's gradient by ``layer.backward`` and by central differences
    of L = sum(layer(x) * dy), all in float64 (the layer must be float64)."""
    dy = seeded(layer(x).shape, 1000 + seed)
    layer.zero_grad()
    layer(x)
    manual = {"dx": layer.backward(dy), **{f"d{n}": p.grad.clone() for n, p in layer.named_parameters()}}
    tensors = {"dx": x, **{f"d{n}": p for n, p in layer.named_parameters()}}

    def objective():
        return float((layer(x) * dy).sum())

    numeric = {name: numeric_gradient(objective, t, torch.arange(t.numel())).reshape(t.shape)
               for name, t in tensors.items()}
    return manual, numeric
