"""Gradient norms and clipping by global norm, as torch.nn.utils.clip_grad_norm_ computes them.

Both work without a host sync: the norm stays a 0-d tensor on the gradients' device, and clipping
multiplies by a clamped coefficient instead of branching on ``norm > max_norm``.
"""

import torch

from manualnet.errors import ConfigError


def grad_norm(grads, norm_type=2.0):
    """||(g_1, ..., g_k)||_p: the p-norm of all gradients seen as one vector, a 0-d tensor.

    Args:
        grads: the gradients, all on one device: ``model.parameters()`` (their ``.grad``, as torch's
            ``clip_grad_norm_`` takes them), or gradient tensors (an iterable, or a dict name -> tensor).
        norm_type: p of the p-norm: 2 by default, ``float("inf")`` for the largest absolute entry.
    """
    tensors = _tensor_list(grads)
    if not tensors:
        return torch.tensor(0.0)
    if len(tensors) == 1:  # a flat gradient buffer: one op
        return torch.linalg.vector_norm(tensors[0], norm_type)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors, norm_type)), norm_type)


def clip_grad_norm(grads, max_norm, norm_type=2.0):
    """Scale all gradients in place by min(1, max_norm / (||g||_p + 1e-6)); return ||g||_p before scaling.

    The 1e-6 and the clamp are torch's, so the result matches ``torch.nn.utils.clip_grad_norm_``.

    Args:
        grads: as in ``grad_norm``: ``model.parameters()``, or gradient tensors.
        max_norm: the largest norm kept (> 0). norm_type: p, as in ``grad_norm``.
    Returns: the total norm, a 0-d tensor (non-finite if a gradient is; the gradients then become NaN).
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
        raise ConfigError(f"clip_grad_norm argument max_norm={max_norm!r}: expected a number > 0")
    tensors = _tensor_list(grads)
    total = grad_norm(tensors, norm_type)
    if tensors:
        scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(tensors, scale)
    return total


def _tensor_list(grads):
    """The gradient tensors: a parameter stands for its ``.grad`` (none yet: no gradient), never itself."""
    tensors = []
    if isinstance(grads, torch.Tensor):  # one parameter or gradient, as torch takes it (not its rows)
        grads = [grads]
    for t in (grads.values() if isinstance(grads, dict) else grads):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"gradient norm: expected parameters or gradient tensors, got a {type(t).__name__}")
        if isinstance(t, torch.nn.Parameter):
            if t.grad is not None:
                tensors.append(t.grad)
        else:
            tensors.append(t)
    return tensors
