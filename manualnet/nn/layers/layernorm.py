import math

import torch
import torch.nn.functional as F

from manualnet.nn.module import Module, Parameter, register_layer
from manualnet.registry import expect, is_finite_nonnegative, is_size


@register_layer("LayerNorm")
class LayerNorm(Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * w + b, mean and (biased) variance over the last dims.

    Args:
        normalized_shape: the trailing shape normalised over (an int for the last dim alone).
        eps: added to the variance, so a constant x gives 0, not 0/0.
        elementwise_affine: learn the scale w (starting at 1) and shift b (starting at 0).
    Shape: x (*, *normalized_shape) -> y, x's shape; weight and bias (*normalized_shape).

    Forward keeps x, its mean and 1/std; backward recomputes xhat = (x - mean) / std from them in one op.
    Keeping xhat instead would hold as much memory and move that op into forward (torch's fused forward
    does not return xhat), where inference would pay for it too.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, device=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, float(eps), elementwise_affine
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = Parameter(torch.ones(shape, device=device, dtype=dtype))
            self.bias = Parameter(torch.zeros(shape, device=device, dtype=dtype))

    @classmethod
    def problems(cls, args):
        shape = args.get("normalized_shape")
        dims = [shape] if isinstance(shape, int) else shape if isinstance(shape, list | tuple) else [None]
        return (expect(args, "normalized_shape", lambda _: bool(dims) and all(map(is_size, dims)),
                       "a whole number >= 0, or a list of them")
                + expect(args, "eps", is_finite_nonnegative, "a finite number >= 0"))

    @classmethod
    def example(cls, generator):
        module = cls(6).to(torch.float64)
        with torch.no_grad():  # away from w = 1, b = 0, so a gradient that ignores them shows
            module.weight.normal_(1.0, 0.5, generator=generator)
            module.bias.normal_(0.0, 0.5, generator=generator)
        return module, (torch.randn(2, 3, 6, generator=generator, dtype=torch.float64),)

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.shape[x.dim() - len(self.normalized_shape):] != self.normalized_shape:
            raise self.fail(f"expects inputs ending in {self.normalized_shape}, got shape {tuple(x.shape)}")

    def forward(self, x):
        # y = xhat * w + b, xhat = (x - mean) * rstd, in one fused pass that also returns the mean and
        # rstd = 1 / sqrt(var + eps)
        y, mean, rstd = torch.native_layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        self.cache = (x, mean, rstd)                       # backward needs x, its mean and 1/std
        return y

    def backward(self, dy):
        x, mean, rstd = self.take_cache()
        n = math.prod(self.normalized_shape)
        xhat = torch.addcmul(-mean * rstd, x, rstd).reshape(-1, n)  # (x - mean) / std again: (positions, n)
        dy, rstd = dy.reshape(-1, n), rstd.view(-1, 1)
        g = dy * xhat
        if self.weight is not None:
            w = self.weight.view(-1)
            self.weight.grad += g.sum(0).view(self.normalized_shape)   # dw = sum over positions of dy * xhat
            self.bias.grad += dy.sum(0).view(self.normalized_shape)    # db = sum over positions of dy
            mean_dxhat_xhat = (g @ w).unsqueeze(1) / n                 # mean(dxhat * xhat), dxhat = dy * w
            dxhat = torch.mul(dy, w, out=g)                            # (g's memory, no longer needed)
        else:
            mean_dxhat_xhat = g.mean(-1, keepdim=True)
            dxhat = g.copy_(dy)
        # dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / std, means over the normalised dims
        dx = dxhat.sub_(dxhat.mean(-1, keepdim=True)).addcmul_(xhat, mean_dxhat_xhat, value=-1).mul_(rstd)
        return dx.view(x.shape)

    def reference(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def describe(self):
        return f"LayerNorm({', '.join(map(str, self.normalized_shape))})"

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
