"""The loss contract: ``forward(pred, target)`` returns a 0-d loss; ``backward()`` returns dL/dpred."""

import functools

import torch

from manualnet.errors import LayerError
from manualnet.nn.module import Module
from manualnet.registry import Registry

LOSSES = Registry("loss")


def register_loss(name):
    """Decorator: make a Loss subclass available to configs as ``loss: {type: name}``."""
    return LOSSES.register(name)


def _no_graph_to_go_back_through(*args, **kwargs):
    raise LayerError("this loss value has no autograd graph: manualnet's backward is written by hand. Call "
                     "dpred = loss_fn.backward(), then model.backward(dpred) (the trainer does both)")


class Loss(Module):
    """Base class of the losses: ``forward(pred, target)`` returns a 0-d loss, ``backward(dloss=1.0)``
    returns dL/dpred (the target gets no gradient).

    ``reduction="mean"`` averages over the elements (or samples, for the class-index losses) like
    PyTorch; ``"sum"`` adds them up. Subclasses implement ``forward(pred, target)``, caching what backward
    needs, ``backward(dloss)`` and a functional ``reference(pred, target)`` that verify checks against.
    """

    inputs_with_gradients = 1  # pred's: the target gets none (backward returns dL/dpred alone)
    takes_class_indices = False  # a config's classification data comes as one-hot rows; True: as indices

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _returning_a_loss_value(cls.__dict__["forward"])

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise LayerError(f"{type(self).__name__}: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def check_inputs(self, pred, target):
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise self.fail("forward expects pred and target as torch.Tensors")
        if not pred.is_floating_point():
            raise self.fail(f"pred has dtype {pred.dtype}; expected a floating tensor, cast it with pred.float()")
        self.check_target(pred, target)

    def check_target(self, pred, target):
        """Raise LayerError if target does not fit pred; the default wants the same shape, floating (with
        ``takes_class_indices``: integer indices, pred's shape without its last dim, the classes')."""
        if self.takes_class_indices:
            if target.is_floating_point() or target.dtype == torch.bool or target.shape != pred.shape[:-1]:
                raise self.fail(f"pred {tuple(pred.shape)} takes integer class indices of shape "
                                f"{tuple(pred.shape[:-1])} as target, got {target.dtype} {tuple(target.shape)}")
            return
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

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


def _returning_a_loss_value(forward):
    @functools.wraps(forward)
    def value(self, pred, target):
        loss = forward(self, pred, target)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.is_floating_point():
            got = (f"a {type(loss).__name__}" if not isinstance(loss, torch.Tensor) else f"shape {tuple(loss.shape)}"
                   if loss.dim() else f"a {loss.dtype} value")
            raise self.fail(f"forward returned {got}; a loss is one number: reduce it (self.reduce(elementwise) "
                            "takes the mean or the sum, as reduction says)")
        if not loss.requires_grad:  # no graph (one built under autograd, as verify's, keeps torch's backward)
            # the autograd habit, loss.backward(), says what to call instead; an attribute of this one tensor
            # (it stays a plain torch.Tensor), as a tensor subclass costs every step more
            loss.backward = _no_graph_to_go_back_through
        return loss

    return value
