"""When the loss or a gradient stops being finite: find the first layer that produced it."""

import torch

from manualnet.nn import Sequential


def diagnose(model, loss, xb, tb, step, value, norm=None):
    """Replay the failing batch layer by layer and name the first non-finite value, forward then backward.
    ``value`` is the batch's loss, ``norm`` the gradient norm (when the loss was finite but it was not)."""
    where = _first_non_finite(model, loss, xb, tb)
    what = f"the loss is {value:g}" if norm is None else f"the loss is {value:g} but the gradient norm is {norm:g}"
    return (f"training diverged at step {step + 1}: {what}; first non-finite value: {where}. "
            "Lower optim.lr or set train.grad_clip")


def diagnose_parameters(model):
    """Which parameter is non-finite and, while the model holds the last step's gradients, which layer's
    backward made it so; None when every parameter is finite."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return f"parameter {name} (the previous update made it non-finite{_source(model)})"
    return None


def _layers(model):
    """The model's top-level children in forward order (a chain), or the model itself as one layer."""
    children = list(model.named_children())
    return children if isinstance(model, Sequential) and children else [("model", model)]


def _first_non_finite(model, loss, xb, tb):
    where = diagnose_parameters(model)
    if where is not None:
        return where
    model.zero_grad()
    x = xb
    for i, layer in _layers(model):
        x = layer(x)
        if not torch.isfinite(x).all():
            return f"layer {i} ({type(layer).__name__}) output, in forward"
    if not torch.isfinite(loss(x, tb)):
        return f"the loss ({type(loss).__name__}), in forward"
    dy = loss.backward()  # the loss's own hand-written dL/dpred, as the training step computes it
    if not torch.isfinite(dy).all():
        return f"the loss ({type(loss).__name__}) gradient, in backward"
    for i, layer in reversed(_layers(model)):
        dy = layer.backward(dy)
        bad = _non_finite_grad(layer)
        if bad:
            return f"layer {i} ({type(layer).__name__}) d{bad}, in backward"
        if dy is not None and not torch.isfinite(dy).all():
            return f"layer {i} ({type(layer).__name__}) dx, in backward"
    return "none on replay (the batch's values overflowed only in the fused step)"


def _non_finite_grad(layer):
    for name, p in layer.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return name
    return None


def _source(model):
    """Where the previous step's backward first produced a non-finite gradient (the highest layer with
    one: backward runs from the last layer down), while the model still holds that step's gradients."""
    for i, layer in reversed(_layers(model)):
        bad = _non_finite_grad(layer)
        if bad:
            return f": its backward gave layer {i} ({type(layer).__name__}) a non-finite d{bad}"
    return ""
