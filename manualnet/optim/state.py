"""Reading an optimizer's state dict back: every check before anything is changed."""

import torch

from manualnet.errors import CheckpointError, ConfigError

KEYS = ("optimizer", "steps", "state")


def read_state_dict(optimizer, state_dict):
    """``(steps, [(hyper, {buffer: [tensor per parameter]}) per group])`` from ``state_dict``, checked
    against ``optimizer``: its type, its parameters' names and shapes, each group's hyperparameters. A state
    dict without ``param_groups`` (one group, as written before groups existed) gives every group its
    ``hyperparameters``."""
    kind = type(optimizer).registered_name
    if not isinstance(state_dict, dict) or any(k not in state_dict for k in KEYS) or not (
            "param_groups" in state_dict or "hyperparameters" in state_dict):
        got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
        raise CheckpointError(f"{kind} state dict: expected a dict with keys {list(KEYS)} and param_groups, "
                              f"got {got}")
    if state_dict["optimizer"] != kind:
        raise CheckpointError(f"optimizer state dict is for {state_dict['optimizer']!r}, this optimizer is {kind!r}")
    steps = state_dict["steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise CheckpointError(f"{kind} state dict: steps={steps!r}, expected an int >= 0")
    saved_groups = state_dict.get("param_groups") or [state_dict["hyperparameters"]] * len(optimizer.param_groups)
    if not isinstance(saved_groups, list):
        raise CheckpointError(f"{kind} state dict: param_groups is a {type(saved_groups).__name__}, expected a list")
    if len(saved_groups) != len(optimizer.param_groups):
        raise CheckpointError(f"{kind} state dict has {len(saved_groups)} parameter groups, "
                              f"this optimizer {len(optimizer.param_groups)}")
    state = state_dict["state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{kind} state dict: 'state' is a {type(state).__name__}, expected a dict")
    names = [n for g in optimizer.param_groups for n in g.names]
    missing, unexpected = [n for n in names if n not in state], [n for n in state if n not in names]
    if missing or unexpected:
        raise CheckpointError(f"{kind} state dict does not fit this model: missing parameters {missing}, "
                              f"unexpected parameters {unexpected}")
    return steps, [_group(optimizer, kind, group, saved, state, steps) for group, saved in
                   zip(optimizer.param_groups, saved_groups, strict=True)]


def _group(optimizer, kind, group, saved, state, steps):
    hyper = {k: v for k, v in saved.items() if k != "names"} if isinstance(saved, dict) else saved
    if not isinstance(hyper, dict) or set(hyper) != set(group.hyper):
        got = sorted(hyper) if isinstance(hyper, dict) else hyper
        raise CheckpointError(f"{kind} state dict: hyperparameters {got}, expected {sorted(group.hyper)}")
    try:
        optimizer.check(hyper)
    except ConfigError as e:
        raise CheckpointError(f"{kind} state dict: {e}") from None
    required = optimizer.buffer_names(hyper) if steps > 0 else ()
    buffers = {b: [] for b in required}
    for name, p in zip(group.names, group.params, strict=True):
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
            buffers[buffer].append(t)
    return hyper, buffers
