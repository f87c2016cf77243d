"""The optimizer contract: update every parameter in place from its gradient, with a few fused ops.

An optimizer holds, built once, the lists of parameter and gradient tensors of a model (``model.params`` /
``model.grads``, the very tensors the layers hold) and updates them with ``torch._foreach_*`` ops, no
per-step allocation, no host sync. When the model keeps its parameters and its gradients in two flat
buffers (``Sequential`` does: ``manualnet.flat``), each op runs once on the whole buffer instead of once per
tensor, and the state buffers are flat too. Its state (momentum and moment buffers) is created at the first
step, on the parameters' device and dtype at that time, and saved keyed by parameter NAME, so a checkpoint
survives a rebuild of the model.
"""

import inspect
import math
import numbers

import torch

from manualnet.errors import CheckpointError, ConfigError
from manualnet.flat import split
from manualnet.registry import Registry, closest

OPTIMIZERS = Registry("optimizer")


def register_optimizer(name):
    """Decorator: make an Optimizer subclass available to configs as ``optim: {type: name}``."""
    return OPTIMIZERS.register(name)


class Optimizer:
    """Base class: ``step()`` updates ``params`` in place from ``grads``; ``zero_grad()`` zeroes ``grads``.

    Subclasses list their hyperparameters in ``HYPERPARAMETERS`` (stored as attributes, ``lr`` first),
    check them in ``check(hyper)``, name their per-parameter buffers in ``buffer_names(hyper)`` and
    implement ``update(params, grads)``, called under ``torch.no_grad()`` with ``self.steps`` already
    counting this step. ``params`` and ``grads`` are aligned lists of tensors (one per parameter, or the
    two flat buffers); ``self.state`` and ``scratch_buffers()`` hold lists aligned with them.

    Args:
        model: anything with ``.params`` and ``.grads`` dicts of the same names and shapes (a Layer or a
            Sequential), or the pair ``(params, grads)`` of those dicts.
    """

    HYPERPARAMETERS = ("lr",)

    def __init__(self, model, **hyper):
        self.check(hyper)
        self._lr = None
        self.set_hyperparameters(hyper)
        self.names, self.params, self.grads = _parameter_lists(model, type(self).__name__)
        self.model = model if hasattr(model, "flat_buffers") else None
        self.steps = 0
        self.state = None      # {buffer name: [tensor per update target]}, created by the first step
        self.scratch = None    # [tensor per update target] for intermediate results, never saved
        self.flat = False      # whether state and scratch are laid out as flat buffers

    # -- the update ----------------------------------------------------------------------------------

    def step(self):
        """Apply one update to every parameter, in place."""
        self.steps += 1
        params, grads = self.targets()
        if not torch.is_grad_enabled():  # the trainer already runs with autograd off
            self.update(params, grads)
            return
        with torch.no_grad():
            self.update(params, grads)

    def zero_grad(self):
        torch._foreach_zero_(self.targets()[1])

    def update(self, params, grads):
        raise NotImplementedError(f"{type(self).__name__} does not implement update")

    def targets(self):
        """``(params, grads)`` for this step: ``([flat params], [flat grads])`` while the model keeps them in
        flat buffers, else one tensor per parameter. The state follows the layout when it changes (a
        layer moved on its own with ``Layer.to`` leaves the flat buffers behind)."""
        flat = self.model.flat_buffers() if self.model is not None else None
        if (flat is not None) != self.flat:
            self.flat, self.scratch = flat is not None, None
            if self.state is not None:
                self.state = {key: self._relayout(buffers, flat) for key, buffers in self.state.items()}
        return ([flat[0]], [flat[1]]) if flat is not None else (self.params, self.grads)

    def _relayout(self, buffers, flat):
        if flat is None:                  # flat -> one view per parameter
            return split(buffers[0], self.params)
        return [torch.cat([b.reshape(-1) for b in buffers]).to(flat[0])]

    def per_parameter(self, buffers):
        """A state list as one tensor per parameter (views of the flat buffer when the layout is flat)."""
        return split(buffers[0], self.params) if self.flat else buffers

    def scratch_buffers(self, params):
        """One tensor per update target for intermediates (``d = g + wd * p``, Adam's denominator):
        allocated once rather than by every step, which matters on CPU where large allocations page-fault."""
        if self.scratch is None:
            self.scratch = [torch.empty_like(p) for p in params]
        return self.scratch

    # -- hyperparameters -----------------------------------------------------------------------------

    @property
    def lr(self):
        """The learning rate of the next step; a schedule writes it before each step."""
        return self._lr

    @lr.setter
    def lr(self, value):
        require(self, "lr", value, is_number(value) and 0 <= value < math.inf, "a finite number >= 0")
        self._lr = float(value)

    def hyperparameters(self):
        """``{name: value}`` with tuples as lists (a state dict holds no tuples)."""
        values = {key: getattr(self, key) for key in self.HYPERPARAMETERS}
        return {key: list(v) if isinstance(v, tuple) else v for key, v in values.items()}

    def set_hyperparameters(self, hyper):
        for key, value in hyper.items():
            setattr(self, key, tuple(value) if isinstance(value, list) else value)

    @classmethod
    def check(cls, hyper):
        """Raise ConfigError naming the first invalid hyperparameter in ``hyper``."""
        lr = hyper["lr"]
        require(cls, "lr", lr, is_number(lr) and 0 <= lr < math.inf, "a finite number >= 0")

    @classmethod
    def buffer_names(cls, hyper):
        """Names of the per-parameter state buffers the optimizer keeps under ``hyper``."""
        return ()

    # -- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self):
        """A snapshot (tensors cloned) holding only tensors, numbers, strings, lists and dicts, so it loads
        with ``torch.load(weights_only=True)``: ``{"optimizer", "steps", "hyperparameters", "state"}`` with
        ``state[parameter name][buffer name] = tensor``."""
        state = {name: {} for name in self.names}
        for buffer, tensors in (self.state or {}).items():
            copies = [t.detach().clone() for t in tensors]  # a flat buffer: one copy, which the views share
            for name, t in zip(self.names, self.per_parameter(copies), strict=True):
                state[name][buffer] = t
        return {"optimizer": type(self).registered_name, "steps": self.steps,
                "hyperparameters": self.hyperparameters(), "state": state}

    def load_state_dict(self, state_dict):
        """Restore steps, hyperparameters (as ``torch.optim`` does) and buffers, cast to each parameter's
        device and dtype. All or nothing: a CheckpointError names the first mismatch and changes nothing."""
        hyper, steps, state = _read_state_dict(self, state_dict)
        required = self.buffer_names(hyper) if steps > 0 else ()
        _check_buffers(self, state, required)
        self.set_hyperparameters(hyper)
        self.steps = steps
        self.state = {buffer: [torch.empty_like(p).copy_(state[name][buffer])
                               for name, p in zip(self.names, self.params, strict=True)]
                      for buffer in required} or None
        self.flat, self.scratch = False, None   # per parameter now; the next step lays it out again

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args}; {len(self.params)} parameter tensors, steps={self.steps})"


