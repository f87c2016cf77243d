"""``manualnet verify --all-layers``: the library's self-test. Every registered layer and loss is checked on
its own, in float64, against autograd and central finite differences, on inputs that catch careless backward
passes: batch 1, odd widths, a non-contiguous view and, for losses, both reductions.

The registry says nothing about a layer's arguments or inputs, so the self-test builds each one with no
arguments (``in_features`` / ``out_features`` filled in) and feeds it (batch, width) inputs, trying other
widths when its forward refuses one; a loss gets real-valued targets, probabilities or class indices,
whichever its forward accepts. A layer or loss it cannot build, or whose forward refuses every input with a
LayerError (the contract's way to say "not this input"), is one SKIPPED row saying why: ``verify --config``
checks it inside a real model. A forward that crashes with anything else on every input is a failure.
"""

import inspect

import torch

from manualnet.errors import Crashed, LayerError, NoReference, Untestable
from manualnet.nn import LAYERS, LOSSES
from manualnet.verify.engine import check_layer, check_loss, check_module
from manualnet.verify.report import failed_row, skipped_row, tolerance_for

SHAPES = ((1, 5), (3, 7))                      # (batch, width); inputs of batch > 1 are non-contiguous views
WIDTHS = (1, 2, 3, 4, 6, 8, 10, 16, 32, 64)    # tried in turn when a layer refuses the width above
OUT_FEATURES = 4
F64 = torch.float64


