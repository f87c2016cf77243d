"""Name -> class tables for layers, losses, optimizers, schedules and data sets.

Configs and plugins refer to things by these names; an unknown name gets the closest valid one.
"""

import difflib

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

        Registering the same name again is allowed only for a re-definition of the same thing (a plugin
        file imported twice); a different object under a taken name is an error.
        """

        def add(obj):
            old = self.entries.get(name)
            if old is not None and _identity(old) != _identity(obj):
                raise ValueError(f"{self.kind} name {name!r} is already registered to {_identity(old)}")
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


def _identity(obj):
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
