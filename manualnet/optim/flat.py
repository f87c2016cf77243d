"""One flat buffer behind many tensors: the optimizer's one speed trick, kept in this one place.

A parameter group's parameters (and, separately, their gradients) are moved into consecutive views of one
contiguous buffer, so that the update, ``zero_grad``, gradient norms, clipping and data-parallel all-reduce
run as one op on the buffer instead of one per tensor. Each tensor keeps its identity (the modules, the
optimizer and the checkpoints hold references to it); only its storage moves.
"""

import operator

import torch


def flatten_(tensors):
    """Move ``tensors`` (one dtype, one device) into one new contiguous buffer, in place: each becomes a view
    of the buffer, values kept. Returns the buffer."""
    flat = torch.empty(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=tensors[0].device)
    with torch.no_grad():  # copying a torch.nn parameter (it requires grad) must not put the buffer in a graph
        for t, view in zip(tensors, split(flat, tensors), strict=True):
            view.copy_(t)
            t.data = view
    return flat


def split(flat, like):
    """Views of ``flat``, one per tensor of ``like``, shaped like it, in order."""
    views, offset = [], 0
    for t in like:
        views.append(flat[offset:offset + t.numel()].view(t.shape))
        offset += t.numel()
    return views


class FlatLayout:
    """A group's parameters and gradients in two flat buffers, and a cheap check that they are still there
    (``Module.to`` moves tensors one by one; ``zero_grad(set_to_none=True)`` drops the gradients)."""

    def __init__(self, params):
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.params = params
        self.param_buffer = flatten_(params)
        self.grad_buffer = torch.empty_like(self.param_buffer)
        for p, view in zip(params, split(self.grad_buffer, params), strict=True):
            view.copy_(p.grad)
            p.grad = view
        self._pointers = list(map(torch.Tensor.data_ptr, params))
        self._grads = [p.grad for p in params]

    @staticmethod
    def fits(params):
        """Whether the tensors can share one buffer: one dtype and device, none listed twice."""
        return bool(params) and len({(p.dtype, p.device) for p in params}) == 1 and \
            len({id(p) for p in params}) == len(params)

    def valid(self):
        """Whether every parameter still lives in the buffer and still has its view as ``.grad``."""
        with torch._C.DisableTorchFunctionSubclass():  # a Parameter's .grad and data_ptr() at a tensor's cost
            return list(map(torch.Tensor.data_ptr, self.params)) == self._pointers and \
                all(map(operator.is_, map(_grad, self.params), self._grads))


_grad = operator.attrgetter("grad")
