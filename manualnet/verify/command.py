"""``manualnet verify``: every hand-written gradient of a config's model, or of the whole registry, checked.

For a config: the model is built as ``train`` builds it, a real batch is taken from the training split, and
each layer is checked at the activation that really flows into it (dx and every parameter gradient against
autograd, with a random upstream gradient; optionally finite differences), then the whole model plus loss
end to end (each parametrised layer is also checked to ADD its gradients: ``check_module``). For
``--all-layers``: ``self_test.py``.
"""

import json
import os
from pathlib import Path

import torch

from manualnet.errors import ConfigError
from manualnet.nn import LAYERS, LOSSES
from manualnet.registry import closest
from manualnet.verify.engine import check_model
from manualnet.verify.report import all_passed, format_table, row_as_json, verdict


def verify_config(config_path, overrides=(), *, dtype=torch.float64, fd=False, layer=None, device=None):
    """Rows for the model of the config at ``config_path`` on its first training batch."""
    from manualnet.config.load import load_config
    from manualnet.config.setup import build

    config = load_config(config_path, overrides)
    setup = build(config, device=device, base_dir=Path(config_path).parent)  # loads the plugins too
    if layer is not None:
        LAYERS.get(layer, where="--layer")  # an unknown name: the closest one, and the known ones
    x, targets, _ = setup.split("train")
    xb, tb = x[:config.train.batch_size], targets[:config.train.batch_size]
    return verify_model(setup.model, setup.loss, xb, tb, dtype=dtype, fd=fd, layer=layer)


def verify_model(model, loss, x, target, *, dtype=torch.float64, fd=False, layer=None):
    """check_model's rows, restricted to modules of type ``layer``."""
    rows = check_model(model, loss, x, target, dtype=dtype, fd=fd)
    if layer is not None:
        modules = dict(model.named_modules())
        rows = [r for r in rows if r.index in modules
                and getattr(type(modules[r.index]), "registered_name", None) == layer]
        if not rows:
            raise ConfigError(f"--layer {layer}: the model has no layer of that type")
    return rows


def report(rows, json_path=None):
    """Print the table and the verdict, naming the first failure; write the rows as strict JSON; return the
    exit code (0 pass, 1 fail)."""
    print(format_table(rows))
    failed = [r for r in rows if not r.passed and not r.skipped]
    if failed:
        print(f"first failure: {_where(failed[0])}, tensor {failed[0].tensor}")
    if json_path:
        result = {"verdict": verdict(rows), "passed": all_passed(rows), "rows": [row_as_json(r) for r in rows]}
        try:
            Path(json_path).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        except OSError as e:
            raise ConfigError(f"--json {json_path}: cannot write the report: {e.strerror or e}") from None
    return 0 if all_passed(rows) else 1


def _where(row):
    """``layer 1 (Swish)`` in a model; a lone layer's or loss's name, or ``Sequential+CrossEntropyLoss`` for
    the end-to-end rows, as the row's label says."""
    return f"layer {row.index} ({row.layer})" if row.index is not None else row.layer


def run(args):
    """The CLI handler: a config's model, or (``--all-layers``) the registry's self-test."""
    _check_writable(args.json)
    if args.all_layers:
        return report(_self_test(args), args.json)
    if not args.config:
        raise ConfigError("verify needs --config PATH (a model to check) or --all-layers (the library's self-test)")
    if args.plugin:
        raise ConfigError("verify --plugin works with --all-layers; with --config, list the file under plugins: "
                          "in the config")
    dtype = getattr(torch, args.dtype or "float64")
    rows = verify_config(args.config, args.set, dtype=dtype, fd=args.fd, layer=args.layer, device=args.device)
    return report(rows, args.json)


def _check_writable(json_path):
    """Refuse a ``--json`` path that cannot be written before the checks run, not after their verdict."""
    if not json_path:
        return
    path = Path(json_path)
    folder = path.parent
    problem = ("is a directory" if path.is_dir() else f"{folder} does not exist" if not folder.exists()
               else f"{folder} is not a directory" if not folder.is_dir()
               else "permission denied" if not os.access(path if path.exists() else folder, os.W_OK) else None)
    if problem:
        raise ConfigError(f"--json {json_path}: cannot write the report: {problem}")


def _self_test(args):
    """The self-test's rows, restricted to ``--layer``; --config, --set, --device and --dtype float32 are
    refused (it checks lone layers and losses on the CPU in float64), --fd is what it always does."""
    from manualnet.config.plugins import load_plugins
    from manualnet.verify.self_test import self_test

    given = [flag for flag, value in (("--config", args.config), ("--set", args.set), ("--device", args.device),
                                      ("--dtype float32", args.dtype == "float32")) if value]
    if given:
        raise ConfigError(f"verify --all-layers does not take {', '.join(given)}: the self-test checks every "
                          "registered layer and loss on its own, on the CPU, in float64 (to check a config's "
                          "model, use --config without --all-layers)")
    load_plugins(args.plugin)
    known = LAYERS.names() + LOSSES.names()
    if args.layer is not None and args.layer not in known:
        raise ConfigError(f"--layer: unknown layer or loss {args.layer!r}{closest(args.layer, known)}; "
                          f"known: {', '.join(known)}")
    return self_test(names=None if args.layer is None else {args.layer})
