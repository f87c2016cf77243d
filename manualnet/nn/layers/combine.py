"""Layers with several inputs: the joins of a network that is not a chain."""

import torch

from manualnet.nn.module import Module, register_layer


@register_layer("Add")
class Add(Module):
    """y = a + b + ... (same shapes). Shape: each input (*) -> y (*)."""

    def check_inputs(self, *xs):
        super().check_inputs(*xs)
        if len({x.shape for x in xs}) > 1:
            raise self.fail(f"inputs must have one shape, got {', '.join(str(tuple(x.shape)) for x in xs)}")

    @classmethod
    def example(cls, generator):
        return cls(), tuple(torch.randn(3, 4, generator=generator, dtype=torch.float64) for _ in range(3))

    def forward(self, *xs):
        self.cache = len(xs)                    # backward needs only how many inputs there were
        return sum(xs[1:], xs[0])

    def backward(self, dy):
        n = self.take_cache()
        return (dy,) * n if n > 1 else dy       # da = db = ... = dy (one input: its gradient alone, as a layer's)

    def reference(self, *xs):
        return sum(xs[1:], xs[0])


@register_layer("Concat")
class Concat(Module):
    """y = cat([a, b, ...], dim). Shape: inputs equal except along ``dim``; y's ``dim`` is their sum."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def check_inputs(self, *xs):
        super().check_inputs(*xs)
        if not xs:
            raise self.fail("takes one input or more, got none")
        ndim = xs[0].dim()
        if not -ndim <= self.dim < ndim:
            raise self.fail(f"dim={self.dim} is out of range for inputs of {ndim} dims")
        others = {(x.dim(), *(s for d, s in enumerate(x.shape) if d != self.dim % ndim)) for x in xs}
        if len(others) > 1:
            raise self.fail(f"inputs must be equal in every dim but dim={self.dim}, got "
                            f"{', '.join(str(tuple(x.shape)) for x in xs)}")

    @classmethod
    def example(cls, generator):
        return cls(dim=1), tuple(torch.randn(3, w, generator=generator, dtype=torch.float64) for w in (2, 5))

    def forward(self, *xs):
        self.cache = [x.shape[self.dim] for x in xs]   # backward needs each input's width along dim
        return torch.cat(xs, self.dim)

    def backward(self, dy):
        widths = self.take_cache()
        if len(widths) == 1:
            return dy                                   # one input: y is x, so dx is dy, as a layer's
        return tuple(dy.split(widths, self.dim))        # each input's gradient is its slice of dy

    def reference(self, *xs):
        return torch.cat(xs, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


@register_layer("MatMul")
class MatMul(Module):
    """y = a @ b over the last two dims. Shape: a (*, n, k), b (*, k, m) -> y (*, n, m), same batch dims."""

    def check_inputs(self, a, b):
        super().check_inputs(a, b)
        if a.dim() < 2 or a.dim() != b.dim() or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
            raise self.fail(f"expects a (*, n, k) and b (*, k, m) with the same batch dims, got "
                            f"{tuple(a.shape)} and {tuple(b.shape)}")

    @classmethod
    def example(cls, generator):
        a = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
        return cls(), (a, torch.randn(2, 4, 5, generator=generator, dtype=torch.float64))

    def forward(self, a, b):
        self.cache = (a, b)                     # backward needs both factors
        return a @ b

    def backward(self, dy):
        a, b = self.take_cache()
        return dy @ b.mT, a.mT @ dy             # da = dy @ b^T, db = a^T @ dy

    def reference(self, a, b):
        return a @ b
