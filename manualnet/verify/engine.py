"""Gradient checks of a layer, a loss or a whole model: manual backward against autograd and finite differences.

A layer is checked on L = sum(y * dy) for a seeded random dy, a loss on L = dloss * loss for a seeded random
scalar dloss, so every entry of the upstream gradient matters. Each check works on a deep copy of what it
checks, cast to ``dtype`` (``None``: as it is), so the caller's parameters, gradients, caches and generators
are untouched; the global RNG is restored afterwards, and a check runs even under ``torch.inference_mode()``.
"""

import contextlib
import copy

import torch

from manualnet.errors import LayerError
from manualnet.verify import finite_diff
from manualnet.verify.reference import Replay, describe, differentiate, reference_of
from manualnet.verify.report import FINITE_DIFF, compare_tensors, failed_row, mismatch, tolerance_for


def check_layer(layer, x, dy=None, *, dtype=torch.float64, fd=False, seed=0, tol=None, index=None):
    """Rows for ``layer`` at input ``x``: its forward ("y"), dL/dx ("dx") and each parameter's gradient
    ("dweight", ...) against autograd on its reference; with ``fd`` also dx and the parameter gradients
    against finite differences of its own forward in float64, inputs within 10h of a ``kink`` moved away.

    ``tol``: see ``tolerance_for``. ``index`` labels the rows with the layer's place in a model.
    """
    with _isolated(x.device):
        label = dict(index=index, layer=describe(layer))
        rows = _layer_vs_autograd(layer, x, dy, dtype, seed, tolerance_for(dtype or x.dtype, tol), label)
        if fd:
            rows += _layer_vs_finite_diff(layer, x, dy, seed, label)
    return rows


def check_loss(loss, pred, target, *, dtype=torch.float64, fd=False, seed=0, tol=None, index=None):
    """Rows for ``loss`` at (pred, target): its value ("loss") and dL/dpred ("dpred") against autograd on
    ``loss.reference``; with ``fd`` also dpred against finite differences of its own forward in float64."""
    with _isolated(pred.device):
        label = dict(index=index, layer=describe(loss))
        rows = _loss_vs_autograd(loss, pred, target, dtype, seed, tolerance_for(dtype or pred.dtype, tol), label)
        if fd:
            rows += _loss_vs_finite_diff(loss, pred, target, seed, label)
    return rows


def check_model(model, loss, x, target, *, dtype=torch.float64, fd=False, seed=0, tol=None):
    """Rows for a model (a Sequential, or one layer) trained with ``loss`` on (x, target):

    (a) each layer by ``check_layer`` at the activation that really flows into it (rows labelled with the
    layer's index), and the loss by ``check_loss`` at the model's output; (b) end to end, the loss value,
    dL/dx and every parameter's gradient ("d0.weight", ...) against autograd on the composition of the
    layers' and the loss's references (rows with index None).
    """
    with _isolated(x.device):
        activations = _activations(model, x, dtype)
    layers = getattr(model, "layers", [model])
    rows = []
    for i, (layer, x_i) in enumerate(zip(layers, activations[:-1], strict=True)):
        rows += check_layer(layer, x_i, dtype=dtype, fd=fd, seed=seed + i, tol=tol, index=i)
    rows += check_loss(loss, activations[-1], target, dtype=dtype, fd=fd, seed=seed + len(layers), tol=tol,
                       index=len(layers))
    with _isolated(x.device):
        rows += _model_vs_autograd(model, loss, x, target, dtype, seed, tolerance_for(dtype or x.dtype, tol))
    return rows


# -- against autograd --------------------------------------------------------------------------------------

def _layer_vs_autograd(layer, x, dy, dtype, seed, tolerance, label):
    work, x = _working_copy(layer, dtype), _cast(x, dtype)
    replay = Replay(work, x.device)
    y = work.forward(x)
    dy = _upstream(y, dy, seed)
    reference = reference_of(work)
    y_ref, expected = differentiate(lambda t: reference(t["dx"], _params_of(t)), _inputs(x, work), dy,
                                    label["layer"], replay.rewound)
    manual, crash = _backward(lambda: _manual_grads(work.backward(dy), work))
    return _rows(y, y_ref, "y", manual, expected, tolerance, label, crash)


def _loss_vs_autograd(loss, pred, target, dtype, seed, tolerance, label):
    work, pred, target = copy.deepcopy(loss), _cast(pred, dtype), _cast_target(target, dtype)
    value = work.forward(pred, target)
    dloss = _upstream(value, None, seed)
    reference = reference_of(work)
    value_ref, expected = differentiate(lambda t: reference(t["dpred"], target), {"dpred": pred}, dloss,
                                        label["layer"])
    manual, crash = _backward(lambda: {"dpred": work.backward(dloss.item())})
    return _rows(value, value_ref, "loss", manual, expected, tolerance, label, crash)


