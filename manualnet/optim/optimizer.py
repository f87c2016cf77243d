"""The optimizer contract: update every parameter in place from its ``.grad``, with a few ops per group.

Built like ``torch.optim``: from ``model.parameters()``, ``model.named_parameters()`` or a list of parameter
groups (dicts with ``"params"`` and per-group hyperparameters such as ``lr`` or ``weight_decay``). Each group
keeps its parameters and gradients in two flat buffers while it can (``manualnet.optim.flat``), so the update
is a few in-place ops on one tensor per group (else on each parameter's), with no per-step allocation and no
host sync. The state (momentum and moment buffers) is created at the first step and saved keyed by parameter
NAME, so a checkpoint survives a rebuild of the model.
"""

import torch

from manualnet.errors import ConfigError
from manualnet.nn.module import moves
from manualnet.optim.flat import FlatLayout, split
from manualnet.optim.state import read_state_dict
from manualnet.registry import Registry, expect, is_finite_nonnegative, refuse

OPTIMIZERS = Registry("optimizer")


def register_optimizer(name):
    """Decorator: make an Optimizer subclass available to configs as ``optim: {type: name}``."""
    return OPTIMIZERS.register(name)


class ParamGroup:
    """Parameters updated with one set of hyperparameters (read as attributes: ``group.lr``), their optimizer
    state ``{buffer name: [tensor per update target]}`` and, while it holds, their flat layout."""

    def __init__(self, names, params, hyper):
        self.names, self.params = names, params
        self.hyper = hyper
        self.state = None
        self.scratch = None
        self.layout = FlatLayout(params) if FlatLayout.fits(params) else None
        self._moves = moves()

    def __getitem__(self, key):  # torch.optim's groups are dicts: group["lr"], group["params"]
        if key == "params":
            return self.params
        if key not in self._hyper_names:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key, value):
        if key not in self._hyper_names:
            raise KeyError(f"{key!r} is not a hyperparameter of this group ({', '.join(self._hyper_names)})")
        setattr(self, key, value)

    @property
    def hyper(self):
        """``{name: value}`` of the group's hyperparameters (each is also an attribute, read in the update)."""
        return {key: getattr(self, key) for key in self._hyper_names}

    @hyper.setter
    def hyper(self, values):
        self._hyper_names = tuple(values)
        self.__dict__.update(values)

    def targets(self):
        """``(params, grads)`` for this step: the two flat buffers while the layout holds, else the parameters
        that have a gradient (as torch.optim, one without is skipped). The state follows a change of layout."""
        if self.layout is not None and self.layout.valid():
            return [self.layout.param_buffer], [self.layout.grad_buffer]
        if self.layout is not None:   # moved or gradients dropped: per parameter from now on
            if self.state is not None:
                self.state = {k: split(v[0], self.params) for k, v in self.state.items()}
            self.layout, self.scratch = None, None
        if self.state is not None and self._moves != moves():  # a Module.to() since: the state follows the
            self._moves = moves()                                 # parameters, as torch.optim's
            if _moved(self.state, self.params):                   # load_state_dict casts it
                self.state = {k: [b.to(p) for b, p in zip(v, self.params, strict=False)]
                              for k, v in self.state.items()}
                self.scratch = None
        kept = [p for p in self.params if p.grad is not None]
        if len(kept) != len(self.params) and self.state is not None:
            raise ConfigError("a parameter lost its gradient after the optimizer's first step "
                              "(zero_grad(set_to_none=True) between steps keeps the gradients in torch.optim "
                              "only); use zero_grad() to zero them in place")
        return kept, [p.grad for p in kept]

    def buffers_per_parameter(self, buffers):
        """A state list as one tensor per parameter (views of the flat buffer when the layout is flat)."""
        return split(buffers[0], self.params) if len(buffers) == 1 and len(self.params) > 1 else buffers

    def scratch_buffers(self, params):
        """One tensor per update target for intermediates (``d = g + wd * p``, Adam's denominator), allocated
        once rather than by every step."""
        if self.scratch is None:
            self.scratch = [torch.empty_like(p) for p in params]
        return self.scratch


