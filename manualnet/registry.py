"""Name -> class tables for layers, losses, optimizers, schedules and data sets, and the range checks their
constructors share.

Configs and plugins refer to things by these names; an unknown name gets the closest valid one. Building a
thing from a config section is ``manualnet.config.arguments``'s.
"""

import difflib
import inspect
import math
import numbers
from pathlib import Path

from manualnet.errors import ConfigError


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


# -- a constructor's own checks ---------------------------------------------------------------------------
# A class that checks its arguments' ranges says what is wrong in a classmethod ``problems(args)`` ->
# ``[(name, expected), ...]`` that checks only the names ``args`` has and raises nothing; its constructor
# calls ``refuse`` with it, and a config's check (``argument_problems``) calls it too, so each range is
# written once and a config with several mistakes hears of them all.

def expect(args, name, ok, expected):
    """``[(name, expected)]`` if ``args`` has ``name`` and ``ok(its value)`` is false, else ``[]``."""
    return [(name, expected)] if name in args and not ok(args[name]) else []


def range_lines(problems, where, given):
    """A config's line ``<where>.<name>: expected <expected>, got <value>`` per ``(name, expected)`` of
    ``problems``, the value as ``given`` (the config's) has it."""
    return [f"{where}.{name}: expected {expected}, got {shown(given[name])}" for name, expected in problems]


def shortened(text, most=80):
    """``text``, or its start and its length when longer than ``most``: a line stays a line."""
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"


def shown(value, most=80):
    """``repr(value)``, shortened: a long string's start and its own length, another value's written out."""
    return f"{value[:most]!r}... ({len(value)} characters)" if isinstance(value, str) and len(value) > most \
        else shortened(repr(value), most)


def refuse(owner, args, problems, error=ConfigError):
    """Raise one ``error``, a line ``<Owner> argument <name>=<value>: expected <expected>`` per problem."""
    if problems:
        owner_name = getattr(owner, "__name__", None) or type(owner).__name__  # a class or function, or an instance
        raise error("\n".join(f"{owner_name} argument {name}={args[name]!r}: expected {expected}"
                                    for name, expected in problems))


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_count(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def is_size(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def is_pair_of(ok):
    """A test of torch.nn's per-axis sizes: a value ``ok`` accepts, or a list or tuple of two."""
    return lambda value: ok(value) or (isinstance(value, list | tuple) and len(value) == 2 and all(map(ok, value)))


def is_probability(value):
    """A dropout rate: 0 <= p < 1 (p = 1 would drop everything and scale by 1 / 0)."""
    return is_number(value) and 0 <= value < 1


def is_finite_nonnegative(value):
    return is_number(value) and 0 <= value < math.inf


def is_finite_positive(value):
    return is_number(value) and 0 < value < math.inf
