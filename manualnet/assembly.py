"""Everything a run needs, built from a validated config: device, data, model, loss, optimizer, schedule.

``train``, ``eval`` and ``verify`` all start here, so they see the same model on the same data.
"""

import hashlib
import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from manualnet.build import (
    build_loss,
    build_model,
    inferred_arguments,
    is_layer_specs,
    loss_targets,
    spec_kwargs,
    wants_images,
)
from manualnet.components import argument_problems, construct
from manualnet.config import Config
from manualnet.data import load_dataset
from manualnet.data.base import DATASETS, check_arguments
from manualnet.data.dataset import COMMON_KEYS
from manualnet.distributed import local_device
from manualnet.errors import ConfigError
from manualnet.nn import LAYERS, LOSSES
from manualnet.optim import OPTIMIZERS, SCHEDULES
from manualnet.registry import Registry


@dataclass
class Setup:
    config: object
    device: torch.device
    dtype: torch.dtype
    data: object
    model: object
    loss: object
    targets: dict  # split -> what the loss compares with (labels, one-hot rows, or regression targets)
    optimizer: object
    schedule: object

    @property
    def classification(self):
        return self.data.task == "classification"

    @property
    def threshold(self):
        """Decision threshold of a single binary output: 0 for logits, 0.5 for probabilities."""
        return 0.0 if type(self.loss).__name__ == "BCEWithLogitsLoss" else 0.5

    def split(self, name):
        """(x, loss targets, labels) of the split ``train``, ``val`` or ``test``."""
        x, labels = getattr(self.data, f"x_{name}"), getattr(self.data, f"y_{name}")
        return x, self.targets[name], labels


def resolve_device(requested):
    """``auto`` -> CUDA when present, else CPU; a CUDA device that is not there is a ConfigError."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device: {requested!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # mps, xla, ...: torch knows them, manualnet runs on neither
        raise ConfigError(f"device: {requested!r} is not supported; expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {requested!r} was asked for, but CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use device: cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {requested!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return device


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
    if not found:
        raise ConfigError(f"plugins: plugin file {entry} not found (looked in the working directory"
                          f"{' and ' + str(base_dir) if base_dir else ''})")
    return path


def _absolute_data_path(config, base_dir):
    """``data.path`` (a file) and ``data.root`` (a folder), relative to the working directory (else to
    ``base_dir``), made absolute in the config, so the run's saved config.yaml finds them again from
    anywhere (``--resume``, ``evaluate``)."""
    for key in ("path", "root"):
        value = getattr(config.data, key, None)
        if not isinstance(value, str) or Path(value).expanduser().is_absolute():
            continue
        candidate = Path(value).expanduser()
        if not candidate.exists() and base_dir is not None and (Path(base_dir) / candidate).exists():
            candidate = Path(base_dir) / candidate
        setattr(config.data, key, str(candidate.resolve()))


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
        for key in inferred_arguments(factory) if registry is LAYERS else ():
            if kwargs.get(key) is None:
                kwargs[key] = 1  # inferred from the data when the config leaves it out (or null)
        problems += argument_problems(factory, kwargs, where, fixed=FIXED.get(where, ()))
        if registry is OPTIMIZERS:
            problems += _overflowing(kwargs, where, raw.get("dtype", "float32"))
    data = raw.get("data", {})
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


def build(config, device=None, base_dir=None):
    """A Setup for ``config``; ``device`` overrides ``config.device``."""
    config.plugins = load_plugins(config.plugins, base_dir)
    _absolute_data_path(config, base_dir)
    device = local_device(resolve_device(device or config.device))
    dtype = getattr(torch, config.dtype)
    data = load_dataset(config.data.model_dump(), seed=config.seed, device=device, dtype=dtype)
    raw = config.to_dict()
    if not wants_images(raw["model"]):
        data = data.flattened()
    model, out_features = build_model(raw["model"], data.sample_shape, config.seed, device, dtype)
    loss = build_loss(raw["loss"], out_features, data)
    targets = {split: loss_targets(raw["loss"]["type"], getattr(data, f"y_{split}"), out_features, dtype)
               for split in ("train", "val", "test")}
    optimizer = build_optimizer(config, model)
    steps_per_epoch = math.ceil(len(data.x_train) / config.train.batch_size)
    schedule = build_schedule(config, optimizer, steps_per_epoch)
    return Setup(config, device, dtype, data, model, loss, targets, optimizer, schedule)


def build_optimizer(config, model):
    spec = config.to_dict()["optim"]
    cls = OPTIMIZERS.get(spec["type"], where="optim.type")
    return construct(cls, spec_kwargs(spec), "optim", fixed={"params": model.named_parameters()})


def build_schedule(config, optimizer, steps_per_epoch):
    spec = config.to_dict()["schedule"]
    cls = SCHEDULES.get(spec["type"], where="schedule.type")
    fixed = {"optimizer": optimizer, "steps_per_epoch": steps_per_epoch, "epochs": config.train.epochs}
    return construct(cls, spec_kwargs(spec), "schedule", fixed=fixed)
