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
        _make(path, parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / name
    _make(base, parents=True, exist_ok=True)
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            _make(path)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a new run directory under {base}")


def _make(path, **kwargs):
    try:
        path.mkdir(**kwargs)
    except FileExistsError:
        if not kwargs.get("exist_ok"):  # a timestamp taken by another run: the caller tries the next one
            raise
        raise ConfigError(f"cannot create the run directory {path}: a file of that name is in the way") from None
    except OSError as e:
        raise ConfigError(f"cannot create the run directory {path}: {e.strerror or e}") from None


def write_config(run_dir, config):
    (Path(run_dir) / "config.yaml").write_text(dump_yaml(config))
