"""One flat buffer behind many tensors.

A model's parameters (and, separately, its gradients) live as consecutive views of one contiguous buffer,
so that whole-model work runs as one op on the buffer instead of one per tensor: the optimizer's update,
``zero_grad``, the gradient norm and clipping, the all-reduce of data-parallel training. Each tensor keeps
its identity (the layers, the optimizer and the checkpoints hold references to it); only its storage moves.
"""

import torch


def flatten_(tensors):
    """Move ``tensors`` (one dtype, one device) into one new contiguous buffer, in place: each becomes a view
    of the buffer, values kept. Returns the buffer, or None when there is nothing to flatten or the tensors
    do not share a dtype and device (they then stay as they were)."""
    tensors = list(tensors)
    if not tensors or len({(t.dtype, t.device) for t in tensors}) > 1:
        return None
    flat = torch.empty(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=tensors[0].device)
    offset = 0
    for t in tensors:
        view = flat[offset:offset + t.numel()].view(t.shape)
        view.copy_(t)
        t.data = view
        offset += t.numel()
    return flat


def split(flat, like):
    """Views of ``flat``, one per tensor of ``like``, shaped like it, in order."""
    views, offset = [], 0
    for t in like:
        views.append(flat[offset:offset + t.numel()].view(t.shape))
        offset += t.numel()
    return views


class FlatGroup:
    """Tensors moved into one flat buffer (``flatten_``), and a cheap check that they are still there.

    ``buffer`` is None when the tensors could not be flattened (mixed dtypes or devices, none at all).
    """

    def __init__(self, tensors):
        self.tensors = list(tensors)
        self.buffer = flatten_(self.tensors) if len({id(t) for t in self.tensors}) == len(self.tensors) else None
        self._pointers = list(map(torch.Tensor.data_ptr, self.tensors))

    def valid(self):
        """Whether every tensor still lives where ``flatten_`` put it (``Layer.to`` moves them one by one;
        the old buffer stays alive here, so its addresses cannot be reused by a moved tensor)."""
        return self.buffer is not None and list(map(torch.Tensor.data_ptr, self.tensors)) == self._pointers
