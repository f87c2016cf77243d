"""Training from Python, as in a notebook: ``run = mn.train("configs/mlp.yaml", train__epochs=3)``."""

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

from manualnet.config.load import read_yaml, set_value, validate
from manualnet.config.setup import build
from manualnet.errors import ConfigError, ManualnetError
from manualnet.registry import source_file
from manualnet.training.run_dir import discard_if_unlogged, new_run_dir


@dataclass
class Run:
    """What ``train`` returns: the run's summary (``summary.json``'s values), its directory and the trained
    model, holding the best checkpoint's weights (those its test metrics are of), in eval mode."""

    summary: dict
    run_dir: Path
    model: object = None


def train(config, *, run_dir=None, device=None, quiet=False, **overrides):
    """Train the model of ``config`` (a YAML path or a dict shaped like one) as ``manualnet train`` does and
    return a ``Run``. Overrides are config keys, ``__`` standing for the dot: ``train__epochs=3`` is
    ``--set train.epochs=3``. ``run_dir``: where to write the run (new or empty), else ``runs/<name>/<time>``.
    A problem with the config is a ConfigError listing every problem; a divergence raises ``Diverged``."""
    from manualnet.training.trainer import Trainer  # the training loop's imports, only when a run starts

    if isinstance(config, (str, Path)):
        raw, source, base_dir = read_yaml(config), str(config), Path(config).parent
    elif isinstance(config, dict):
        raw, source, base_dir = copy.deepcopy(config), "config", Path.cwd()
    else:
        raise ConfigError(f"train: config must be a YAML path or a dict, got {type(config).__name__}")
    for key, value in overrides.items():
        set_value(raw, key.replace("__", "."), value, where=f"train(..., {key}=...)", dot="__")
    settings = validate(raw, source=source, base_dir=base_dir, overrides=[k.replace("__", ".") for k in overrides],
                        name=lambda key: f"train(..., {key.replace('.', '__')}=...)")
    setup = build(settings, device=device, base_dir=base_dir)
    session = _session_layers(setup.model, settings.plugins)
    if session:
        warnings.warn(f"{', '.join(session)} registered in this Python session, not by the config's plugins: "
                      "`manualnet eval` and `--resume` of this run will not know it (list its file under plugins:)",
                      stacklevel=2)
    with new_run_dir(settings.name, explicit=run_dir) as lock:  # one run per directory, as manualnet train
        try:
            trainer = Trainer(setup, lock.path, quiet=quiet)
            summary = trainer.fit()
        except ManualnetError as e:
            if e.exit_code == 2:  # bad input: a run that logged nothing leaves nothing, as manualnet train
                discard_if_unlogged(lock.path, whole=run_dir is None)
            raise
    return Run(summary=summary, run_dir=lock.path, model=trainer.model)


def _session_layers(model, plugins):
    """The registered names of ``model``'s modules defined neither in manualnet nor in a file of ``plugins``
    (absolute paths, as build() leaves them)."""
    return sorted({cls.__dict__["registered_name"] for cls in map(type, model.modules())
                   if "registered_name" in cls.__dict__ and not cls.__module__.startswith("manualnet.")
                   and source_file(cls) not in plugins})

