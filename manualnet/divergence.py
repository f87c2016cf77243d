"""When the loss or a gradient stops being finite: find the first layer that produced it."""

import torch


class Diverged(Exception):
    """Training produced a non-finite loss or gradient (exit code 1)."""


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
    for name, p in model.params.items():
        if not torch.isfinite(p).all():
            return f"parameter {name} (the previous update made it non-finite{_source(model)})"
    return None


def _first_non_finite(model, loss, xb, tb):
    where = diagnose_parameters(model)
    if where is not None:
        return where
    model.zero_grad()
    x = xb
    for i, layer in enumerate(model.layers):
        x = layer.forward(x)
        if not torch.isfinite(x).all():
            return f"layer {i} ({type(layer).__name__}) output, in forward"
    if not torch.isfinite(loss.forward(x, tb)):
        return f"the loss ({type(loss).__name__}), in forward"
    dy = loss.backward()  # the loss's own hand-written dL/dpred, as the training step computes it
    if not torch.isfinite(dy).all():
        return f"the loss ({type(loss).__name__}) gradient, in backward"
    for i in reversed(range(len(model.layers))):
        layer = model.layers[i]
        dy = layer.backward(dy)
        for name, grad in layer.grads.items():
            if not torch.isfinite(grad).all():
                return f"layer {i} ({type(layer).__name__}) d{name}, in backward"
        if dy is not None and not torch.isfinite(dy).all():
            return f"layer {i} ({type(layer).__name__}) dx, in backward"
    return "none on replay (the batch's values overflowed only in the fused step)"


def _source(model):
    """Where the previous step's backward first produced a non-finite gradient (the highest layer with
    one: backward runs from the last layer down), while the model still holds that step's gradients."""
    for i in reversed(range(len(model.layers))):
        layer = model.layers[i]
        for name, grad in layer.grads.items():
            if not torch.isfinite(grad).all():
                return f": its backward gave layer {i} ({type(layer).__name__}) a non-finite d{name}"
    return ""
