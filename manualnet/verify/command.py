"""``manualnet verify``: every hand-written gradient of a config's model, or of the whole registry, checked.

For a config: the model is built as ``train`` builds it, a real batch is taken from the training split, and
each layer is checked at the activation that really flows into it (dx and every parameter gradient against
autograd, with a random upstream gradient; optionally finite differences), then the whole model plus loss
end to end. Each parametrised layer is also checked to ADD its gradients (a backward that overwrites them
passes every other check when the buffers start at zero).
"""

import copy
import dataclasses
import json
from pathlib import Path

import torch

from manualnet.errors import ConfigError
from manualnet.layer import LAYERS
from manualnet.losses import LOSSES
from manualnet.registry import closest
from manualnet.verify.engine import check_layer, check_loss, check_model
from manualnet.verify.report import all_passed, compare_tensors, format_table, tolerance_for, verdict


def verify_config(config_path, overrides=(), *, dtype=torch.float64, fd=False, layer=None, device=None):
    """Rows for the model of the config at ``config_path`` on its first training batch."""
    from manualnet.assembly import build
    from manualnet.config import load_config

    config = load_config(config_path, overrides)
    setup = build(config, device=device, base_dir=Path(config_path).parent)  # loads the plugins too
    if layer is not None and layer not in LAYERS:
        raise ConfigError(f"--layer: unknown layer {layer!r}{closest(layer, LAYERS.names())}; "
                          f"known: {', '.join(LAYERS.names())}")
    x, targets, _ = setup.split("train")
    xb, tb = x[:config.train.batch_size], targets[:config.train.batch_size]
    return verify_model(setup.model, setup.loss, xb, tb, dtype=dtype, fd=fd, layer=layer)


def verify_model(model, loss, x, target, *, dtype=torch.float64, fd=False, layer=None):
    """check_model's rows plus an accumulation row per parameter, restricted to layers of type ``layer``."""
    rows = check_model(model, loss, x, target, dtype=dtype, fd=fd)
    rows += accumulation_rows(model, x, dtype)
    if layer is not None:
        rows = [r for r in rows if r.index is not None and r.index < len(model.layers)
                and type(model.layers[r.index]).registered_name == layer]
        if not rows:
            raise ConfigError(f"--layer {layer}: the model has no layer of that type")
    return rows


def accumulation_rows(model, x, dtype, seed=0):
    """For each layer with parameters: starting from random gradients g0, one backward must leave g0 + g,
    where g is what the same backward leaves from zero."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i, layer in enumerate(model.layers):
        if layer.grads:
            rows += _accumulates(layer, x.to(dtype), i, gen, dtype)
        with torch.inference_mode():
            x = layer.forward(x)
    return rows


def _accumulates(layer, x, index, gen, dtype):
    work = copy.deepcopy(layer).to(dtype=dtype)
    dy = torch.randn(work.forward(x).shape, generator=gen, dtype=dtype).to(x.device)
    work.zero_grad()
    work.backward(dy)
    fresh = {k: g.clone() for k, g in work.grads.items()}
    start = {k: torch.randn(g.shape, generator=gen, dtype=dtype).to(g.device) for k, g in fresh.items()}
    for k, g in work.grads.items():
        g.copy_(start[k])
    work.forward(x)
    work.backward(dy)
    return [compare_tensors(work.grads[k], start[k] + fresh[k], tolerance_for(dtype), index=index,
                            layer=type(layer).__name__, tensor=f"d{k} accumulates", method="accumulate")
            for k in fresh]


def self_test(seed=0):
    """Every registered layer and loss on random shapes (batch 1, odd sizes, non-contiguous) in float64,
    against autograd and finite differences."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for name in LAYERS.names():
        for batch, features in ((1, 5), (3, 7)):
            layer = _instance(LAYERS.get(name), features)
            x = torch.randn(features + 2, batch, generator=gen, dtype=torch.float64)[:features].t()
            rows += check_layer(layer.to(dtype=torch.float64), x, fd=True, seed=seed)
    for name in LOSSES.names():
        rows += _loss_rows(LOSSES.get(name), gen, seed)
    return rows


def _instance(cls, features):
    kwargs = {}
    params = cls.__init__.__code__.co_varnames
    if "in_features" in params:
        kwargs["in_features"] = features
    if "out_features" in params:
        kwargs["out_features"] = 4
    return cls(**kwargs)


def _loss_rows(cls, gen, seed):
    loss = cls()
    pred = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    if cls.__name__ in ("CrossEntropyLoss", "NLLLoss"):
        target = torch.randint(0, 5, (3,), generator=gen)
        pred = pred.log_softmax(1) if cls.__name__ == "NLLLoss" else pred
    elif cls.__name__ == "BCELoss":
        pred = torch.rand(3, 5, generator=gen, dtype=torch.float64) * 0.9 + 0.05
        target = torch.rand(3, 5, generator=gen, dtype=torch.float64)
    else:
        target = torch.rand(3, 5, generator=gen, dtype=torch.float64)
    return check_loss(loss, pred, target, fd=True, seed=seed)


def report(rows, json_path=None):
    """Print the table and the verdict; write the rows as JSON; return the exit code (0 pass, 1 fail)."""
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    if failed:
        first = failed[0]
        where = "the whole model" if first.index is None else f"layer {first.index} ({first.layer})"
        print(f"first failure: {where}, tensor {first.tensor}")
    if json_path:
        Path(json_path).write_text(json.dumps({"verdict": verdict(rows), "passed": all_passed(rows),
                                               "rows": [dataclasses.asdict(r) for r in rows]}, indent=2) + "\n")
    return 0 if all_passed(rows) else 1


def run(args):
    """The CLI handler."""
    from manualnet.assembly import load_plugins

    dtype = getattr(torch, args.dtype)
    if args.all_layers:
        load_plugins(args.plugin)
        rows = self_test()
    elif args.config:
        rows = verify_config(args.config, args.set, dtype=dtype, fd=args.fd, layer=args.layer, device=args.device)
    else:
        raise ConfigError("verify needs --config PATH or --all-layers")
    return report(rows, args.json)
