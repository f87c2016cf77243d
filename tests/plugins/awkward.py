"""User layers the self-test cannot simply build and feed: it checks what it can (TenFeatures, at width 10)
and says why it skips the rest, never aborting."""

import torch

import manualnet


@manualnet.register_layer("NeedsScale")
class NeedsScale(manualnet.Module):
    """y = scale * x; ``scale`` has no default, so the self-test cannot build it."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return self.scale * x

    def backward(self, dy):
        return self.scale * dy                  # dx = scale * dy


class _FixedWidth(manualnet.Module):
    """y = x * w for a fixed vector w of ``width`` entries; refuses any other number of features."""

    width = 0

    def __init__(self):
        super().__init__()
        self.w = torch.linspace(-1, 1, self.width, dtype=torch.float64)

    def check_inputs(self, x):
        if x.shape[-1] != self.width:
            raise self.fail(f"expects {self.width} input features, gets {x.shape[-1]}")

    def forward(self, x):
        return x * self.w.to(x.dtype)

    def backward(self, dy):
        return dy * self.w.to(dy.dtype)         # dx = dy * w


@manualnet.register_layer("TenFeatures")
class TenFeatures(_FixedWidth):
    width = 10


@manualnet.register_layer("ThirteenFeatures")
class ThirteenFeatures(_FixedWidth):
    width = 13
