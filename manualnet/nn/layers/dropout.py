import torch

from manualnet.nn.module import Module, register_layer
from manualnet.registry import expect, is_probability


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
        self.p = float(p)
        self.generator = generator

    @classmethod
    def problems(cls, args):
        return expect(args, "p", is_probability, "a number in [0, 1)")

    def forward(self, x):
        if not self.training or self.p == 0:
            self.cache = None                   # identity: backward passes dy through
            return x
        scaled_mask = self.scaled_mask(x)
        self.cache = scaled_mask                # backward needs only the scaled mask
        return x * scaled_mask

    def backward(self, dy):
        scaled_mask = self.take_cache()
        return dy if scaled_mask is None else dy * scaled_mask   # dx = dy * m / (1 - p)

    def scaled_mask(self, x):
        """m / (1 - p), one Bernoulli(1 - p) draw per element of x."""
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        return keep.to(x.dtype) / (1 - self.p)

    def extra_repr(self):
        return f"p={self.p}"


@register_layer("Dropout2d")
class Dropout2d(Dropout):
    """In training, y[n, c] = x[n, c] * m[n, c] / (1 - p), m[n, c] ~ Bernoulli(1 - p): whole channels are
    dropped (neighbouring pixels are too alike for per-pixel dropout to regularise a conv net); in eval, y = x.

    Args:
        p: probability of zeroing a channel, 0 <= p < 1.
        generator: a seeded ``torch.Generator`` (on x's device) for the masks; the global RNG if None.
    Shape: x (N, C, H, W) -> y of x's shape; the mask is (N, C, 1, 1). Backward is Dropout's, dx = dy * m / (1 - p).
    """

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.dim() != 4:
            raise self.fail(f"expects x of shape (N, C, H, W), got {tuple(x.shape)}")

    def scaled_mask(self, x):
        """m / (1 - p) as (N, C, 1, 1), one Bernoulli(1 - p) draw per channel."""
        keep = torch.rand(x.shape[:2], generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        return (keep.to(x.dtype) / (1 - self.p))[:, :, None, None]

    @classmethod
    def example(cls, generator):
        """A seeded mask that drops some channels of a small image batch."""
        return cls(0.4, generator=torch.Generator().manual_seed(7)), \
            (torch.randn(3, 4, 5, 5, generator=generator, dtype=torch.float64),)
