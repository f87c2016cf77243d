import torch.nn.functional as F

from manualnet.nn.losses.base import Loss, register_loss


@register_loss("MSELoss")
class MSELoss(Loss):
    """L = reduce((pred - target)^2), mean over all elements or sum. Shape: pred and target alike."""

    def forward(self, pred, target):
        diff = pred - target
        self.cache = diff                       # backward needs only pred - target
        return self.reduce(diff * diff)

    def backward(self, dloss=1.0):
        diff = self.take_cache()
        return diff * (2 * self.scale(diff.numel()) * dloss)     # dpred = 2 (pred - target) / count

    def reference(self, pred, target):
        return F.mse_loss(pred, target, reduction=self.reduction)
