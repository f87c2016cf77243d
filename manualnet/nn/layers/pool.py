import torch
import torch.nn.functional as F

from manualnet.nn.layers.conv import Size2, pair
from manualnet.nn.module import Module, register_layer
from manualnet.registry import expect, is_count, is_pair_of, is_size


class _Pool2d(Module):
    """What the 2-D pools share: (N, C, H, W) inputs, a window per output pixel, torch.nn's arguments."""

    def __init__(self, kernel_size: Size2, stride: Size2 | None = None, padding: Size2 = 0, dilation: Size2 = 1,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride if stride is not None else kernel_size)
        self.padding, self.dilation, self.ceil_mode = pair(padding), pair(dilation), bool(ceil_mode)
        if any(2 * p > d * (k - 1) + 1 for p, d, k in zip(self.padding, self.dilation, self.kernel_size, strict=True)):
            raise self.fail(f"padding {self.padding} must be at most half the (dilated) window {self.kernel_size}")

    @classmethod
    def problems(cls, args):
        positive = "a whole number >= 1, or a pair of them"
        return ([p for name in ("kernel_size", "dilation") for p in expect(args, name, is_pair_of(is_count), positive)]
                + expect(args, "stride", lambda v: v is None or is_pair_of(is_count)(v), positive)
                + expect(args, "padding", is_pair_of(is_size), "a whole number >= 0, or a pair of them"))

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.dim() != 4:
            raise self.fail(f"expects x of shape (N, C, H, W), got {tuple(x.shape)}")
        if any(size + 2 * p < d * (k - 1) + 1
               for size, p, d, k in zip(x.shape[2:], self.padding, self.dilation, self.kernel_size, strict=True)):
            raise self.fail(f"input {tuple(x.shape[2:])} padded by {self.padding} is smaller than the window "
                            f"{self.kernel_size}")

    def describe(self):
        return f"{type(self).__name__}(k={self.kernel_size})"

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (", ceil_mode=True" if self.ceil_mode else ""))