def self_test(names=None, seed=0):
    """Rows for every registered layer and loss, or only for those whose names are in ``names``."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for registry, rows_of in ((LAYERS, _layer_rows), (LOSSES, _loss_rows)):
        for name in registry.names():
            if names is None or name in names:
                rows += _guarded(name, rows_of, registry.get(name), gen, seed)
    return rows


def _guarded(name, rows_of, cls, gen, seed):
    """``rows_of(cls, gen, seed)``, or the one row that says why ``name`` could not be checked."""
    try:
        return rows_of(cls, gen, seed)
    except Untestable as why:
        return [skipped_row(name, str(why))]
    except NoReference as why:                  # nothing autograd can differentiate
        return [skipped_row(name, f"verify cannot check it: {why}")]
    except Crashed as why:
        return [failed_row(str(why), tolerance_for(F64), index=None, layer=name, tensor="y", method="forward",
                           shape=())]
    except LayerError as why:                   # raised by its own backward (a dx or dy of the wrong shape)
        return [failed_row(f"raised LayerError: {why}", tolerance_for(F64), index=None, layer=name, tensor="dx",
                           method="backward", shape=())]


def _layer_rows(cls, gen, seed):
    if hasattr(cls, "example"):  # a module that needs arguments or several inputs builds its own example
        module, inputs = cls.example(gen)
        rows = check_module(module, *inputs, fd=True, seed=seed)
        strided = tuple(map(_transposed_view, inputs))
        laid_out = [x for x in strided if not x.is_contiguous()]
        if laid_out:  # and again on the same values laid out otherwise
            rows += _noted(check_module(module, *strided, fd=True, seed=seed), laid_out[0])
        return rows
    rows = []
    for batch, width in SHAPES:
        widths = dict.fromkeys((width, *WIDTHS))
        layer, x = _first_accepted(((_build(cls, in_features=w, out_features=OUT_FEATURES),
                                     _strided(_randn(batch, w, gen))) for w in widths),
                                   lambda layer, x: layer.forward(x), f"batch {batch}, widths {_listed(widths)}")
        rows += _noted(check_layer(layer, x, fd=True, seed=seed), x)
    return rows


def _loss_rows(cls, gen, seed):
    rows = []
    reductions = ("mean", "sum") if "reduction" in _parameters(cls) else (None,)
    for batch, width in SHAPES:
        for reduction in reductions:
            kwargs = {"reduction": reduction} if reduction else {}
            loss, (pred, target) = _first_accepted(((_build(cls, **kwargs), kind(batch, width, gen))
                                                    for kind in TARGET_KINDS),
                                                   lambda loss, data: loss.forward(*data),
                                                   f"{batch} x {width}: real values, probabilities, class indices")
            rows += _noted(check_loss(loss, pred, target, fd=True, seed=seed), pred, reduction)
    return rows


def _real(batch, width, gen):
    """Any real pred, a target in [0, 1]: regression losses, logits."""
    return _strided(_randn(batch, width, gen)), torch.rand(batch, width, generator=gen, dtype=F64)


def _probabilities(batch, width, gen):
    """pred in [0.05, 0.95] (a finite-difference step stays inside [0, 1]), a target in [0, 1]."""
    pred = 0.05 + 0.9 * torch.rand(batch, width, generator=gen, dtype=F64)
    return _strided(pred), torch.rand(batch, width, generator=gen, dtype=F64)


def _class_indices(batch, width, gen):
    """Log-probabilities (they serve as logits too) and one class index per sample."""
    log_p = _randn(batch, width, gen).log_softmax(1)
    return _strided(log_p), torch.randint(0, width, (batch,), generator=gen)


TARGET_KINDS = (_real, _probabilities, _class_indices)


def _first_accepted(candidates, forward, tried):
    """The first ``(unit, data)`` of ``candidates`` on which ``forward(unit, data)`` runs."""
    errors = []
    for unit, data in candidates:
        try:
            with torch.inference_mode():
                forward(unit, data)
            return unit, data
        except Exception as error:              # a user's forward can fail in any way; each is reported
            errors.append(error)
    crash = next((e for e in errors if not isinstance(e, LayerError)), None)
    if crash is None:
        raise Untestable(f"its forward refused every input tried ({tried}): {errors[0]}")
    raise Crashed(f"forward raised {type(crash).__name__}: {crash} (on every input tried: {tried}; a layer "
                  "that needs a particular input should refuse others with a LayerError from check_input)")


def _build(cls, **offered):
    """``cls(...)`` with those of ``offered`` its __init__ takes, float64 for a layer; Untestable if it needs
    an argument without a default, or raises."""
    params = _parameters(cls)
    kwargs = {key: value for key, value in offered.items() if key in params}
    needed = [name for name, p in params.items() if p.default is p.empty and name not in kwargs
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if needed:
        raise Untestable(f"its __init__ needs {', '.join(needed)} (no default), which the self-test cannot "
                         "guess: give a default, or check it in a model with verify --config")
    try:
        unit = cls(**kwargs)
        return unit.to(dtype=F64) if hasattr(unit, "to") else unit
    except Exception as error:                  # a user's __init__ can fail in any way
        args = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        raise Untestable(f"{cls.__name__}({args}) raised {type(error).__name__}: {error}") from None


def _parameters(cls):
    try:
        return inspect.signature(cls).parameters
    except (TypeError, ValueError):             # no signature to read: offer nothing
        return {}


def _randn(batch, width, gen):
    return torch.randn(batch, width, generator=gen, dtype=F64)


def _strided(values):
    """The same values as a non-contiguous view (for batch > 1): backward must not assume x.view works."""
    batch, width = values.shape
    buffer = values.new_zeros(width + 2, batch)
    buffer[:width] = values.t()
    return buffer[:width].t()


def _transposed_view(x):
    """A floating x's values as a non-contiguous view whose last two dims are swapped in memory (a view's
    rows are then not contiguous either: backward must not assume x.view works); other inputs as they are."""
    if not x.is_floating_point() or x.dim() < 2 or min(x.shape[-2:]) < 2:
        return x
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


def _noted(rows, x, reduction=None):
    """The rows with what was special about their input in the note."""
    special = ", ".join(filter(None, [f"reduction={reduction}" if reduction else "",
                                      "" if x.is_contiguous() else "non-contiguous input"]))
    for row in rows:
        row.note = "; ".join(filter(None, [row.note, special]))
    return rows


def _listed(widths):
    return ", ".join(map(str, widths))
