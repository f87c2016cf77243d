"""Weight initialisation schemes, drawn from an optional seeded ``torch.Generator``.

``default`` is PyTorch's own for ``nn.Linear`` (kaiming_uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in),
1/sqrt(fan_in)), and the same for the bias), drawn in the same order, so ``torch.manual_seed(s)`` followed
by ``manualnet.Linear(i, o)`` gives the weights of ``torch.nn.Linear(i, o)``.
"""

import math

from manualnet.registry import Registry

INITS = Registry("init scheme")


@INITS.register("default")
def default(weight, generator=None):
    bound = 1 / math.sqrt(weight.shape[1]) if weight.shape[1] else 0.0
    return weight.uniform_(-bound, bound, generator=generator)


@INITS.register("kaiming_uniform")
def kaiming_uniform(weight, generator=None):
    bound = math.sqrt(3.0) * math.sqrt(2.0 / weight.shape[1])  # gain sqrt(2) for ReLU, std gain/sqrt(fan_in)
    return weight.uniform_(-bound, bound, generator=generator)


@INITS.register("kaiming_normal")
def kaiming_normal(weight, generator=None):
    return weight.normal_(0.0, math.sqrt(2.0 / weight.shape[1]), generator=generator)


@INITS.register("xavier_uniform")
def xavier_uniform(weight, generator=None):
    fan_out, fan_in = weight.shape
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return weight.uniform_(-bound, bound, generator=generator)


@INITS.register("xavier_normal")
def xavier_normal(weight, generator=None):
    fan_out, fan_in = weight.shape
    return weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)


@INITS.register("zeros")
def zeros(weight, generator=None):
    return weight.zero_()
