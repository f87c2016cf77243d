"""Building a registered thing from a config section's keyword arguments, and what is wrong with them: every
problem at once, one line each, each range checked by the thing's own ``problems`` (``registry.refuse``)."""

import inspect

from manualnet.errors import ConfigError, ManualnetError
from manualnet.registry import closest, range_lines
from manualnet.typecheck import parameters, typechecked

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
    params = parameters(factory)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    allowed = {n: p for n, p in params.items()
               if n not in fixed and n not in RUNTIME and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    problems = [f"{where}.{k}: unknown argument{closest(k, allowed)}; "
                f"{_name(factory)} takes {', '.join(allowed) or 'no arguments'}"
                for k in kwargs if k not in allowed and not accepts_any]
    problems += [f"{where}.{n}: required argument is missing" for n, p in allowed.items()
                 if p.default is p.empty and n not in kwargs]
    values, wrong_types = typechecked(allowed, kwargs, where)
    problems += [line for lines in wrong_types.values() for line in lines]
    own, checked = _own_problems(factory)
    if own is not None:  # its own checks, on the given values of the right type and the defaults of the rest
        args = {n: p.default for n, p in allowed.items() if p.default is not p.empty and n not in kwargs}
        args.update({k: v for k, v in values.items() if k in allowed and k not in wrong_types})
        args = {k: v for k, v in args.items() if k in checked}
        problems += range_lines(own(args), where, {**args, **kwargs})
    return problems, values


def _own_problems(factory):
    """``(factory.problems or None, the argument names it may check)``. Inherited by a subclass, it checks only
    the arguments the subclass takes as its parent does (the same annotation, a default of the same type): a
    plugin's ``Square(Linear)`` with ``out_features: int | None = None`` passes its parent something else, which
    the parent's constructor checks."""
    own = getattr(factory, "problems", None)
    if not callable(own):
        return None, set()
    mine = parameters(factory)
    owner = next((c for c in factory.__mro__ if "problems" in c.__dict__), factory) if inspect.isclass(factory) \
        else factory
    theirs = parameters(owner)
    return own, {n for n, p in mine.items() if n in theirs and p.annotation == theirs[n].annotation
                 and type(p.default) is type(theirs[n].default)}


def _name(factory):
    return getattr(factory, "registered_name", getattr(factory, "__name__", repr(factory)))
