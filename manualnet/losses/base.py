"""The loss contract: ``forward(pred, target)`` returns a 0-d loss; ``backward()`` returns dL/dpred."""

import functools

import torch

from manualnet.errors import LayerError
from manualnet.registry import Registry

LOSSES = Registry("loss")


def register_loss(name):
    """Decorator: make a Loss subclass available to configs as ``loss: {type: name}``."""
    return LOSSES.register(name)


class Loss:
    """Base class of the losses.

    ``reduction="mean"`` averages over the elements (or samples, for the class-index losses) like
    PyTorch; ``"sum"`` adds them up. Subclasses implement ``forward(pred, target)``, caching what backward
    needs, and ``backward(dloss)``; a functional ``reference(pred, target)`` is what verify checks against.
    """

    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum"):
            raise LayerError(f"{type(self).__name__}: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.cache = None
        self._pred_shape = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _checked_forward(cls.__dict__["forward"])
        if "backward" in cls.__dict__:
            cls.backward = _checked_backward(cls.__dict__["backward"])

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def take_cache(self):
        cache, self.cache = self.cache, None
        return cache

    def fail(self, problem):
        return LayerError(f"{type(self).__name__}: {problem}")

    def check_target(self, pred, target):
        """Raise LayerError if target does not fit pred; the default wants the same shape, floating."""
        if target.shape != pred.shape:
            raise self.fail(f"pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}; "
                            "they must match")
        if not target.is_floating_point():
            raise self.fail(f"target has dtype {target.dtype}; expected a floating tensor like pred")

    def reduce(self, elementwise):
        return elementwise.mean() if self.reduction == "mean" else elementwise.sum()

    def scale(self, count):
        """d(reduction)/d(element): 1/count for mean, 1 for sum."""
        return 1.0 / count if self.reduction == "mean" else 1.0

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"


def _checked_forward(forward):
    @functools.wraps(forward)
    def checked(self, pred, target):
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise self.fail("forward expects pred and target as torch.Tensors")
        if not pred.is_floating_point():
            raise self.fail(f"pred has dtype {pred.dtype}; expected a floating tensor, cast it with pred.float()")
        self.check_target(pred, target)
        if torch.is_grad_enabled():
            with torch.no_grad():
                loss = forward(self, pred, target)
        else:
            loss = forward(self, pred, target)
        self._pred_shape = None if torch.is_inference_mode_enabled() else pred.shape
        if self._pred_shape is None:
            self.cache = None
        return loss

    return checked


def _checked_backward(backward):
    @functools.wraps(backward)
    def checked(self, dloss=1.0):
        if self._pred_shape is None:
            raise self.fail("backward called without a forward to go back through (call forward first)")
        self._pred_shape = None
        if torch.is_grad_enabled():
            with torch.no_grad():
                return backward(self, dloss)
        return backward(self, dloss)

    return checked
