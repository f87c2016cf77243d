import math

import torch
import torch.nn.functional as F

from manualnet.nn.layers.conv import pair
from manualnet.nn.module import Module, register_layer


class _Pool2d(Module):
    """What the 2-D pools share: (N, C, H, W) inputs, a window per output pixel, torch.nn's arguments."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride if stride is not None else kernel_size)
        self.padding, self.dilation, self.ceil_mode = pair(padding), pair(dilation), bool(ceil_mode)
        if any(2 * p > d * (k - 1) + 1 for p, d, k in zip(self.padding, self.dilation, self.kernel_size, strict=True)):
            raise self.fail(f"padding {self.padding} must be at most half the (dilated) window {self.kernel_size}")

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

    Forward takes the max along each row of the window, then over its rows (a max over a rectangle is a max of
    row maxima): r[n, c, h, q] = max_j xp[n, c, h, s*q + d*j], y[n, c, p, q] = max_i r[n, c, s*p + d*i, q],
    running maxima of strided views, some 10x faster on a CPU than F.max_pool2d's window-by-window loop
    (docs/cnn.md), and no indices to keep.

    Backward: dy[n, c, p, q] goes, whole, to ONE element of its window: the first that equals y[n, c, p, q] in
    row-major order (i, then j), as autograd's. The offsets (i, j) are visited in that order, each taking dy
    where its view equals y and no earlier offset took it. Where two entries of a window are equal the derivative
    jumps, so ``tie_dims`` tells verify to spread such entries apart before finite differences. Overlapping
    windows (stride < kernel) may route several outputs' gradients to one input: they add up. (A window whose max
    is NaN sends dy to its last entry; autograd's, to the NaN.)

    Args: kernel_size, stride (default: kernel_size), padding, dilation, ceil_mode, as in ``torch.nn.MaxPool2d``.
    Shape: x (N, C, H, W) -> y (N, C, Ho, Wo), Ho = (H + 2*pad - d*(k - 1) - 1) // s + 1 (rounded up with ceil_mode).
    """

    tie_dims = 2  # equal entries within one (H, W) plane may compete for a window's maximum

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x):
        xp, (ho, wo) = self._padded(x)
        (kh, kw) = self.kernel_size
        r = _running_max([self._shifted(xp, 3, j, wo) for j in range(kw)])    # r = max_j xp[.., :, s*q + d*j]
        y = _running_max([self._shifted(r, 2, i, ho) for i in range(kh)])     # y = max_i r[.., s*p + d*i, :]
        self.cache = x, y                         # backward needs x and y (both held by the layers around it)
        return y

    def backward(self, dy):
        x, y = self.take_cache()
        xp, (ho, wo) = self._padded(x)
        dxp = torch.zeros_like(xp)
        hit, free = torch.empty_like(y), None     # free: 1 where no earlier offset has taken dy
        offsets = [(i, j) for i in range(self.kernel_size[0]) for j in range(self.kernel_size[1])]
        for n, (i, j) in enumerate(offsets):
            v, dv = (self._shifted(self._shifted(t, 2, i, ho), 3, j, wo) for t in (xp, dxp))
            if n == len(offsets) - 1:             # the last offset holds the max wherever no earlier one did
                dv.addcmul_(dy, free) if free is not None else dv.add_(dy)
                break
            # y >= v everywhere, so v >= y is v == y, as float 0/1 (v copied first: torch's ge into floats from
            # a strided view, and its float-bool arithmetic, are several times slower)
            torch.ge(hit.copy_(v), y, out=hit)
            if free is None:
                free = 1 - hit
            else:
                free.sub_(hit.mul_(free))         # hit: equal here, and not taken before
            dv.addcmul_(dy, hit)                  # dx[the window's first max] += dy
        (ph, pw), (h, w) = self.padding, x.shape[2:]
        return dxp[:, :, ph:ph + h, pw:pw + w]

    def _shifted(self, t, dim, i, size):
        """The strided view t[.., s*o + d*i, ..] along dim (2: rows, 3: columns), o < size."""
        s, d = self.stride[dim - 2], self.dilation[dim - 2]
        return t.narrow(dim, d * i, s * (size - 1) + 1)[(slice(None),) * dim + (slice(None, None, s),)]

    def _padded(self, x):
        """x padded with -inf by ``padding``, on the far side as far as the last window reaches (ceil_mode's may
        hang past the padding), and the output size (Ho, Wo)."""
        geometry = list(zip(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation, strict=True))
        out = [_out_size(size, k, s, p, d, self.ceil_mode) for size, k, s, p, d in geometry]
        far = [max(0, s * (o - 1) + d * (k - 1) + 1 - size - p)
               for (size, k, s, p, d), o in zip(geometry, out, strict=True)]
        (ph, pw) = self.padding
        if ph == pw == far[0] == far[1] == 0:
            return x, out
        return F.pad(x, (pw, far[1], ph, far[0]), value=-math.inf), out

    def reference(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    @classmethod
    def example(cls, generator):
        """Overlapping, padded, dilated windows: gradients of several outputs meet in one input."""
        return cls(3, stride=(2, 1), padding=1, dilation=(1, 2)), \
            (torch.randn(2, 3, 7, 8, generator=generator, dtype=torch.float64),)


def _out_size(size, k, s, p, d, ceil_mode):
    """torch's pooled length: the windows that fit, one more with ceil_mode for a part-window, unless it would
    start past x and its left padding."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    return out - 1 if ceil_mode and (out - 1) * s >= size + p else out


def _running_max(views):
    """The elementwise max of equally shaped views (the one view itself, uncopied, if there is one)."""
    if len(views) == 1:
        return views[0]
    m = torch.maximum(views[0], views[1])
    for v in views[2:]:
        torch.maximum(m, v, out=m)
    return m


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

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
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

    def __init__(self, output_size):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

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