class Optimizer:
    """Base class: ``step()`` updates every group's parameters in place; ``zero_grad()`` zeroes gradients.

    Subclasses list their hyperparameters' defaults in ``__init__`` (passed to this one as keywords, ``lr``
    first), say which are out of range in ``problems(hyper)`` (the one check of them: the constructor, the lr
    setter, a checkpoint and a config's check all call it), name their per-parameter buffers in
    ``buffer_names(hyper)`` and implement ``update(group, params, grads)``, which builds no autograd graph,
    with ``self.steps`` already counting this step; ``group.state`` and ``group.scratch_buffers(params)`` hold
    lists aligned with params.
    """

    def __init__(self, params, **defaults):
        self.defaults = defaults
        self.param_groups = _param_groups(params, defaults, type(self))
        base = self.param_groups[0].lr
        self._lr_scales = [g.lr / base if base else 1.0 for g in self.param_groups]
        self.steps = 0

    def step(self):
        """Apply one update to every parameter, in place."""
        self.steps += 1
        for group in self.param_groups:
            params, grads = group.targets()
            if not params:
                continue
            if group.layout is None:  # the parameters themselves, which may require grad: build no graph
                with torch.no_grad():
                    self.update(group, params, grads)
            else:                     # the flat buffers, which never require grad
                self.update(group, params, grads)

    def zero_grad(self, set_to_none=False):
        """Zero the gradients in place (one op per group while it is flat). ``set_to_none`` drops them
        instead, as torch.optim's default does; the next backward allocates them again, unflattened."""
        for group in self.param_groups:
            if set_to_none:
                for p in group.params:
                    p.grad = None
            elif grads := group.targets()[1]:  # none yet (dropped before any backward): nothing to zero
                torch._foreach_zero_(grads)

    def grad_buffers(self):
        """The tensors that hold every gradient: one flat buffer per group, or one tensor per parameter."""
        return [g for group in self.param_groups for g in group.targets()[1]]

    def param_buffers(self):
        return [p for group in self.param_groups for p in group.targets()[0]]

    def update(self, group, params, grads):
        raise NotImplementedError(f"{type(self).__name__} does not implement update")

    # -- hyperparameters -----------------------------------------------------------------------------

    @property
    def lr(self):
        """The first group's learning rate for the next step; a schedule writes it before each step, and
        every other group keeps its ratio to it."""
        return self.param_groups[0].lr

    @lr.setter
    def lr(self, value):
        refuse(self, {"lr": value}, self.problems({"lr": value}))
        for group, scale in zip(self.param_groups, self._lr_scales, strict=True):
            group.lr = float(value) * scale

    def hyperparameters(self):
        """The first group's ``{name: value}`` with tuples as lists (a state dict holds no tuples)."""
        return _plain(self.param_groups[0].hyper)

    @classmethod
    def problems(cls, hyper):
        """``[(name, expected), ...]`` for the hyperparameters in ``hyper`` out of range; raises nothing."""
        return expect(hyper, "lr", is_finite_nonnegative, "a finite number >= 0")

    @classmethod
    def check(cls, hyper):
        """Raise one ConfigError naming every hyperparameter in ``hyper`` out of range."""
        refuse(cls, hyper, cls.problems(hyper))

    @classmethod
    def buffer_names(cls, hyper):
        """Names of the per-parameter state buffers the optimizer keeps under ``hyper``."""
        return ()

    # -- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self):
        """A snapshot (tensors cloned) holding only tensors, numbers, strings, lists and dicts, so it loads
        with ``torch.load(weights_only=True)``: ``{"optimizer", "steps", "param_groups", "state"}``, each group
        ``{"names": [...], **hyperparameters}``, and ``state[parameter name][buffer name] = tensor``."""
        state = {}
        for group in self.param_groups:
            for name in group.names:
                state[name] = {}
            for buffer, tensors in (group.state or {}).items():
                copies = [t.detach().clone() for t in tensors]  # a flat buffer: one copy, which the views share
                for name, t in zip(group.names, group.buffers_per_parameter(copies), strict=True):
                    state[name][buffer] = t
        return {"optimizer": type(self).registered_name, "steps": self.steps,
                "param_groups": [{"names": list(g.names), **_plain(g.hyper)} for g in self.param_groups],
                "state": state}

    def load_state_dict(self, state_dict):
        """Restore steps, hyperparameters (as ``torch.optim`` does) and buffers, cast to each parameter's
        device and dtype. All or nothing: a CheckpointError names the first mismatch and changes nothing."""
        steps, groups = read_state_dict(self, state_dict)
        self.steps = steps
        for group, (hyper, buffers) in zip(self.param_groups, groups, strict=True):
            group.hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
            group.state = {buffer: [torch.empty_like(p).copy_(t) for p, t in zip(group.params, tensors, strict=True)]
                           for buffer, tensors in buffers.items()} or None
            group.scratch = None
            if group.state is not None and group.layout is not None and group.layout.valid():
                group.state = {k: [torch.cat([t.reshape(-1) for t in v])] for k, v in group.state.items()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        count = sum(len(g.params) for g in self.param_groups)
        return f"{type(self).__name__}({args}; {count} parameter tensors in {len(self.param_groups)} group(s), " \
               f"steps={self.steps})"


def _plain(hyper):
    return {key: list(v) if isinstance(v, tuple) else v for key, v in hyper.items()}


def _param_groups(params, defaults, cls):
    """ParamGroups from what torch.optim accepts: tensors, (name, tensor) pairs, or dicts with "params"."""
    owner = cls.__name__
    if isinstance(params, torch.Tensor) or hasattr(params, "named_parameters"):
        raise ConfigError(f"{owner}: expected model.parameters(), model.named_parameters() or a list of "
                          f"parameter groups, got a {type(params).__name__}")
    items = list(params)
    if not items:
        raise ConfigError(f"{owner}: got no parameters to optimize")
    specs = items if isinstance(items[0], dict) else [{"params": items}]
    groups, seen, index = [], {}, 0
    for g, spec in enumerate(specs):
        if not isinstance(spec, dict) or "params" not in spec:
            raise ConfigError(f"{owner}: parameter group {g} must be a dict with 'params'")
        unknown = [k for k in spec if k != "params" and k not in defaults]
        if unknown:
            raise ConfigError(f"{owner}: parameter group {g} has unknown keys {unknown}; "
                              f"accepted: {', '.join(defaults)}")
        hyper = {**defaults, **{k: v for k, v in spec.items() if k != "params"}}
        cls.check(hyper)
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
        names, tensors = [], []
        for item in spec["params"]:
            name, p = item if isinstance(item, tuple) else (str(index), item)
            index += 1
            if not isinstance(p, torch.Tensor) or not p.is_floating_point():
                raise ConfigError(f"{owner}: parameter {name!r} is not a floating torch tensor")
            if id(p) in seen:  # it would be updated twice per step
                raise ConfigError(f"{owner}: parameters {seen[id(p)]!r} and {name!r} are the same tensor")
            seen[id(p)] = name
            names.append(name)
            tensors.append(p)
        groups.append(ParamGroup(names, tensors, hyper))
    all_names = [n for group in groups for n in group.names]
    if len(set(all_names)) != len(all_names):
        raise ConfigError(f"{owner}: parameter names repeat across groups")
    return groups


def _moved(state, params):
    """Whether a parameter's dtype or device is no longer its state's."""
    return any((b.dtype, b.device) != (p.dtype, p.device)
               for v in state.values() for b, p in zip(v, params, strict=False))
