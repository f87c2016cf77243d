"""Name -> class tables for layers, losses, optimizers, schedules and data sets.

Configs and plugins refer to things by these names; an unknown name gets the closest valid one.
"""

import difflib
import inspect
import math
import numbers
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from manualnet.errors import ConfigError, ManualnetError


def closest(name, choices):
    """The valid choice closest to a mistyped ``name`` as a hint (" (did you mean 'X'?)"), or ""."""
    by_lower = {str(choice).lower(): choice for choice in choices}  # 'Relu' is 'ReLU' before it is 'Residual'
    match = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.5)
    return f" (did you mean {by_lower[match[0]]!r}?)" if match else ""


class Registry:
    """A table of named entries of one kind (``"layer"``, ``"loss"``, ...). ``Registry.tables`` lists
    them all (what a plugin file registered is found by comparing them before and after it runs)."""

    tables = []

    def __init__(self, kind):
        self.kind = kind
        self.entries = {}
        Registry.tables.append(self)

    def register(self, name):
        """Decorator: ``@registry.register("Name")`` adds a class or function under ``name``.

        Registering the same name again is allowed only for a re-definition of the same thing (the same
        module and name, as a notebook cell run twice; or the same file, imported as a module and as a
        plugin); a different object under a taken name is an error.
        """

        def add(obj):
            old = self.entries.get(name)
            if old is not None and _dotted(old) != _dotted(obj) and _defined_in(old) != _defined_in(obj):
                raise ValueError(f"{self.kind} name {name!r} is already registered to {_dotted(old)}")
            self.entries[name] = obj
            obj.registered_name = name
            return obj

        return add

    def get(self, name, where=None):
        """The entry called ``name``; a ConfigError naming the closest valid name if there is none."""
        if name in self.entries:
            return self.entries[name]
        place = f"{where}: " if where else ""
        raise ConfigError(
            f"{place}unknown {self.kind} {name!r}{closest(name, self.entries)}; "
            f"known: {', '.join(sorted(self.entries))}"
        )

    def __contains__(self, name):
        return name in self.entries

    def names(self):
        return sorted(self.entries)


def source_file(obj):
    """The resolved path of the file that defines ``obj``, or None (built in, or defined in a session)."""
    try:
        return str(Path(inspect.getsourcefile(obj)).resolve())
    except (TypeError, OSError):
        return None


def _defined_in(obj):
    """The file and name that define ``obj`` (its identity where no file does): one file imported under two
    module names (``import swish``, and the same file listed under ``plugins:``) defines the same thing."""
    where = source_file(obj)
    return (where, getattr(obj, "__qualname__", None)) if where else (None, id(obj))


def _dotted(obj):
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


# -- building a registered thing from a config section's keyword arguments --------------------------------
RUNTIME = {"generator", "device", "dtype"}  # set by the trainer, never by a config


def construct(factory, kwargs, where, fixed=None):
    """``factory(**fixed, **kwargs)`` with kwargs checked; errors are ConfigErrors prefixed by ``where``."""
    fixed = fixed or {}
    problems, values = _checked(factory, kwargs, where, fixed)
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return factory(**fixed, **values)
    except ManualnetError as e:
        raise ConfigError(f"{where} ({_name(factory)}): {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where} ({_name(factory)}): {e}") from None
    except (RuntimeError, MemoryError) as e:  # torch refusing a size: a negative one, or memory it cannot have
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where} ({_name(factory)}): cannot be built with these arguments: {first}") from None


def argument_problems(factory, kwargs, where, fixed=()):
    """What is wrong with the config section ``where`` calling ``factory(**kwargs)`` (the names in ``fixed``
    are supplied by the code), one line each, nothing raised: unknown and missing arguments and values of the
    wrong type (read off its signature), and values out of range (its own ``problems``, see ``refuse``)."""
    return _checked(factory, kwargs, where, fixed)[0]


