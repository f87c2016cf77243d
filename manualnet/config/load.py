"""Reading a config: YAML with guards, --set overrides, and validation that reports every problem at once."""

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from manualnet.config.check import component_problems
from manualnet.config.schema import MAX_CONFIG_BYTES, MAX_NESTING, Config
from manualnet.errors import ConfigError
from manualnet.registry import closest, shortened, shown


def load_config(path, overrides=()):
    """Read, override (``["optim.lr=0.05", ...]``) and validate the YAML config at ``path`` (its plugins,
    relative to the working directory or else to the file's folder, are loaded to check the model)."""
    raw = read_yaml(path)
    for override in overrides:
        apply_override(raw, override)
    return validate(raw, source=str(path), base_dir=Path(path).parent, overrides=overrides)


def read_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found" if not path.exists() else f"{path} is not a file")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size} bytes is too large for a config (at most {MAX_CONFIG_BYTES}); "
                              "is it the right file?")
        raw = _nesting_checked(yaml.load(path.read_text(), Loader=_UniqueKeyLoader), str(path))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: YAML syntax error{where}: {e.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (a config has at most {MAX_NESTING} levels)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, data, model, ...), "
                          f"got {type(raw).__name__}")
    return raw


def _nesting_checked(value, source):
    """``value``, if its lists and mappings nest at most MAX_NESTING deep (else a ConfigError): deeper
    values would overflow the stack of what reads them next (pydantic, yaml.safe_dump)."""
    level, seen = [value], set()  # seen: a YAML alias repeats one object; walk it once, not exponentially often
    for _ in range(MAX_NESTING + 1):
        containers = [item for item in level if isinstance(item, dict | list) and id(item) not in seen]
        seen.update(map(id, containers))
        level = [v for item in containers for v in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return value
    raise ConfigError(f"{source}: nested too deeply (a config has at most {MAX_NESTING} levels)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key written twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: merged by the base class
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # an unhashable key: the base class reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key may appear once in a mapping)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def validate(raw, source="config", base_dir=None, overrides=(), name=lambda override: f"--set {shortened(override)}"):
    """A validated Config from a plain dict, or a ConfigError listing every problem: the schema's and the
    components' (``assembly.component_problems``: layers, loss, optimizer, schedule and data set by name,
    with their arguments), so that one run of the command shows them all. A problem with a key that an
    override of ``overrides`` (``--set`` values, ``key.path=value``) set is reported as that override's, named
    by ``name(override)``, not as ``source``'s."""
    try:
        config, lines = Config.model_validate(raw), []
    except ValidationError as e:
        config, lines = None, [_describe(err, raw) for err in e.errors()]
    attributed = [_attributed(line, overrides, name) for line in lines + component_problems(raw, base_dir)]
    lines = [line for line, _ in attributed]
    if len(lines) == 1 and attributed[0][1]:
        raise ConfigError(lines[0])
    if lines:
        raise ConfigError(f"{source}: " + "\n".join(lines) if len(lines) == 1 else
                          f"{source}: {len(lines)} problems\n" + "\n".join(lines))
    return config


def _attributed(line, overrides, name):
    """(``line``, whether an override caused it): ``line`` ("key.path: problem") as the problem of the
    override that set that key, or a section above it, or the type of the component it is an argument of,
    when one did."""
    where, sep, problem = line.partition(": ")
    path = where.split(" (")[0]  # "optim (SGD)": a component's section
    if not sep:
        return line, False
    keys = [(override, override.partition("=")[0].strip()) for override in reversed(overrides)]  # the last holds
    for override, key in keys:
        argument = key.startswith(path + ".") and f" argument {key.rpartition('.')[2]}=" in problem
        if path == key or path.startswith(key + ".") or argument:
            return f"{name(override)}: {where + ': ' if path != key else ''}{problem}", True
    for override, key in keys:  # a key the file gave that the component an override chose does not take
        section = key.removesuffix(".type")
        if key != section and path.startswith(section + ".") and "unknown argument" in problem:
            return (f"{name(override)}: {where}: {problem} (setting only {key} keeps {section}'s other keys: "
                    "set the whole section to replace them)"), True
    return line, False


def _describe(err, raw):
    path = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        key, section = err["loc"][-1], _section_model(err["loc"][:-1])
        hint = closest(key, section.model_fields) if section else ""
        return f"{path}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    got = err.get("input")
    got_text = f", got {shown(got)}" if not isinstance(got, dict) else ""
    if err["type"] == "model_type":  # pydantic names its model class: say what the YAML must hold instead
        example = {"data": "{dataset: ..., ...}"}.get(path, "{type: ..., ...}" if path in ("optim", "schedule", "loss")
                                                      else "{key: value}")
        return f"{path}: expected a mapping such as {example}{got_text}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}: {msg[0].lower() + msg[1:]}{got_text}" if msg else path


def _section_model(loc):
    model = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def apply_override(raw, override):
    """Apply one ``--set key.path=value`` (value parsed as YAML) to the raw config dict in place."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected key.path=value, e.g. --set optim.lr=0.05")
    try:
        value = _nesting_checked(yaml.safe_load(text), f"--set {key.strip()}")
    except yaml.YAMLError:
        value = text
    except RecursionError:
        raise ConfigError(f"--set {key.strip()}: nested too deeply (a config has at most {MAX_NESTING} "
                          "levels)") from None
    set_value(raw, key.strip(), value)


def set_value(raw, key, value, where=None, dot="."):
    """Set the config key ``key`` (a dotted path, ``optim.lr``) of the raw config dict to ``value``, making
    the sections on the way; an unknown key is a ConfigError naming the closest one (a section's key given
    alone: that key with its section, joined by ``dot``), said to be ``where``'s (``--set KEY`` by default)."""
    where = where or f"--set {key}"
    parts = key.split(".")
    node, model = raw, Config
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{where}: {'.'.join(parts[:i])} has {len(node)} items, "
                                  f"{part!r} is not an index 0..{len(node) - 1}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[:i])} is a value, not a section")
        elif model is not None and part not in node and part not in model.model_fields and _is_strict(model):
            section = ".".join(parts[:i]) or "the top level"
            hint = closest(part, model.model_fields) or _in_a_section(part, model, dot)
            raise ConfigError(f"{where}: unknown key {part!r} in {section}{hint}")
        if last:
            node[part] = value
            return
        if isinstance(node, dict) and part not in node:
            node[part] = _default_section(model, part)
        model = _child_model(model, part)
        node = node[part]


def _in_a_section(key, model, dot):
    """" (did you mean 'train.epochs'?)" for a key one of ``model``'s sections holds, else ""."""
    found = [f"{name}{dot}{key}" for name in model.model_fields
             if key in getattr(_child_model(model, name), "model_fields", {}) or key in _default_section(model, name)]
    return f" (did you mean {found[0]!r}?)" if len(found) == 1 else ""


def _default_section(model, part):
    """What a section the YAML left out holds by default, so ``--set optim.lr=...`` keeps ``type: SGD``."""
    field = model.model_fields.get(part) if model is not None else None
    default = field.default if field is not None else None
    return default.model_dump(mode="json") if isinstance(default, BaseModel) else {}


def _is_strict(model):
    return model.model_config.get("extra") == "forbid"


def _child_model(model, part):
    if model is None or not isinstance(part, str):
        return None
    field = model.model_fields.get(part)
    ann = field.annotation if field else None
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)

