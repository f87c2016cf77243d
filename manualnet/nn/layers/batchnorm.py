import torch
import torch.nn.functional as F

from manualnet.nn.module import Module, Parameter, register_layer
from manualnet.registry import expect, is_finite_nonnegative, is_number, is_size


class _BatchNorm(Module):
    """y = gamma * xhat + beta, xhat = (x - mu) / sqrt(var + eps), per channel c (dim 1), where mu and var are
    the batch's mean and biased variance over the other dims' M entries in training, and the running estimates
    in eval.

    Training also updates running_mean <- (1 - m) running_mean + m mu and running_var <- (1 - m) running_var
    + m var * M / (M - 1) (the unbiased variance, as PyTorch does), m = momentum, or 1 / num_batches_tracked
    when momentum is None (a cumulative average); num_batches_tracked counts the updates.

    Backward in training, per channel, with sums over the M entries and istd = 1 / sqrt(var + eps):
        dbeta = sum dy,   dgamma = sum dy * xhat,   dxhat = gamma * dy
        dvar  = sum dxhat * (x - mu) * (-1/2) istd^3          = -istd^2 / 2 * gamma * dgamma
        dmu   = -istd * sum dxhat  + dvar * (-2/M) sum(x - mu) = -istd * gamma * dbeta   (sum(x - mu) = 0)
        dx    = istd * dxhat + dvar * 2 (x - mu) / M + dmu / M
              = gamma * istd / M * (M dy - dbeta - xhat * dgamma)
    The last two terms are the gradient through the batch's variance and mean; in eval those are constants
    and dx = gamma * istd * dy.

    Args: num_features (C), eps, momentum, affine (learn gamma = ``weight`` and beta = ``bias``), as in torch.nn.
    State dict: weight, bias, running_mean, running_var, num_batches_tracked (torch.nn's names).
    """

    data_dims, data_shape = (), ""  # how many dims an input may have, and the shapes that says

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.affine = num_features, float(eps), momentum, affine
        self.weight = self.bias = None
        if affine:
            self.weight = Parameter(torch.ones(num_features, device=device, dtype=dtype))
            self.bias = Parameter(torch.zeros(num_features, device=device, dtype=dtype))
        self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))
        self.register_buffer("running_var", torch.ones(num_features, device=device, dtype=dtype))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    @classmethod
    def problems(cls, args):
        return (expect(args, "num_features", is_size, "a whole number >= 0")
                + expect(args, "eps", is_finite_nonnegative, "a finite number >= 0")
                + expect(args, "momentum", lambda m: m is None or (is_number(m) and 0 <= m <= 1),
                         "a number from 0 to 1, or null (a cumulative average)"))

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.dim() not in self.data_dims or x.shape[1] != self.num_features:
            raise self.fail(f"expects x of shape {self.data_shape} with C = {self.num_features}, got {tuple(x.shape)}")
        if self.training and x.numel() == x.shape[1]:
            raise self.fail(f"training needs more than one value per channel to take a variance, got {tuple(x.shape)}")

    def forward(self, x):
        if self.training:
            # torch's fused forward kernel: y, and the batch's mu and istd for backward; it also folds them into
            # the running statistics, by the rule above with momentum m
            y, mu, istd = torch.native_batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                                                  True, self._momentum(), self.eps)
        else:
            mu, istd = self.running_mean, (self.running_var + self.eps).rsqrt()
            y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        self.cache = x, mu, istd, self.training      # backward needs x, mu and istd (and gamma, a parameter)
        return y

    def _momentum(self):
        """m for this batch's update of the running statistics, counting it in num_batches_tracked."""
        self.num_batches_tracked += 1
        return self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)

    def backward(self, dy):
        x, mu, istd, batch_stats = self.take_cache()
        dims = [0, *range(2, x.dim())]
        mu, istd = self._per_channel(mu, x), self._per_channel(istd, x)
        dbeta = dy.sum(dims, keepdim=True)                       # as (1, C, 1...) to broadcast below
        # dgamma = sum dy * xhat = istd * sum dy * (x - mu); xhat is not kept, and the buffer that holds
        # dy * (x - mu) for the sum becomes dx below: backward allocates one tensor of x's size
        buf = torch.sub(x, mu)
        dgamma = buf.mul_(dy).sum(dims, keepdim=True).mul_(istd)
        if self.affine:
            self.weight.grad += dgamma.flatten()
            self.bias.grad += dbeta.flatten()
        scale = istd * self._per_channel(self.weight, x) if self.affine else istd
        if not batch_stats:
            return dy * scale                                    # dx = gamma * istd * dy
        k = scale / (x.numel() // x.shape[1])
        # dx = gamma istd / M (M dy - dbeta - xhat dgamma), xhat = (x - mu) istd, the per-channel factors first
        return torch.sub(x, mu, out=buf).mul_(-k * istd * dgamma).sub_(k * dbeta).addcmul_(dy, scale)

    def reference(self, x):
        """torch's own batch_norm on copies of the running statistics (the manual forward updates the real ones)."""
        return F.batch_norm(x, self.running_mean.clone(), self.running_var.clone(), self.weight, self.bias,
                            self.training, 0.0, self.eps)

    @staticmethod
    def _per_channel(t, x):
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    def describe(self):
        return f"{type(self).__name__}({self.num_features})"

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


@register_layer("BatchNorm1d")
class BatchNorm1d(_BatchNorm):
    __doc__ = "Batch normalisation of (N, C) or (N, C, L) inputs, per channel C.\n\n" + _BatchNorm.__doc__
    data_dims, data_shape = (2, 3), "(N, C) or (N, C, L)"

    @classmethod
    def example(cls, generator):
        """Non-unit affine parameters and running statistics, a (N, C, L) input in training mode."""
        layer = cls(3, momentum=0.3).to(dtype=torch.float64)
        _randomise(layer, generator)
        return layer, (torch.randn(4, 3, 5, generator=generator, dtype=torch.float64),)


@register_layer("BatchNorm2d")
class BatchNorm2d(_BatchNorm):
    __doc__ = "Batch normalisation of (N, C, H, W) inputs, per channel C.\n\n" + _BatchNorm.__doc__
    data_dims, data_shape = (4,), "(N, C, H, W)"

    @classmethod
    def example(cls, generator):
        """Non-unit affine parameters and running statistics, an (N, C, H, W) input in training mode."""
        layer = cls(3, eps=1e-3).to(dtype=torch.float64)
        _randomise(layer, generator)
        return layer, (torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64),)


def _randomise(layer, generator):
    """Move gamma, beta and the running statistics off their 1, 0 starting values: a slip that multiplies
    by gamma twice, or forgets beta, would not show at gamma = 1, beta = 0."""
    with torch.no_grad():
        layer.weight.copy_(1 + 0.5 * torch.randn(layer.num_features, generator=generator, dtype=torch.float64))
        layer.bias.copy_(torch.randn(layer.num_features, generator=generator, dtype=torch.float64))
        layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator, dtype=torch.float64))
        layer.running_var.uniform_(0.5, 2.0, generator=generator)