def _checked(factory, kwargs, where, fixed):
    """``(problems, kwargs with values converted to their annotated types)``. Types are converted here (a
    ``--set optim.lr=1e-3`` is the string '1e-3' to YAML); ranges are the factory's to say, once."""
    params = _parameters(factory)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    allowed = {n: p for n, p in params.items()
               if n not in fixed and n not in RUNTIME and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    problems = [f"{where}.{k}: unknown argument{closest(k, allowed)}; "
                f"{_name(factory)} takes {', '.join(allowed) or 'no arguments'}"
                for k in kwargs if k not in allowed and not accepts_any]
    problems += [f"{where}.{n}: required argument is missing" for n, p in allowed.items()
                 if p.default is p.empty and n not in kwargs]
    values, wrong_types = _typechecked(allowed, kwargs, where)
    problems += [line for lines in wrong_types.values() for line in lines]
    own = getattr(factory, "problems", None)
    if callable(own):  # its own checks, on the given values of the right type and the defaults of the rest
        args = {n: p.default for n, p in allowed.items() if p.default is not p.empty and n not in kwargs}
        args.update({k: v for k, v in values.items() if k in allowed and k not in wrong_types})
        problems += [f"{where}.{name}: expected {expected}, got {kwargs.get(name, args[name])!r}"
                     for name, expected in own(args)]
    return problems, values


# -- a constructor's own checks ---------------------------------------------------------------------------
# A class that checks its arguments' ranges says what is wrong in a classmethod ``problems(args)`` ->
# ``[(name, expected), ...]`` that checks only the names ``args`` has and raises nothing; its constructor
# calls ``refuse`` with it, and a config's check (``argument_problems``) calls it too, so each range is
# written once and a config with several mistakes hears of them all.

def expect(args, name, ok, expected):
    """``[(name, expected)]`` if ``args`` has ``name`` and ``ok(its value)`` is false, else ``[]``."""
    return [(name, expected)] if name in args and not ok(args[name]) else []


def refuse(owner, args, problems, error=ConfigError):
    """Raise one ``error``, a line ``<Owner> argument <name>=<value>: expected <expected>`` per problem."""
    if problems:
        owner_name = getattr(owner, "__name__", None) or type(owner).__name__  # a class or function, or an instance
        raise error("\n".join(f"{owner_name} argument {name}={args[name]!r}: expected {expected}"
                                    for name, expected in problems))


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_probability(value):
    """A dropout rate: 0 <= p < 1 (p = 1 would drop everything and scale by 1 / 0)."""
    return is_number(value) and 0 <= value < 1


def is_finite_nonnegative(value):
    return is_number(value) and 0 <= value < math.inf


def is_finite_positive(value):
    return is_number(value) and 0 < value < math.inf


def _parameters(factory):
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


def typecheck(params, kwargs, where):
    """``(kwargs with values converted, one line per value of the wrong type)``: each value checked by
    pydantic against its parameter's annotation in ``params`` (name -> inspect.Parameter), or else the
    type of its default; names not in ``params`` are passed through unchecked. A line reads
    ``<where>.<name>: <what was expected>, got <value>``."""
    values, wrong = _typechecked(params, kwargs, where)
    return values, [line for lines in wrong.values() for line in lines]


def _typechecked(params, kwargs, where):
    """``typecheck``, its lines grouped by the argument's name (``{name: [line, ...]}``)."""
    fields = {}
    for name in kwargs:
        p = params.get(name)
        if p is None:
            continue
        ann = p.annotation if p.annotation is not p.empty else _type_of_default(p.default)
        fields[name] = (ann, ...)
    try:
        checker = create_model("Arguments", __config__=_ARGUMENTS, **fields)
    except Exception:  # noqa: BLE001 - an annotation pydantic cannot check (a user's own class): values as given
        return dict(kwargs), {}
    try:
        checked = checker.model_validate({k: kwargs[k] for k in fields})
    except ValidationError as e:
        return dict(kwargs), _lines_by_name(e.errors(), where)
    out = dict(kwargs)
    out.update({k: getattr(checked, k) for k in fields})
    return out, {}


def _lines_by_name(errors, where):
    lines = {}
    for err in errors:
        lines.setdefault(err["loc"][0], []).append(f"{where}.{'.'.join(map(str, err['loc']))}: {err['msg'][0].lower()}"
                                                   f"{err['msg'][1:]}, got {err.get('input')!r}")
    return lines


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


def _name(factory):
    return getattr(factory, "registered_name", getattr(factory, "__name__", repr(factory)))
