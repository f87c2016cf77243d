import torch
import torch.nn.functional as F

from manualnet.nn.losses.base import Loss, register_loss

NO_INDEX = torch.iinfo(torch.int64).min  # nll_loss would silently skip class -100 by default: skip none


class _ClassIndexLoss(Loss):
    """Shared target check: pred (N, C) scores, target (N,) integer class indices in [0, C).

    pred may also be (*, C) with target (*), the classes along the LAST dim, as a language model's (B, T, V)
    logits and (B, T) next tokens: the loss treats each position as a sample. (torch's own losses put the
    classes in dim 1 instead; the reference flattens to (N, C) first, so the two agree.)
    """

    takes_class_indices = True

    def check_target(self, pred, target):
        if pred.dim() < 2:
            raise self.fail(f"pred must be (N, C) class scores (or (*, C)), got shape {tuple(pred.shape)}")
        if target.is_floating_point() or target.dtype == torch.bool:
            raise self.fail(f"target must hold integer class indices (torch.long), got dtype {target.dtype}")
        if target.shape != pred.shape[:-1]:
            raise self.fail(f"target must have shape {tuple(pred.shape[:-1])} for pred {tuple(pred.shape)}, "
                            f"got {tuple(target.shape)}")
        if target.device.type != "cpu":  # on the CPU gather itself reports a bad index, without a sync
            self.check_range(target, pred.shape[-1])

    def check_range(self, target, classes):
        if target.numel() and (target.min() < 0 or target.max() >= classes):
            bad = target[(target < 0) | (target >= classes)][0].item()
            raise self.fail(f"class index {bad} is out of range for {classes} classes (valid: 0..{classes - 1})")

    @staticmethod
    def flat(pred, target):
        """(*, C) scores and (*) targets as (N, C) and (N,): one sample per position."""
        if pred.dim() == 2:
            return pred, target
        return pred.reshape(-1, pred.shape[-1]), target.reshape(-1)

    def pick(self, log_p, target):
        """reduce_n(-log_p[n, target_n]), one fused op; a bad index raises on the CPU without a sync."""
        try:
            return F.nll_loss(log_p, target, reduction=self.reduction, ignore_index=NO_INDEX)
        except (RuntimeError, IndexError):
            self.check_range(target, log_p.shape[1])
            raise


@register_loss("CrossEntropyLoss")
class CrossEntropyLoss(_ClassIndexLoss):
    """L = reduce_n(log sum_c exp(x_nc) - x_n,t_n): softmax and negative log-likelihood fused.

    Args: pred x (N, C) logits; target t (N,) class indices. Backward is the fused
    softmax(x) - onehot(t), never a softmax Jacobian.
    """

    def forward(self, pred, target):
        shape = pred.shape
        pred, target = self.flat(pred, target)
        log_p = torch.log_softmax(pred, 1)
        self.cache = (log_p, target, shape)     # backward needs softmax (exp of log_p), t and pred's shape
        return self.pick(log_p, target)         # reduce_n(-log_p[n, t_n])

    def backward(self, dloss=1.0):
        log_p, t, shape = self.take_cache()
        dx = log_p.exp_()                       # dx = softmax(x) - onehot(t), times the reduction's scale
        dx.scatter_(1, t.unsqueeze(1), -1.0, reduce="add")
        dx.mul_(self.scale(len(t)) * dloss)
        return dx if dx.shape == shape else dx.view(shape)

    def reference(self, pred, target):
        return F.cross_entropy(*self.flat(pred, target), reduction=self.reduction)


@register_loss("NLLLoss")
class NLLLoss(_ClassIndexLoss):
    """L = -reduce_n(x_n,t_n). Args: pred x (N, C) log-probabilities (a LogSoftmax's output); target t (N,)."""

    def forward(self, pred, target):
        self.cache = (pred, target)             # backward needs x's shape, dtype and t
        return self.pick(*self.flat(pred, target))   # reduce_n(-x[n, t_n])

    def backward(self, dloss=1.0):
        x, t = self.take_cache()
        dx = torch.zeros_like(x)                # dx_nc = -[c == t_n], times the reduction's scale
        return dx.scatter_(-1, t.unsqueeze(-1), -self.scale(t.numel()) * dloss)

    def reference(self, pred, target):
        return F.nll_loss(*self.flat(pred, target), reduction=self.reduction)
