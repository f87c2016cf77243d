import torch

from manualnet.nn.module import Module, register_layer


@register_layer("Dropout")
class Dropout(Module):
    """In training, y = x * m / (1 - p) with m ~ Bernoulli(1 - p) drawn per element; in eval, y = x.

    Args:
        p: probability of zeroing an element, 0 <= p < 1.
        generator: a seeded ``torch.Generator`` (on x's device) for the masks; the global RNG if None.
    Shape: any; y has x's shape.
    """

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not 0 <= p < 1:
            raise self.fail(f"p must be in [0, 1), got {p}")
        self.p = float(p)
        self.generator = generator

    def forward(self, x):
        if not self.training or self.p == 0:
            self.cache = None                   # identity: backward passes dy through
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        scaled_mask = keep.to(x.dtype) / (1 - self.p)
        self.cache = scaled_mask                # backward needs only the scaled mask
        return x * scaled_mask

    def backward(self, dy):
        scaled_mask = self.take_cache()
        return dy if scaled_mask is None else dy * scaled_mask   # dx = dy * m / (1 - p)

    def extra_repr(self):
        return f"p={self.p}"
