import torch
import torch.nn.functional as F

from manualnet.nn.losses.base import Loss, register_loss

EPS = 9.999999960041972e-13  # PyTorch's floor on p (1 - p) in BCE's backward: 1e-12 rounded to a float32


@register_loss("BCELoss")
class BCELoss(Loss):
    """L = -reduce(t log p + (1 - t) log(1 - p)), each log clamped at -100 like PyTorch.

    Args: pred p in [0, 1] (probabilities, e.g. a Sigmoid's output); target t in [0, 1], p's shape.
    """

    def check_target(self, pred, target):
        super().check_target(pred, target)
        if pred.numel() and (pred.min() < 0 or pred.max() > 1):
            raise self.fail("pred must hold probabilities in [0, 1] (use BCEWithLogitsLoss for logits)")

    def forward(self, pred, target):
        self.cache = (pred, target)             # backward needs p and t
        log_p = torch.log(pred).clamp_min(-100)
        log_1mp = torch.log1p(-pred).clamp_min(-100)
        return self.reduce(-(target * log_p + (1 - target) * log_1mp))

    def backward(self, dloss=1.0):
        p, t = self.take_cache()
        # dp = (p - t) / (p (1 - p)), the denominator floored at 1e-12 as PyTorch does
        return (p - t) / (p * (1 - p)).clamp_min(EPS) * (self.scale(p.numel()) * dloss)

    def reference(self, pred, target):
        return F.binary_cross_entropy(pred, target, reduction=self.reduction)


@register_loss("BCEWithLogitsLoss")
class BCEWithLogitsLoss(Loss):
    """L = reduce(max(x, 0) - x t + log(1 + exp(-|x|))): BCE of sigmoid(x), stable for any finite x.

    Args: pred x (logits, any real); target t in [0, 1], x's shape.
    """

    def forward(self, pred, target):
        self.cache = (pred, target)             # backward needs x and t
        return self.reduce(pred.clamp_min(0) - pred * target + torch.log1p(torch.exp(-pred.abs())))

    def backward(self, dloss=1.0):
        x, t = self.take_cache()
        return (torch.sigmoid(x) - t) * (self.scale(x.numel()) * dloss)   # dx = sigmoid(x) - t

    def reference(self, pred, target):
        return F.binary_cross_entropy_with_logits(pred, target, reduction=self.reduction)
