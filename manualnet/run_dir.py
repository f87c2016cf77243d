"""Run directories: ``runs/<name>/<timestamp>/``, never shared by two runs."""

import time
from pathlib import Path

from manualnet.config import dump_yaml
from manualnet.errors import ConfigError


def new_run_dir(name, root="runs", explicit=None):
    """A fresh directory for a run: ``explicit`` if given (it must be empty), else a new timestamped one."""
    if explicit is not None:
        path = Path(explicit)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"--run-dir {path} is not empty; runs never overwrite each other "
                              f"(use --resume {path} to continue it, or pick a new directory)")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a new run directory under {base}")


def write_config(run_dir, config):
    (Path(run_dir) / "config.yaml").write_text(dump_yaml(config))