def make_optimizer(name, model, **kwargs):
    """The optimizer ``OPTIMIZERS[name](model, **kwargs)`` from a config entry such as
    ``optim: {type: SGD, lr: 0.1, momentum: 0.9}``; a ConfigError names an unknown type or argument."""
    cls = OPTIMIZERS.get(name, where="optim.type")
    return construct(cls, "optim", model, **kwargs)


def construct(cls, where, *args, **kwargs):
    """``cls(*args, **kwargs)``, turning an unknown keyword into a ConfigError that names it at ``where``."""
    parameters = list(inspect.signature(cls).parameters.values())[len(args):]
    accepted = [p.name for p in parameters]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"{where}.{key}: {cls.__name__} has no argument {key!r}{closest(key, accepted)}; "
                              f"accepted: {', '.join(accepted)}")
    for p in parameters:
        if p.default is inspect.Parameter.empty and p.name not in kwargs:
            raise ConfigError(f"{where}.{p.name}: {cls.__name__} needs {p.name!r} (no default)")
    return cls(*args, **kwargs)


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def require(owner, name, value, ok, expected):
    """Raise ConfigError ``"<Owner> argument <name>=<value>: expected <expected>"`` unless ``ok``."""
    if not ok:
        owner_name = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        raise ConfigError(f"{owner_name} argument {name}={value!r}: expected {expected}")


