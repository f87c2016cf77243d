import torch

from manualnet.optim.optimizer import Optimizer, register_optimizer
from manualnet.registry import expect, is_finite_nonnegative, is_number


@register_optimizer("Adam")
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), torch.optim.Adam's rule step for step.

    For each parameter p with gradient g, at step t = 1, 2, ..., with (b1, b2) = betas::

        d = g + weight_decay * p              (Adam: L2 penalty folded into the gradient)
        m = b1 * m + (1 - b1) * d             (m, v start at 0)
        v = b2 * v + (1 - b2) * d^2
        v_max = max(v_max, v)                 (amsgrad; v_max replaces v below)
        p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Args:
        params: ``model.parameters()``, ``model.named_parameters()`` or a list of parameter groups.
        lr: learning rate (>= 0). betas: (b1, b2), each in [0, 1). eps: added to the denominator (>= 0).
        weight_decay: decay coefficient (>= 0). amsgrad: use the running maximum of v (Reddi et al., 2018).
    State: ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with amsgrad, ``max_exp_avg_sq`` per parameter.
    """

    DECOUPLED_WEIGHT_DECAY = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)

    @classmethod
    def problems(cls, hyper):
        found = super().problems(hyper)
        found += expect(hyper, "betas", lambda b: isinstance(b, (tuple, list)) and len(b) == 2
                        and all(is_number(x) and 0 <= x < 1 for x in b), "two numbers in [0, 1), like (0.9, 0.999)")
        for key in ("eps", "weight_decay"):
            found += expect(hyper, key, is_finite_nonnegative, "a finite number >= 0")
        return found + expect(hyper, "amsgrad", lambda v: isinstance(v, bool), "True or False")

    @classmethod
    def buffer_names(cls, hyper):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if hyper["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def update(self, group, params, grads):
        (beta1, beta2), t = group.betas, self.steps
        if group.state is None:
            group.state = {name: [torch.zeros_like(p) for p in params] for name in self.buffer_names(group.hyper)}
        m, v = group.state["exp_avg"], group.state["exp_avg_sq"]
        scratch = group.scratch_buffers(params)
        d = grads
        if group.weight_decay != 0 and self.DECOUPLED_WEIGHT_DECAY:
            torch._foreach_mul_(params, 1 - group.lr * group.weight_decay)
        elif group.weight_decay != 0:
            d = scratch                                     # d = g + wd * p, without touching the gradients
            torch._foreach_copy_(d, grads)
            torch._foreach_add_(d, params, alpha=group.weight_decay)
        torch._foreach_lerp_(m, d, 1 - beta1)               # m += (1 - b1) * (d - m)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, d, d, 1 - beta2)
        if group.amsgrad:
            torch._foreach_maximum_(group.state["max_exp_avg_sq"], v)
            v = group.state["max_exp_avg_sq"]
        denom = scratch                                     # d is no longer needed: reuse its memory
        torch._foreach_copy_(denom, v)
        torch._foreach_sqrt_(denom)
        torch._foreach_div_(denom, (1 - beta2**t) ** 0.5)
        torch._foreach_add_(denom, group.eps)
        torch._foreach_addcdiv_(params, m, denom, -(group.lr / (1 - beta1**t)))


@register_optimizer("AdamW")
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), torch.optim.AdamW's rule.

    As Adam, except that the decay shrinks p directly instead of entering the moments::

        p = p * (1 - lr * weight_decay)       (before the Adam update, with d = g)

    Args: as Adam, with ``weight_decay`` defaulting to 1e-2.
    """

    DECOUPLED_WEIGHT_DECAY = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
