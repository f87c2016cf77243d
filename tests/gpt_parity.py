"""Gradients by hand and by autograd, side by side, for the GPT tests."""

import torch


def by_hand(module, inputs, dy):
    """(y, input gradients, {parameter name: gradient}) from manualnet's own forward and backward."""
    module.zero_grad(set_to_none=True)
    y = module(*inputs)
    dx = module.backward(dy)
    dxs = dx if isinstance(dx, tuple) else (dx,)
    return y, dxs, {name: p.grad.clone() for name, p in module.named_parameters()}


def by_autograd(twin, inputs, dy):
    """The same for a torch.nn twin, differentiated by autograd on L = sum(y * dy)."""
    leaves = [x.detach().clone().requires_grad_() if x.is_floating_point() else x for x in inputs]
    y = twin(*leaves)
    (y * dy).sum().backward()
    dxs = tuple(x.grad if x.is_floating_point() else None for x in leaves)
    return y.detach(), dxs, {name: p.grad for name, p in twin.named_parameters()}


def rel_err(actual, expected):
    """max |actual - expected| / max |expected|: one number per tensor, as llm.c prints."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300)).item()


def assert_same(hand, auto, tol=None):
    """Outputs, input gradients and every parameter gradient agree: relative error <= tol in float64,
    torch.testing's defaults otherwise; both sides name the same parameters."""
    (y, dxs, grads), (y_ref, dxs_ref, grads_ref) = hand, auto
    assert grads.keys() == grads_ref.keys()
    pairs = [("y", y, y_ref)] + [(f"dx{i}", a, b) for i, (a, b) in enumerate(zip(dxs, dxs_ref, strict=True))
                                 if b is not None]
    pairs += [(f"d{name}", grads[name], grads_ref[name]) for name in grads]
    for name, a, b in pairs:
        if tol is not None:
            assert rel_err(a, b) <= tol, f"{name}: relative error {rel_err(a, b):.2e} > {tol}"
        else:
            torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")