def _parameter_lists(model, owner):
    """``(names, params, grads)``: aligned lists over the model's parameters, checked to fit together."""
    if hasattr(model, "params") and hasattr(model, "grads"):
        params, grads = model.params, model.grads
    elif isinstance(model, tuple) and len(model) == 2 and all(isinstance(d, dict) for d in model):
        params, grads = model
    else:
        raise ConfigError(f"{owner}: expected a model with .params and .grads dicts (a Layer or Sequential) "
                          f"or a (params, grads) pair of dicts, got {type(model).__name__}")
    if not params:
        raise ConfigError(f"{owner}: the model has no parameters to optimize")
    if set(params) != set(grads):
        raise ConfigError(f"{owner}: params and grads have different names: {sorted(set(params) ^ set(grads))}")
    seen = {}
    for name, p in params.items():
        g = grads[name]
        if not (isinstance(p, torch.Tensor) and p.is_floating_point() and isinstance(g, torch.Tensor)):
            raise ConfigError(f"{owner}: parameter {name!r} and its gradient must be floating torch tensors")
        if g.shape != p.shape:
            raise ConfigError(f"{owner}: gradient of {name!r} has shape {tuple(g.shape)}, "
                              f"parameter has {tuple(p.shape)}")
        if id(p) in seen:  # it would be updated twice per step
            raise ConfigError(f"{owner}: parameters {seen[id(p)]!r} and {name!r} are the same tensor")
        seen[id(p)] = name
    names = list(params)
    return names, [params[n] for n in names], [grads[n] for n in names]


def _read_state_dict(optimizer, state_dict):
    """``(hyperparameters, steps, state)`` from a state dict, checked against ``optimizer``'s type."""
    kind = type(optimizer).registered_name
    keys = ("optimizer", "steps", "hyperparameters", "state")
    if not isinstance(state_dict, dict) or any(k not in state_dict for k in keys):
        got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
        raise CheckpointError(f"{kind} state dict: expected a dict with keys {list(keys)}, got {got}")
    if state_dict["optimizer"] != kind:
        raise CheckpointError(f"optimizer state dict is for {state_dict['optimizer']!r}, "
                              f"this optimizer is {kind!r}")
    steps = state_dict["steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise CheckpointError(f"{kind} state dict: steps={steps!r}, expected an int >= 0")
    hyper = state_dict["hyperparameters"]
    if not isinstance(hyper, dict) or set(hyper) != set(optimizer.HYPERPARAMETERS):
        got = sorted(hyper) if isinstance(hyper, dict) else hyper
        raise CheckpointError(f"{kind} state dict: hyperparameters {got}, "
                              f"expected {sorted(optimizer.HYPERPARAMETERS)}")
    try:
        optimizer.check(hyper)
    except ConfigError as e:
        raise CheckpointError(f"{kind} state dict: {e}") from None
    return hyper, steps, state_dict["state"]


def _check_buffers(optimizer, state, required):
    """Raise CheckpointError unless ``state`` has exactly the ``required`` buffers, shaped like the params."""
    kind = type(optimizer).registered_name
    if not isinstance(state, dict):
        raise CheckpointError(f"{kind} state dict: 'state' is a {type(state).__name__}, expected a dict")
    missing = [n for n in optimizer.names if n not in state]
    unexpected = [n for n in state if n not in optimizer.names]
    if missing or unexpected:
        raise CheckpointError(f"{kind} state dict does not fit this model: missing parameters {missing}, "
                              f"unexpected parameters {unexpected}")
    for name, p in zip(optimizer.names, optimizer.params, strict=True):
        entry = state[name]
        if not isinstance(entry, dict) or set(entry) != set(required):
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise CheckpointError(f"{kind} state dict: parameter {name!r} has buffers {got}, "
                                  f"expected {sorted(required)}")
        for buffer, t in entry.items():
            if not isinstance(t, torch.Tensor) or t.shape != p.shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise CheckpointError(f"{kind} state dict: {buffer} of {name!r} has shape {got}, "
                                      f"parameter has {tuple(p.shape)}")
