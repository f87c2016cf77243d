import math

import torch
import torch.nn.functional as F

from manualnet.nn.init import INITS
from manualnet.nn.module import Module, Parameter, register_layer
from manualnet.registry import expect, is_count, is_pair_of, is_size

Size2 = int | tuple[int, int]  # torch.nn's per-axis sizes: one for both axes, or (h, w)


def pair(value):
    """(v, v) for an int, the two ints of a pair: torch.nn's spelling of per-axis sizes."""
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


@register_layer("Conv2d")
class Conv2d(Module):
    """A 2-D cross-correlation of x with a bank of kernels W, in ``groups`` independent channel groups:

        y[n, o, p, q] = b[o] + sum_{c in group(o)} sum_{i, j} W[o, c, i, j] * xp[n, c, s*p + d*i, s*q + d*j]

    where xp is x zero-padded by ``padding``, s the stride and d the dilation (per axis).

    Args:
        in_channels, out_channels: C and O; both divisible by ``groups``.
        kernel_size, stride, padding, dilation: an int or an (h, w) pair each, as in ``torch.nn.Conv2d``.
        groups: G; output channel o sees only the C/G input channels of its group.
        bias: learn b.
        init: weight scheme from ``manualnet.nn.init``, applied to W viewed as (O, C/G*kh*kw); ``default`` is
            PyTorch's (U(+-1/sqrt(fan_in)) for W and b, drawn in torch's order).
        generator: a seeded ``torch.Generator`` for the weights (the global RNG if None).
    Shape: x (N, C, H, W) -> y (N, O, Ho, Wo), Ho = (H + 2*pad - d*(kh - 1) - 1) // s + 1 (Wo alike);
        weight (O, C/G, kh, kw), bias (O,). ``needs_input_grad = False`` skips dx (a first layer's input is data).

    Backward is two convolutions (below), not unfold (im2col) and matrix products: im2col copies x kh*kw
    times and fold scatter-adds it back, where the convolutions tile without the copy (the figures:
    docs/cnn.md, from ``scripts/bench.py --conv``, its "unfold" column).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size2, stride: Size2 = 1, padding: Size2 = 0,
                 dilation: Size2 = 1, groups: int = 1, bias: bool = True, init: str = "default", generator=None,
                 device=None, dtype=None):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise self.fail(f"in_channels {in_channels} and out_channels {out_channels} must both be divisible "
                            f"by groups {groups}")
        self.padding, self.dilation = pair(padding), pair(dilation)
        self.needs_input_grad = True
        kh, kw = self.kernel_size
        self.weight = Parameter(torch.empty(out_channels, in_channels // groups, kh, kw, device=device, dtype=dtype))
        INITS.get(init, where="Conv2d init")(self.weight.view(out_channels, -1), generator=generator)
        self.bias = None
        if bias:
            self.bias = Parameter(torch.empty(out_channels, device=device, dtype=dtype))
            if init == "default":
                bound = 1 / math.sqrt(self.weight[0].numel())     # fan_in = C/G * kh * kw
                self.bias.uniform_(-bound, bound, generator=generator)
            else:
                self.bias.zero_()

    @classmethod
    def problems(cls, args):
        return ([p for name in ("in_channels", "out_channels", "groups") for p in expect(args, name, is_count,
                                                                                         "a whole number >= 1")]
                + [p for name in ("kernel_size", "stride", "dilation")
                   for p in expect(args, name, is_pair_of(is_count), "a whole number >= 1, or a pair of them")]
                + expect(args, "padding", is_pair_of(is_size), "a whole number >= 0, or a pair of them"))

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise self.fail(f"expects x of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        (ph, pw), (dh, dw), (kh, kw) = self.padding, self.dilation, self.kernel_size
        if x.shape[2] + 2 * ph < dh * (kh - 1) + 1 or x.shape[3] + 2 * pw < dw * (kw - 1) + 1:
            raise self.fail(f"input {tuple(x.shape[2:])} padded by {self.padding} is smaller than the dilated "
                            f"kernel {(dh * (kh - 1) + 1, dw * (kw - 1) + 1)}")

    def forward(self, x):
        self.cache = x                                   # backward needs only x (and W, a parameter)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def backward(self, dy):
        x = self.take_cache()
        self.weight.grad += self._weight_grad(x, dy)
        if self.bias is not None:
            self.bias.grad += dy.sum((0, 2, 3))          # db[o] = sum_{n,p,q} dy[n, o, p, q]
        if not self.needs_input_grad:
            return None
        return self._input_grad(x.shape, dy)

    def _input_grad(self, x_shape, dy):
        """dx[n, c, h, w] = sum_{o,p,q : s*p + d*i - pad = h} dy[n, o, p, q] W[o, c, i, j]: each output
        scatters back through the kernel, i.e. dy correlated with the flipped kernel, which is what
        conv_transpose2d computes (a forward op). output_padding restores the rows a stride cut off."""
        extra = tuple(size + 2 * p - d * (k - 1) - 1 - s * (out - 1) for size, p, d, k, s, out in
                      zip(x_shape[2:], self.padding, self.dilation, self.kernel_size, self.stride, dy.shape[2:],
                          strict=True))
        return F.conv_transpose2d(dy, self.weight, None, self.stride, self.padding, extra, self.groups,
                                  self.dilation)

    def _weight_grad(self, x, dy):
        """dW[o, c, i, j] = sum_{n,p,q} dy[n, o, p, q] xp[n, c, s*p + d*i, s*q + d*j]: a correlation of x with dy,
        with the samples as the summed channels, dy as the kernel, and stride and dilation swapping roles.
        Each group correlates its own input channels with its own output channels."""
        (n, c, h, w), g = x.shape, self.groups
        # x: (N, C, H, W) -> (C/G, G*N, H, W); dy: (N, O, Ho, Wo) -> (O, N, Ho, Wo), group-major
        xs = x.reshape(n, g, c // g, h, w).permute(2, 1, 0, 3, 4).reshape(c // g, g * n, h, w)
        ds = dy.transpose(0, 1)
        dw = F.conv2d(xs, ds, None, self.dilation, self.padding, self.stride, g)   # (C/G, O, >=kh, >=kw)
        kh, kw = self.kernel_size
        return dw[:, :, :kh, :kw].transpose(0, 1)

    def reference(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    @classmethod
    def example(cls, generator):
        """A grouped, strided, padded, dilated conv with a non-square kernel, and a float64 input."""
        layer = cls(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                    generator=generator).to(dtype=torch.float64)
        return layer, (torch.randn(3, 4, 7, 6, generator=generator, dtype=torch.float64),)

    def describe(self):
        return f"Conv2d({self.in_channels}->{self.out_channels}, k={self.kernel_size})"

    def extra_repr(self):
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
                 f"stride={self.stride}" if self.stride != (1, 1) else "",
                 f"padding={self.padding}" if self.padding != (0, 0) else "",
                 f"dilation={self.dilation}" if self.dilation != (1, 1) else "",
                 f"groups={self.groups}" if self.groups != 1 else "",
                 "bias=False" if self.bias is None else ""]
        return ", ".join(filter(None, parts))
