"""Keyword arguments checked against a signature by pydantic: each value against its parameter's annotation
(or the type of its default), converted where YAML gave a string (``--set optim.lr=1e-3``)."""

import inspect
import types
import typing
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from manualnet.registry import shown


def parameters(factory):
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:  # string annotations (``from __future__ import annotations`` in a plugin) resolved to types
        signature = inspect.signature(target, eval_str=True)
    except Exception:  # noqa: BLE001 - a name the annotation uses is not defined: check by the defaults
        signature = inspect.signature(target)
    params = dict(signature.parameters)
    params.pop("self", None)
    return params


# Non-finite numbers are no argument a layer, loss, optimizer or data set takes (an lr of inf, a slope of NaN).
_ARGUMENTS = ConfigDict(allow_inf_nan=False, arbitrary_types_allowed=True)


def typechecked(params, kwargs, where):
    """``(kwargs with values converted, {name: [line, ...]} for each value of the wrong type)``: each value
    checked by pydantic against its parameter's annotation in ``params`` (name -> inspect.Parameter), or else
    the type of its default; names not in ``params`` pass unchecked. A line reads ``<where>.<name>: <what was
    expected>, got <value>``."""
    fields, booleans = {}, {}
    for name in kwargs:
        p = params.get(name)
        if p is None:
            continue
        ann = p.annotation if p.annotation is not p.empty else _type_of_default(p.default)
        if isinstance(kwargs[name], bool) and not _takes_bool(ann):  # pydantic would read true as 1
            booleans[name] = [f"{where}.{name}: input should be a number, not a boolean, got {kwargs[name]!r}"]
            continue
        fields[name] = (ann, ...)
    converted, wrong = _checked(fields, kwargs, where)
    return converted, {**booleans, **wrong}


def _checked(fields, kwargs, where):
    try:
        checker = create_model("Arguments", __config__=_ARGUMENTS, **fields)
    except Exception:  # noqa: BLE001 - an annotation pydantic cannot check (a user's own class): values as given
        return dict(kwargs), {}
    try:
        checked = checker.model_validate({k: kwargs[k] for k in fields})
    except ValidationError as e:  # the right ones converted all the same: a range check sees them typed
        wrong = _lines_by_name(e.errors(), where, fields, kwargs)
        right = {k: f for k, f in fields.items() if k not in wrong}
        out = dict(kwargs)
        if right:
            checked = create_model("Arguments", __config__=_ARGUMENTS, **right).model_validate(
                {k: kwargs[k] for k in right})
            out.update({k: getattr(checked, k) for k in right})
        return out, wrong
    out = dict(kwargs)
    out.update({k: getattr(checked, k) for k in fields})
    return out, {}


def _takes_bool(ann):
    """Whether an argument annotated ``ann`` may be a boolean: a bool, or anything (Any, an unknown class)."""
    return ann is bool or ann is Any or bool in typing.get_args(ann) or not (
        ann in (int, float) or set(typing.get_args(ann)) & {int, float} or typing.get_origin(ann) is tuple)


def _lines_by_name(errors, where, fields, kwargs):
    """A line per error, or one line for a value that fits none of a union's members (pydantic reports each
    member's error, located by the member's name: ``kernel_size.int``, ``kernel_size.tuple[int, int]``)."""
    lines, unions = {}, set()
    for err in errors:
        name = err["loc"][0]
        if typing.get_origin(fields[name][0]) in (typing.Union, types.UnionType):
            unions.add(name)
        lines.setdefault(name, []).append(f"{where}.{'.'.join(map(str, err['loc']))}: {err['msg'][0].lower()}"
                                          f"{err['msg'][1:]}, got {shown(err.get('input'))}")
    for name in unions:
        members = " or ".join(_plain(a) for a in typing.get_args(fields[name][0]))
        lines[name] = [f"{where}.{name}: expected {members}, got {shown(kwargs[name])}"]
    return lines


def _plain(ann):
    """A union member as a config's reader knows it: ``int``, ``a pair of int``, ``null``."""
    if ann is type(None):
        return "null"
    if typing.get_origin(ann) is tuple:
        args = typing.get_args(ann)
        return f"a pair of {' or '.join(_plain(a) for a in typing.get_args(args[0])) or _plain(args[0])}" \
            if len(args) == 2 and args[0] == args[1] else str(ann)
    return getattr(ann, "__name__", str(ann))


def _type_of_default(default):
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    if isinstance(default, str):
        return str
    if isinstance(default, tuple) and default and all(isinstance(v, int | float) for v in default):
        return tuple[float, ...]
    return Any
