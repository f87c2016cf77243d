import torch

from manualnet.optim.optimizer import Optimizer, is_finite_nonnegative, is_number, register_optimizer
from manualnet.registry import expect


@register_optimizer("SGD")
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, torch.optim.SGD's rule step for step.

    For each parameter p with gradient g, at step t = 1, 2, ...::

        d = g + weight_decay * p
        b = d                                       (t = 1)
        b = momentum * b + (1 - dampening) * d      (t > 1)
        d = d + momentum * b   if nesterov   else   d = b        (only if momentum != 0)
        p = p - lr * d

    Args:
        params: ``model.parameters()``, ``model.named_parameters()`` or a list of parameter groups.
        lr: learning rate (>= 0). momentum: factor of the velocity b (>= 0); 0 keeps no buffer.
        dampening: scales the gradient added to b after the first step. nesterov: Nesterov momentum
            (needs momentum > 0 and dampening 0). weight_decay: L2 penalty coefficient (>= 0).
    State: ``momentum_buffer`` (b) per parameter when momentum != 0.
    """

    def __init__(self, params, lr: float, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay)

    @classmethod
    def problems(cls, hyper):
        found = super().problems(hyper)
        for key in ("momentum", "dampening", "weight_decay"):
            found += expect(hyper, key, is_finite_nonnegative, "a finite number >= 0")
        found += expect(hyper, "nesterov", lambda v: isinstance(v, bool), "True or False")
        momentum, dampening = hyper.get("momentum"), hyper.get("dampening")
        valid = is_number(momentum) and is_number(dampening) and not {"momentum", "dampening"} & {n for n, _ in found}
        if hyper.get("nesterov") is True and valid:  # (no follow-on line for a momentum already wrong)
            found += expect(hyper, "nesterov", lambda _: momentum > 0 and dampening == 0,
                            f"momentum > 0 and dampening = 0 for Nesterov momentum "
                            f"(got momentum={momentum!r}, dampening={dampening!r})")
        return found

    @classmethod
    def buffer_names(cls, hyper):
        return ("momentum_buffer",) if hyper["momentum"] != 0 else ()

    def update(self, group, params, grads):
        momentum = group.momentum
        d = grads
        if group.weight_decay != 0:
            d = group.scratch_buffers(params)    # d = g + wd * p, without touching the gradients
            torch._foreach_copy_(d, grads)
            torch._foreach_add_(d, params, alpha=group.weight_decay)
        if momentum != 0:
            if group.state is None:              # torch: the first buffer is a copy of d, undamped
                group.state = {"momentum_buffer": [t.clone() for t in d]}
            else:
                bufs = group.state["momentum_buffer"]
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, d, alpha=1 - group.dampening)
            bufs = group.state["momentum_buffer"]
            if group.nesterov:
                if d is grads:
                    d = group.scratch_buffers(params)
                    torch._foreach_copy_(d, grads)
                torch._foreach_add_(d, bufs, alpha=momentum)
            else:
                d = bufs
        torch._foreach_add_(params, d, alpha=-group.lr)