@register_layer("MaxPool2d")
class MaxPool2d(_Pool2d):
    """y[n, c, p, q] = max of xp[n, c, s*p + d*i, s*q + d*j] over the window (i, j) < kernel_size, xp being x
    padded with -inf.

    Ties: the whole of dy[n, c, p, q] goes to ONE element of its window, the first maximum in row-major order
    (the index F.max_pool2d returns, as autograd's backward does). Where two entries of a window are equal the
    derivative jumps, so ``tie_dims`` tells verify to spread such entries apart before finite differences.
    Overlapping windows (stride < kernel) may route several outputs' gradients to one input: they add up.

    Args: kernel_size, stride (default: kernel_size), padding, dilation, ceil_mode, as in ``torch.nn.MaxPool2d``.
    Shape: x (N, C, H, W) -> y (N, C, Ho, Wo), Ho = (H + 2*pad - d*(k - 1) - 1) // s + 1 (rounded up with ceil_mode).
    """

    tie_dims = 2  # equal entries within one (H, W) plane may compete for a window's maximum

    def __init__(self, kernel_size: Size2, stride: Size2 | None = None, padding: Size2 = 0, dilation: Size2 = 1,
                 ceil_mode: bool = False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x):
        # on a channels-last copy: torch's CPU max-pool kernel for that layout is several times faster than its
        # (N, C, H, W) one, copies included (docs/cnn.md); the indices are flat in H*W either way
        y, argmax = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), self.kernel_size, self.stride,
                                 self.padding, self.dilation, self.ceil_mode, return_indices=True)
        # backward needs where each maximum came from, flat in H*W: kept in the narrowest integer type that
        # holds H*W (a byte for planes up to 16x16), not torch's int64, as it is held until backward
        kept = next(t for t in (torch.uint8, torch.int16, torch.int32, torch.int64)
                    if x.shape[2] * x.shape[3] <= torch.iinfo(t).max + 1)
        self.cache = x.shape, argmax.to(kept, memory_format=torch.contiguous_format)
        return y.contiguous()

    def backward(self, dy):
        shape, argmax = self.take_cache()
        n, c, h, w = shape
        dx = dy.new_zeros(n, c, h * w)
        dx.scatter_add_(2, argmax.flatten(2).long(), dy.flatten(2))   # dx[argmax[p, q]] += dy[p, q]
        return dx.view(shape)

    def reference(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    @classmethod
    def example(cls, generator):
        """Overlapping, padded, dilated windows: gradients of several outputs meet in one input."""
        return cls(3, stride=(2, 1), padding=1, dilation=(1, 2)), \
            (torch.randn(2, 3, 7, 8, generator=generator, dtype=torch.float64),)


@register_layer("AvgPool2d")
class AvgPool2d(_Pool2d):
    """y[n, c, p, q] = sum of xp[n, c, s*p + i, s*q + j] over the window / size[p, q], xp being x zero-padded.

    size[p, q] is kh*kw, or, without ``count_include_pad``, the number of the window's entries inside x; a
    window that ceil_mode lets hang past the padding counts only what it covers. Both are products of a row
    count and a column count, as the window is a rectangle clipped by a rectangle.

    Args: kernel_size, stride (default: kernel_size), padding, ceil_mode, count_include_pad, as in
    ``torch.nn.AvgPool2d``.
    Shape: x (N, C, H, W) -> y (N, C, Ho, Wo), Ho = (H + 2*pad - k) // s + 1 (rounded up with ceil_mode).
    """

    def __init__(self, kernel_size: Size2, stride: Size2 | None = None, padding: Size2 = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        self.cache = x.shape                        # backward needs only x's shape
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def backward(self, dy):
        shape = self.take_cache()
        n, c, h, w = shape
        rows, cols = (self._counts(size, out, axis)
                      for axis, (size, out) in enumerate(zip(shape[2:], dy.shape[2:], strict=True)))
        share = (dy / (rows[:, None] * cols[None, :]).to(dy)).reshape(n * c, 1, *dy.shape[2:])
        # dx = sum over the windows holding x of dy / size: scatter each share over its window, a transposed
        # convolution with a kernel of ones, unpadded; then crop the padding (and pad what no window reached).
        spread = F.conv_transpose2d(share, share.new_ones(1, 1, *self.kernel_size), stride=self.stride)
        (ph, pw), (fh, fw) = self.padding, spread.shape[2:]
        return F.pad(spread, (-pw, w + pw - fw, -ph, h + ph - fh)).view(shape)

    def _counts(self, size, out, axis):
        """How many of each window's rows (axis 0) or columns (axis 1) the divisor counts, torch's rule."""
        k, s, p = self.kernel_size[axis], self.stride[axis], self.padding[axis]
        start = torch.arange(out) * s - p
        end = torch.clamp(start + k, max=size + p)
        if not self.count_include_pad:
            start, end = start.clamp(min=0), end.clamp(max=size)
        return end - start

    def reference(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    @classmethod
    def example(cls, generator):
        """Padding left out of the divisor, and a ceil_mode window hanging past the edge."""
        return cls((3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False), \
            (torch.randn(2, 3, 8, 7, generator=generator, dtype=torch.float64),)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")


@register_layer("AdaptiveAvgPool2d")
class AdaptiveAvgPool2d(Module):
    """y = A_H x A_W^T per (n, c) plane: output row p averages input rows floor(p*H/Ho) .. ceil((p+1)*H/Ho) - 1,
    A_H (Ho, H) holding those 1/count weights (A_W alike). output_size 1 is global average pooling.

    Args: output_size: an int, or a pair (None in a pair keeps that input size).
    Shape: x (N, C, H, W) -> y (N, C, Ho, Wo).
    """

    def __init__(self, output_size: int | tuple[int | None, int | None]):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    @classmethod
    def problems(cls, args):
        in_pair = is_pair_of(lambda s: s is None or is_count(s))  # (None alone is no size)
        return expect(args, "output_size", lambda v: is_count(v) or (isinstance(v, list | tuple) and in_pair(v)),
                      "a whole number >= 1, or a pair of them (None keeps that input size)")

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.dim() != 4:
            raise self.fail(f"expects x of shape (N, C, H, W), got {tuple(x.shape)}")

    def forward(self, x):
        self.cache = x.shape                        # backward needs only x's shape
        return F.adaptive_avg_pool2d(x, self.output_size)

    def backward(self, dy):
        shape = self.take_cache()
        a_h, a_w = (averaging_matrix(size, out, dy) for size, out in zip(shape[2:], dy.shape[2:], strict=True))
        return a_h.t() @ dy @ a_w                   # dx = A_H^T dy A_W: (H, Ho) @ (N, C, Ho, Wo) @ (Wo, W)

    def reference(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    @classmethod
    def example(cls, generator):
        """Windows of unequal, overlapping sizes (7 rows into 3) beside a kept width."""
        return cls((3, None)), (torch.randn(2, 3, 7, 5, generator=generator, dtype=torch.float64),)

    def extra_repr(self):
        return f"output_size={self.output_size}"


def averaging_matrix(size, out, like):
    """A (out, size): row p is 1/count on the input positions floor(p*size/out) .. ceil((p+1)*size/out) - 1."""
    p = torch.arange(out, device=like.device)
    start, end = (p * size) // out, ((p + 1) * size + out - 1) // out
    i = torch.arange(size, device=like.device)
    inside = (i >= start[:, None]) & (i < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)
