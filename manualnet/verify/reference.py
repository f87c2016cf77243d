"""What autograd differentiates to check a layer or a loss, and how to replay a forward's randomness.

A layer's reference is ``layer.reference(x, params)`` (written with ``torch.nn.functional``) when it has one;
a Sequential's is the composition of its layers' references; otherwise it is the layer's own forward, the
undecorated function under the Layer base's checks and ``torch.no_grad()``, run with autograd on.
"""

import contextlib
import functools

import torch

from manualnet.errors import LayerError
from manualnet.layer import Layer
from manualnet.losses.base import Loss


class NoReference(LayerError):
    """The layer or loss gives verify nothing autograd can differentiate: it cannot be checked as it is."""


def reference_of(unit):
    """``(x, params) -> y`` for a Layer, ``(pred, target) -> loss`` for a Loss, differentiable by autograd."""
    if hasattr(unit, "reference"):
        return unit.reference
    if isinstance(getattr(unit, "layers", None), list):
        return _composed(unit.layers)
    raw = getattr(type(unit).forward, "__wrapped__", None)
    if raw is None:
        raise NoReference(f"{describe(unit)}: verify needs a reference(...) or a forward of its own to differentiate")
    return functools.partial(_run_raw_loss if isinstance(unit, Loss) else _run_raw, unit, raw)


def describe(unit):
    return unit.describe() if isinstance(unit, Layer) else type(unit).__name__


def _composed(layers):
    references = [reference_of(layer) for layer in layers]

    def composed(x, params):
        for i, (layer, reference) in enumerate(zip(layers, references, strict=True)):
            x = reference(x, {name: params[f"{i}.{name}"] for name in layer.params})
        return x

    return composed


def _run_raw(layer, raw, x, params):
    """The layer's own forward on the given parameter leaves; its params dict and cache are put back after,
    so the manual backward still finds what the manual forward cached."""
    saved = layer.params, layer.cache
    layer.params = params
    try:
        return raw(layer, x)
    finally:
        layer.params, layer.cache = saved


def _run_raw_loss(loss, raw, pred, target):
    saved = loss.cache
    try:
        return raw(loss, pred, target)
    finally:
        loss.cache = saved


def differentiate(fn, inputs, upstream, who, rewound=contextlib.nullcontext):
    """Run ``fn(leaves)`` under autograd on leaf copies of ``inputs`` (name -> tensor); return its value and
    d(sum(upstream * value))/d(each input) by name, zeros for an input it does not use. If the value's shape
    is not ``upstream``'s, there is nothing to differentiate against: the gradients come back empty."""
    leaves = {name: t.detach().clone().requires_grad_(True) for name, t in inputs.items()}
    with rewound():
        out = fn(leaves)
    if out.shape != upstream.shape:
        return out.detach(), {}
    if not out.requires_grad:
        raise NoReference(f"{who}: its reference does not depend on its inputs through autograd (a forward that "
                         "calls other layers runs them under no_grad); give it a reference(x, params) written "
                         "with torch.nn.functional")
    grads = torch.autograd.grad(out, list(leaves.values()), upstream, allow_unused=True)
    return out.detach(), {name: torch.zeros_like(leaf) if g is None else g
                          for (name, leaf), g in zip(leaves.items(), grads, strict=True)}


class Replay:
    """Rewinds every random stream a forward may draw from (the global CPU RNG, the CUDA RNG of ``device``
    and each torch.Generator the layer or its sublayers hold) to where it was when this was made, so a rerun
    of the forward (a reference without its own ``reference``, a finite difference) draws the same numbers."""

    def __init__(self, layer, device):
        self.generators = list(_generators(layer, set()))
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


def _generators(layer, seen):
    if id(layer) in seen:
        return
    seen.add(id(layer))
    for value in vars(layer).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, torch.Generator):
                yield item
            elif isinstance(item, Layer):
                yield from _generators(item, seen)
