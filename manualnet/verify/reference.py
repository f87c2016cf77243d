"""What autograd differentiates to check a module or a loss, and how to replay a forward's randomness.

A module's reference is its ``reference(*inputs)`` (written with ``torch.nn.functional`` on its own
parameters) when it has one, else its own forward; either runs on a private copy of the module whose
parameters have been swapped for autograd leaves (``with_leaf_parameters``), so the manual forward's caches
are never touched.
"""

import contextlib

import torch

from manualnet.errors import NoReference
from manualnet.nn.contract import autograd_through_forward
from manualnet.nn.module import Module


def reference_of(module):
    """``(*inputs) -> output`` for a module, ``(pred, target) -> loss`` for a loss, differentiable by autograd
    once its parameters are leaves."""
    return module.reference if hasattr(module, "reference") else module.forward


def describe(unit):
    return unit.describe() if isinstance(unit, Module) else type(unit).__name__


def with_leaf_parameters(module):
    """``{name: leaf}``: every parameter of ``module`` (a private copy) replaced by a leaf that requires grad,
    one leaf per tensor (tied weights stay tied), named as ``named_parameters`` names them."""
    leaves, by_id = {}, {}
    for name, p in module.named_parameters():
        by_id[id(p)] = leaves[name] = p.detach().clone().requires_grad_(True)
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            sub._parameters[name] = by_id[id(p)]
            object.__setattr__(sub, name, by_id[id(p)])
    return leaves


def differentiate(fn, leaves, upstream, who):
    """Run ``fn()`` (which reads the ``leaves``, name -> leaf tensor) under autograd; return its outputs (a
    tuple) and d(sum_k upstream_k * output_k)/d(each leaf) by name, zeros for a leaf it does not use. If an
    output's shape is not its upstream's, there is nothing to differentiate against: the gradients come back
    empty."""
    with autograd_through_forward():
        out = fn()
    outs = out if isinstance(out, tuple) else (out,)
    if len(outs) != len(upstream) or any(o.shape != u.shape for o, u in zip(outs, upstream, strict=False)):
        return tuple(o.detach() for o in outs), {}
    if not any(o.requires_grad for o in outs):
        raise NoReference(f"{who}: its reference (its own forward, without one) does not depend on its inputs "
                          f"through autograd ({BREAKS}); give it a reference(...) written in torch ops on its "
                          "parameters")
    names = list(leaves)
    wanted = [(o, u) for o, u in zip(outs, upstream, strict=True) if o.requires_grad]
    grads = torch.autograd.grad([o for o, _ in wanted], [leaves[n] for n in names], [u for _, u in wanted],
                                allow_unused=True)
    return tuple(o.detach() for o in outs), {n: _unreached(leaves[n]) if g is None else g
                                             for n, g in zip(names, grads, strict=True)}


BREAKS = ".item(), numpy or .data in it break the graph"


def _unreached(leaf):
    """Zeros for a leaf the reference does not reach, marked so a failing row can say why it may be."""
    zeros = torch.zeros_like(leaf)
    zeros.unreached = True
    return zeros


class Replay:
    """Rewinds every random stream a forward may draw from (the global CPU RNG, the CUDA RNG of ``device``
    and each torch.Generator the module or its children hold) to where it was when this was made, so a rerun
    of the forward (on a reference copy, in a finite difference) draws the same numbers."""

    def __init__(self, modules, device):
        self.generators = [g for m in modules for g in _generators(m)]
        self.cuda = device if device.type == "cuda" else None
        self.start = self._state()

    def _state(self):
        cuda = torch.cuda.get_rng_state(self.cuda) if self.cuda is not None else None
        return torch.get_rng_state(), cuda, [g.get_state() for g in self.generators]

    def _set(self, state):
        cpu, cuda, generators = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.cuda)
        for generator, saved in zip(self.generators, generators, strict=True):
            generator.set_state(saved)

    @contextlib.contextmanager
    def rewound(self):
        now = self._state()
        self._set(self.start)
        try:
            yield
        finally:
            self._set(now)


def _generators(module):
    for sub in module.modules() if isinstance(module, Module) else [module]:
        for value in vars(sub).values():
            if isinstance(value, torch.Generator):
                yield value
