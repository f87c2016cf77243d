"""The components a config names, checked before anything is built: every problem at once, one line each."""

import inspect
import math

import torch

from manualnet.config.arguments import argument_problems
from manualnet.config.model import DATA_SIZES, inferred_arguments, is_layer_specs, spec_kwargs
from manualnet.config.plugins import load_plugins
from manualnet.config.schema import Config
from manualnet.data.base import DATASETS, check_arguments
from manualnet.data.dataset import COMMON_KEYS, fraction_problems
from manualnet.errors import ConfigError
from manualnet.nn import LAYERS, LOSSES
from manualnet.optim import OPTIMIZERS, SCHEDULES
from manualnet.registry import is_number


def component_problems(raw, base_dir=None):
    """Every problem with the components a raw config dict names, one line each: an unknown layer, loss,
    optimizer, schedule or data set (with the closest valid name), unknown or missing arguments, values of
    the wrong type. The plugins are loaded first, so their layers are known. Entries the schema rejects
    (no ``type``, not a mapping) are left to its messages; what needs the data (sizes that do not chain, a
    loss that does not fit the task) is checked when the run is built."""
    plugins, problems = raw.get("plugins", []), []
    layers_known = isinstance(plugins, list)  # else an unknown layer may be a plugin's: the schema says why
    for entry in plugins if isinstance(plugins, list) else []:
        if not isinstance(entry, str):
            layers_known = False  # the schema reports the entry
            continue
        try:
            load_plugins([entry], base_dir)
        except ConfigError as e:
            problems.append(str(e))
            layers_known = False
    defaults = Config.model_fields
    model = raw.get("model")
    sections = _layer_sections(model if isinstance(model, list) else [], "model")
    sections += [(key, registry, raw.get(key, defaults[key].default.model_dump()))
                 for key, registry in (("loss", LOSSES), ("optim", OPTIMIZERS), ("schedule", SCHEDULES))]
    for where, registry, spec in sections:
        if not (isinstance(spec, dict) and isinstance(spec.get("type"), str)):
            continue
        try:
            factory = registry.get(spec["type"], where=f"{where}.type")
        except ConfigError as e:  # (a plugin that did not load may be where a layer lives: no follow-on line)
            problems += [str(e)] if layers_known or registry is not LAYERS else []
            continue
        kwargs = {k: v for k, v in spec_kwargs(spec).items() if not is_layer_specs(v)}  # nested: their own rows
        if not all(isinstance(k, str) for k in kwargs):
            continue  # the schema reports the key
        data_sizes = [k for k in DATA_SIZES if k in inspect.signature(factory.__init__).parameters]
        for key in [*inferred_arguments(factory), *data_sizes] if registry is LAYERS else ():
            if kwargs.get(key) is None:
                kwargs[key] = 1  # inferred from the data when the config leaves it out (or null)
        nested = tuple(k for k, v in spec_kwargs(spec).items() if is_layer_specs(v))  # checked as their own rows
        problems += argument_problems(factory, kwargs, where, fixed=FIXED.get(where, ()) + nested)
        if registry is OPTIMIZERS:
            problems += _overflowing(kwargs, where, raw.get("dtype", "float32"))
    data = raw.get("data", {})
    if isinstance(data, dict):  # values of another type: the schema says so
        problems += fraction_problems({k: data.get(k, COMMON_KEYS[k]) for k in ("val_fraction", "test_fraction")
                                       if is_number(data.get(k, COMMON_KEYS[k]))})
    name = data.get("dataset", "digits") if isinstance(data, dict) else None
    if isinstance(name, str) and all(isinstance(k, str) for k in data):
        try:
            loader = DATASETS.get(name, where="data.dataset")
        except ConfigError as e:
            return problems + [str(e)]
        try:
            check_arguments(name, loader, {k: v for k, v in data.items() if k not in COMMON_KEYS})
        except ConfigError as e:
            problems += str(e).splitlines()
    return problems


def _layer_sections(specs, where):
    """``(path, LAYERS, spec)`` for each layer spec, and for the specs nested in their arguments."""
    sections = []
    for i, spec in enumerate(specs):
        sections.append((f"{where}.{i}", LAYERS, spec))
        for key, value in (spec.items() if isinstance(spec, dict) else ()):
            if key != "type" and is_layer_specs(value):
                sections += _layer_sections(value if isinstance(value, list) else [value], f"{where}.{i}.{key}")
    return sections


def _overflowing(kwargs, where, dtype_name):
    """A line for each number in ``kwargs`` beyond the largest value of the run's dtype: an optimizer scales
    the parameters' updates by them in that dtype, where they would be infinite."""
    dtype = getattr(torch, dtype_name, None) if isinstance(dtype_name, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        return []  # the schema reports the dtype
    largest = torch.finfo(dtype).max
    return [f"{where}.{key}: {value} overflows {dtype_name} (largest {largest:.3g})" for key, value in kwargs.items()
            if math.isfinite(number := _number(value)) and abs(number) > largest]


def _number(value):
    """``value`` as a float if it is a number or a string of one (``--set optim.lr=1e39`` is the string
    '1e39' to YAML, a float to the argument check); else NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return math.nan
    try:
        return float(value)
    except (ValueError, OverflowError):
        return math.nan


FIXED = {"optim": ("params",), "schedule": ("optimizer", "steps_per_epoch", "epochs")}  # supplied by build()
