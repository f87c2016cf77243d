import torch

from manualnet.optim.optimizer import Optimizer, register_optimizer
from manualnet.registry import expect, is_finite_nonnegative, is_number


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
        lr: learning rate (>= 0; 1e-3, as torch's). momentum: factor of the velocity b (>= 0); 0 keeps no buffer.
        dampening: scales the gradient added to b after the first step. nesterov: Nesterov momentum
            (needs momentum > 0 and dampening 0). weight_decay: L2 penalty coefficient (>= 0).
    State: ``momentum_buffer`` (b) per parameter when momentum != 0.
    """

    def __init__(self, params, lr: float = 1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
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
        momentum, dampening, weight_decay = group.momentum, group.dampening, group.weight_decay
        first = momentum != 0 and group.state is None
        if first:
            group.state = {"momentum_buffer": []}
        bufs = group.state["momentum_buffer"] if momentum != 0 else None
        scratch = group.scratch_buffers(params) if weight_decay != 0 or group.nesterov else None
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            d = g
            if weight_decay != 0:
                d = torch.add(g, p, alpha=weight_decay, out=scratch[i])   # d = g + wd * p, g untouched
            if momentum != 0:
                if first:
                    bufs.append(d.clone())                                 # torch: the first b is d, undamped
                else:  # two ops, rounded as torch's are (add's alpha form fuses a multiply-add: one rounding)
                    bufs[i].mul_(momentum).add_(d, alpha=1 - dampening)
                d = torch.add(d, bufs[i], alpha=momentum, out=scratch[i]) if group.nesterov else bufs[i]
            p.add_(d, alpha=-group.lr)