def _model_vs_autograd(model, loss, x, target, dtype, seed, tolerance):
    work, work_loss = _working_copy(model, dtype), copy.deepcopy(loss)
    x, target = _cast(x, dtype), _cast_target(target, dtype)
    replay = Replay(work, x.device)
    value = work_loss.forward(work.forward(x), target)
    dloss = _upstream(value, None, seed)
    model_ref, loss_ref = reference_of(work), reference_of(work_loss)
    label = dict(index=None, layer=f"{describe(work)}+{describe(work_loss)}")
    value_ref, expected = differentiate(lambda t: loss_ref(model_ref(t["dx"], _params_of(t)), target),
                                        _inputs(x, work), dloss, label["layer"], replay.rewound)
    manual, crash = _backward(lambda: _manual_grads(work.backward(work_loss.backward(dloss.item())), work))
    return _rows(value, value_ref, "loss", manual, expected, tolerance, label, crash)


def _rows(value, value_ref, value_name, manual, expected, tolerance, label, crash):
    rows = [compare_tensors(value, value_ref, tolerance, tensor=value_name, method="autograd", **label)]
    if not expected:
        rows[0].note = "reference output has another shape; gradients not compared"
    for name, reference in expected.items():
        rows.append(compare_tensors(manual.get(name), reference, tolerance, tensor=name, method="autograd",
                                    note=crash, **label))
    return rows


def _backward(run):
    """``run()``, or {} and why if the manual backward crashed: a crash is a failed check, not an abort. A
    LayerError is the caller's misuse (a dy of the wrong shape, say) and is raised as it is."""
    try:
        return run(), ""
    except LayerError:
        raise
    except Exception as error:              # whatever a broken backward raises is reported in its rows
        return {}, f"backward raised {type(error).__name__}: {error}"


# -- against finite differences -----------------------------------------------------------------------------

def _layer_vs_finite_diff(layer, x, dy, seed, label):
    work, x = _working_copy(layer, torch.float64), _cast(x, torch.float64)
    x, note = finite_diff.keep_off_kinks(layer, x)
    replay = Replay(work, x.device)
    y = work.forward(x)
    dy = _upstream(y, dy, seed)
    manual, crash = _backward(lambda: _manual_grads(work.backward(dy), work))

    def objective():
        with replay.rewound():
            return float((work.forward(x) * dy).sum())

    return _fd_rows(objective, _inputs(x, work), manual, seed, label, "; ".join(filter(None, [note, crash])))


def _loss_vs_finite_diff(loss, pred, target, seed, label):
    work, pred, target = copy.deepcopy(loss), _cast(pred, torch.float64), _cast_target(target, torch.float64)
    dloss = _upstream(work.forward(pred, target), None, seed).item()
    manual, crash = _backward(lambda: {"dpred": work.backward(dloss)})
    return _fd_rows(lambda: float(work.forward(pred, target)) * dloss, {"dpred": pred}, manual, seed, label, crash)


def _fd_rows(objective, inputs, manual, seed, label, note):
    """One row per input: the manual gradient at the checked coordinates against the numeric one."""
    generator, rows = torch.Generator().manual_seed(seed), []
    for name, tensor in inputs.items():
        flat = finite_diff.coordinates(tensor.numel(), generator)
        numeric = finite_diff.numeric_gradient(objective, tensor, flat)
        sampled = f"{len(flat)} of {tensor.numel()} coordinates" if len(flat) < tensor.numel() else ""
        notes = "; ".join(filter(None, [sampled, note]))
        where = dict(label, tensor=name, method="finite-diff", note=notes)
        problem = mismatch(manual.get(name), tensor)
        if problem:
            rows.append(failed_row(problem, FINITE_DIFF, shape=tuple(tensor.shape), **where))
            continue
        row = compare_tensors(manual[name].detach().reshape(-1)[flat].cpu(), numeric, FINITE_DIFF, **where)
        row.shape = tuple(tensor.shape)
        rows.append(row)
    return rows


# -- shared steps -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _isolated(device):
    """Autograd on (even inside inference_mode or no_grad) and the global RNG as it was, afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
        yield


def _activations(model, x, dtype):
    """[x_0, x_1, ..., y]: what flows into each layer of a copy of the model, and what comes out."""
    work = _working_copy(model, dtype)
    activations = [_cast(x, dtype)]
    for layer in getattr(work, "layers", [work]):
        activations.append(layer.forward(activations[-1]))
    return activations


def _working_copy(layer, dtype):
    work = copy.deepcopy(layer)
    if dtype is not None:
        work.to(dtype=dtype)
    work.zero_grad()           # so the grads after one backward are that backward's increment
    work.needs_input_grad = True
    return work


def _cast(x, dtype):
    """A private copy of x (finite differences perturb it in place), of ``dtype`` if one is given."""
    return x.detach().to(dtype=dtype or x.dtype).clone()


def _cast_target(target, dtype):
    return _cast(target, dtype) if target.is_floating_point() else target.detach().clone()


def _upstream(y, dy, seed):
    """dL/dy: the given one, or seeded standard normal (drawn in float64, the same numbers in any dtype)."""
    if dy is None:
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return dy.detach().to(device=y.device, dtype=y.dtype)


def _inputs(x, layer):
    """What the gradients are taken with respect to, under their row names: dx, dweight, d0.bias, ..."""
    return {"dx": x, **{f"d{name}": p for name, p in layer.params.items()}}


def _params_of(leaves):
    return {name[1:]: t for name, t in leaves.items() if name != "dx"}


def _manual_grads(dx, layer):
    return {"dx": dx, **{f"d{name}": g for name, g in layer.grads.items()}}
