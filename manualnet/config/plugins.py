"""User plugin files: Python files that register layers, losses and the rest, run once per process."""

import hashlib
import importlib.util
import sys
from pathlib import Path

from manualnet.errors import ConfigError
from manualnet.registry import Registry


def load_plugins(paths, base_dir=None):
    """Import each user plugin file so its ``@register_layer`` classes are known (once per process: the
    config check and the build both ask); returns their absolute paths (the run's saved config keeps
    those, so a resumed run finds them from anywhere)."""
    resolved = []
    for entry in paths:
        path = _plugin_path(entry, base_dir)
        name = "manualnet_plugin_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        if name in _PLUGIN_ENTRIES:  # run already: its entries again (a registry may have been reset since)
            for table, key, obj in _PLUGIN_ENTRIES[name]:
                table.entries.setdefault(key, obj)
        else:
            _PLUGIN_ENTRIES[name] = _run_plugin(name, path)
        resolved.append(str(path.resolve()))
    return resolved


_PLUGIN_ENTRIES = {}  # module name -> [(registry, name, entry)] its file registered when it ran


def _run_plugin(name, path):
    before = [dict(table.entries) for table in Registry.tables]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # a user's file can fail in any way, a BaseException of its own included
        del sys.modules[name]
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ConfigError(f"plugins: {path} failed to import: {type(e).__name__}: {e}") from None
    return [(table, key, obj) for table, old in zip(Registry.tables, before, strict=False)
            for key, obj in table.entries.items() if old.get(key) is not obj]


def _plugin_path(entry, base_dir):
    try:
        path = Path(entry)
        if not path.is_absolute() and not path.exists() and base_dir is not None:
            path = Path(base_dir) / entry
        found = path.is_file()
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, ...
        raise ConfigError(f"plugins: {entry!r} is not a usable file path ({e})") from None
    if not found and path.is_dir():
        raise ConfigError(f"plugins: {path} is a directory; expected a Python file that registers layers (.py)")
    if not found:
        folder = f" and the config file's folder, {base_dir}" if base_dir else ""
        where = "" if Path(entry).is_absolute() else f" (looked in the working directory{folder})"
        raise ConfigError(f"plugins: plugin file {entry} not found{where}")
    if path.suffix != ".py":  # importlib finds no loader for another suffix
        raise ConfigError(f"plugins: {entry} is not a .py file; expected a Python file that registers layers (.py)")
    return path
