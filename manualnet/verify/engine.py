"""Gradient checks of a module, a loss or a whole model: manual backward against autograd and finite differences.

A module is checked on L = sum_k sum(y_k * dy_k) for seeded random upstream gradients dy_k (one per output),
a loss on L = dloss * loss for a seeded random scalar dloss, so every entry of the upstream gradient matters.
Each check works on deep copies of what it checks, cast to ``dtype`` (``None``: as it is), so the caller's
parameters, gradients, caches and generators are untouched; the global RNG is restored afterwards, and a
check runs even under ``torch.inference_mode()``.

Row names: ``y`` (or ``y0``, ``y1``... for several outputs), ``dx`` (``dx0``, ``dx1``... for several
inputs) and ``d<parameter name>`` (``dweight``, ``dblocks.0.attn.qkv.weight``); a parameter whose row name
would be an input's is shown as ``d(<name>)``.
"""

import contextlib
import copy
import dataclasses

import torch

from manualnet.errors import NoReference
from manualnet.verify import finite_diff
from manualnet.verify.reference import (
    BREAKS,
    Replay,
    describe,
    differentiate,
    reference_of,
    with_leaf_parameters,
)
from manualnet.verify.report import Rows, compare_tensors, skipped_row, tolerance_for
from manualnet.verify.rules import accumulates, changed_in_place, run_backward


def check_module(module, *inputs, grads=None, dtype=torch.float64, fd=False, seed=0, tol=None, index=None):
    """Rows for ``module`` at ``inputs``: its output against its reference, dL/d(each floating input) and
    each parameter's gradient against autograd; with ``fd`` also against finite differences of its own
    forward in float64 (inputs within 10h of a ``kink`` moved away). ``grads``: the upstream gradients
    (one per output; seeded random if None). ``index`` labels the rows with the module's place in a model."""
    with _isolated(inputs[0].device):
        label = dict(index=index, layer=describe(module))
        tolerance = tolerance_for(dtype or inputs[0].dtype, tol)
        rows = _unless_unreachable(lambda: _module_vs_autograd(module, inputs, grads, dtype, seed, tolerance,
                                                               label), label)
        if fd:
            rows += _module_vs_finite_diff(module, inputs, grads, seed, label)
    return Rows(rows)


def check_layer(layer, x, dy=None, *, dtype=torch.float64, fd=False, seed=0, tol=None, index=None):
    """``check_module`` for a one-input layer with upstream gradient ``dy``."""
    return check_module(layer, x, grads=None if dy is None else (dy,), dtype=dtype, fd=fd, seed=seed, tol=tol,
                        index=index)


def check_loss(loss, pred, target, *, dtype=torch.float64, fd=False, seed=0, tol=None, index=None):
    """Rows for ``loss`` at (pred, target): its value ("loss") and dL/dpred ("dpred") against autograd on
    ``loss.reference``; with ``fd`` also dpred against finite differences of its own forward in float64."""
    with _isolated(pred.device):
        label = dict(index=index, layer=describe(loss))
        tolerance = tolerance_for(dtype or pred.dtype, tol)
        rows = _unless_unreachable(lambda: _loss_vs_autograd(loss, pred, target, dtype, seed, tolerance, label),
                                   label)
        if fd:
            rows += _loss_vs_finite_diff(loss, pred, target, seed, label)
    return Rows(rows)


def check_model(model, loss, x, target, *, dtype=torch.float64, fd=False, seed=0, tol=None):
    """Rows for a model trained with ``loss`` on (x, target):

    (a) every module inside it (leaf layers and composite blocks alike) by ``check_module`` at the inputs
    that really reach it in the model's forward (rows labelled with its path, e.g. ``1.fc1``), and the loss
    by ``check_loss`` at the model's output; (b) end to end, the loss value, dL/dx and every parameter's
    gradient against autograd on the model's own forward and the loss's reference (rows with index None).
    """
    with _isolated(x.device):
        reached, output = inputs_reaching(model, x, dtype)
    rows = []
    for i, (path, (module, inputs)) in enumerate(reached.items()):
        rows += check_module(module, *inputs, dtype=dtype, fd=fd, seed=seed + i, tol=tol, index=path)
    rows += check_loss(loss, output, target, dtype=dtype, fd=fd, seed=seed + len(reached), tol=tol, index="loss")
    with _isolated(x.device):
        label = dict(index=None, layer=f"{describe(model)}+{describe(loss)}")
        rows += _unless_unreachable(lambda: _model_vs_autograd(model, loss, x, target, dtype, seed,
                                                               tolerance_for(dtype or x.dtype, tol)), label)
    return Rows(rows)


def _unless_unreachable(rows_of, label):
    """``rows_of()``, or the skipped row that says why autograd cannot check it (finite differences can)."""
    try:
        return rows_of()
    except NoReference as why:
        return [dataclasses.replace(skipped_row(label["layer"], f"autograd cannot check it: {why}"),
                                    index=label["index"])]


def inputs_reaching(model, x, dtype):
    """``({path: (module, inputs)}, output)``: every module below the root of a copy of ``model``, in the order
    its forward first ran, with the inputs it got then (modules never called, like a ModuleList, are absent)."""
    work = _working_copy(model, dtype)
    reached = {}
    paths = {id(m): path for path, m in work.named_modules()}
    for module in work.modules():
        if module is not work:
            object.__setattr__(module, "forward", _recording(module, module.forward, paths, reached))
    try:
        output = work.forward(_cast(x, dtype))
    finally:
        for module in work.modules():
            vars(module).pop("forward", None)
    return reached, output.detach()


def _recording(module, forward, paths, reached):
    def recorded(*inputs, **kwargs):
        reached.setdefault(paths[id(module)], (module, tuple(_cast(t, None) for t in inputs)))
        return forward(*inputs, **kwargs)

    return recorded


# -- against autograd --------------------------------------------------------------------------------------

def _module_vs_autograd(module, inputs, grads, dtype, seed, tolerance, label):
    work = _working_copy(module, dtype)
    reference_copy = copy.deepcopy(work)
    inputs = tuple(_cast(x, dtype) for x in inputs)
    originals = tuple(x.clone() for x in inputs)  # what the reference gets, whatever forward does to inputs
    replay = Replay([work], inputs[0].device)
    versions = [x._version for x in inputs]       # torch counts each tensor's in-place changes
    out = work.forward(*inputs)
    after_forward = [x._version for x in inputs]
    outs = out if isinstance(out, tuple) else (out,)
    dys = _upstreams(outs, grads, seed)
    names = _row_names(inputs, work)
    leaves = {**{names[i]: x.detach().clone().requires_grad_(True) for i, x in _floating(originals)},
              **{names[p]: leaf for p, leaf in with_leaf_parameters(reference_copy).items()}}
    call = tuple(leaves.get(names.get(i), x) for i, x in enumerate(originals))
    with replay.rewound():
        outs_ref, expected = differentiate(lambda: reference_of(reference_copy)(*call), leaves, dys, label["layer"])
    again = copy.deepcopy(work) if work._parameters else None  # after this forward, for _accumulates
    given = [dy.clone() for dy in dys]
    given_versions = [dy._version for dy in given]
    manual, crash = run_backward(lambda: _manual_grads(work.backward(*given), inputs, work, names))
    values = [compare_tensors(o, r, tolerance, tensor="y" if len(outs) == 1 else f"y{k}", method="autograd", **label)
              for k, (o, r) in enumerate(zip(outs, outs_ref, strict=False))]
    rows = _grad_rows(values, manual, expected, tolerance, label, crash)
    rows += changed_in_place(inputs, (versions, after_forward), given, given_versions, tolerance, label)
    return rows + (accumulates(again, work, dys, seed, tolerance, label) if again is not None and not crash else [])


def _loss_vs_autograd(loss, pred, target, dtype, seed, tolerance, label):
    work, pred, target = copy.deepcopy(loss), _cast(pred, dtype), _cast_target(target, dtype)
    value = work.forward(pred, target)
    dloss = _upstreams((value,), None, seed)
    leaf = pred.detach().clone().requires_grad_(True)
    (value_ref,), expected = differentiate(lambda: reference_of(work)(leaf, target), {"dpred": leaf}, dloss,
                                           label["layer"])
    manual, crash = run_backward(lambda: {"dpred": work.backward(dloss[0].item())})
    rows = [compare_tensors(value, value_ref, tolerance, tensor="loss", method="autograd", **label)]
    return _grad_rows(rows, manual, expected, tolerance, label, crash)


def _model_vs_autograd(model, loss, x, target, dtype, seed, tolerance):
    work, work_loss = _working_copy(model, dtype), copy.deepcopy(loss)
    reference_copy = copy.deepcopy(work)
    x, target = _cast(x, dtype), _cast_target(target, dtype)
    replay = Replay([work], x.device)
    value = work_loss.forward(work.forward(x), target)
    dloss = _upstreams((value,), None, seed)
    label = dict(index=None, layer=f"{describe(work)}+{describe(work_loss)}")
    names = _row_names((x,), work)
    leaves = {**({"dx": x.detach().clone().requires_grad_(True)} if x.is_floating_point() else {}),  # not token ids
              **{names[p]: leaf for p, leaf in with_leaf_parameters(reference_copy).items()}}
    with replay.rewound():
        (value_ref,), expected = differentiate(
            lambda: reference_of(work_loss)(reference_of(reference_copy)(leaves.get("dx", x)), target), leaves, dloss,
            label["layer"])
    manual, crash = run_backward(lambda: _manual_grads(work.backward(work_loss.backward(dloss[0].item())), (x,),
                                                    work, names))
    rows = [compare_tensors(value, value_ref, tolerance, tensor="loss", method="autograd", **label)]
    return _grad_rows(rows, manual, expected, tolerance, label, crash)


def _grad_rows(rows, manual, expected, tolerance, label, crash):
    """``rows`` (the values') and one row per gradient of ``expected``, autograd's (none: the first row says why)."""
    if not expected:
        rows[0].note = "reference output has another shape; gradients not compared"
    for name, reference in expected.items():
        row = compare_tensors(manual.get(name), reference, tolerance, tensor=name, method="autograd", note=crash,
                              **label)
        if not row.passed and getattr(reference, "unreached", False):  # autograd's zero may be what is wrong
            row.note = "; ".join(filter(None, [row.note, f"the reference does not reach it ({BREAKS}?)"]))
        rows.append(row)
    return rows


# -- against finite differences -----------------------------------------------------------------------------

def _module_vs_finite_diff(module, inputs, grads, seed, label):
    work = _working_copy(module, torch.float64)
    inputs = [_cast(x, torch.float64) for x in inputs]
    inputs[0], note = finite_diff.keep_off_kinks(module, inputs[0])
    replay = Replay([work], inputs[0].device)
    out = work.forward(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    dys = _upstreams(outs, grads, seed)
    names = _row_names(inputs, work)
    manual, crash = run_backward(lambda: _manual_grads(work.backward(*dys), inputs, work, names))

    def objective():
        with replay.rewound():
            out = work.forward(*inputs)
        return sum(float((o * dy).sum()) for o, dy in zip(out if isinstance(out, tuple) else (out,), dys,
                                                           strict=True))

    tensors = {**{names[i]: x for i, x in _floating(inputs)},
               **{names[p]: t for p, t in work.named_parameters()}}
    return _fd_rows(objective, tensors, manual, seed, label, "; ".join(filter(None, [note, crash])))


def _loss_vs_finite_diff(loss, pred, target, seed, label):
    work, pred, target = copy.deepcopy(loss), _cast(pred, torch.float64), _cast_target(target, torch.float64)
    dloss = _upstreams((work.forward(pred, target),), None, seed)[0].item()
    manual, crash = run_backward(lambda: {"dpred": work.backward(dloss)})
    return _fd_rows(lambda: float(work.forward(pred, target)) * dloss, {"dpred": pred}, manual, seed, label, crash)


def _fd_rows(objective, inputs, manual, seed, label, note):
    """One row per input: the manual gradient at the checked coordinates against the numeric one."""
    generator, rows = torch.Generator().manual_seed(seed), []
    for name, tensor in inputs.items():
        n = tensor.numel()
        sampled = f"{finite_diff.SAMPLE} of {n} coordinates" if n > finite_diff.FULL_LIMIT else ""
        where = dict(label, tensor=name, method="finite-diff", note="; ".join(filter(None, [sampled, note])))
        rows.append(finite_diff.checked_row(objective, tensor, manual.get(name), generator, **where)[0])
    return rows


# -- shared steps -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _isolated(device):
    """Autograd on (even inside inference_mode or no_grad) and the global RNG as it was, afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
        yield


def _working_copy(module, dtype):
    work = copy.deepcopy(module)
    if dtype is not None:
        work.to(dtype=dtype)
    for p in work.parameters():  # so the gradients after one backward are that backward's increment
        p.grad = torch.zeros_like(p)
    for m in work.modules():     # every input's gradient is checked, the model's first layer's too
        if getattr(m, "needs_input_grad", True) is False:
            m.needs_input_grad = True
    return work


def _cast(x, dtype):
    """A private copy of x (finite differences perturb it in place), of ``dtype`` if one is given and x is
    floating (integer inputs, such as class or token indices, keep theirs)."""
    x = x.detach()
    return x.to(dtype=dtype if dtype is not None and x.is_floating_point() else x.dtype).clone()


def _cast_target(target, dtype):
    return _cast(target, dtype) if target.is_floating_point() else target.detach().clone()


def _upstreams(outs, grads, seed):
    """dL/d(each output): the given ones, or seeded standard normal (drawn in float64, the same numbers in any
    dtype)."""
    if grads is None:
        generator = torch.Generator().manual_seed(seed)
        grads = [torch.randn(o.shape, generator=generator, dtype=torch.float64) for o in outs]
    return tuple(g.detach().to(device=o.device, dtype=o.dtype) for g, o in zip(grads, outs, strict=True))


def _floating(inputs):
    return [(i, x) for i, x in enumerate(inputs) if x.is_floating_point()]


def _row_names(inputs, module):
    """Row name of each floating input (by position) and each parameter (by name)."""
    floating = _floating(inputs)
    names = {i: "dx" if len(inputs) == 1 else f"dx{i}" for i, _ in floating}
    taken = set(names.values())
    for name, _ in module.named_parameters():
        names[name] = f"d({name})" if f"d{name}" in taken else f"d{name}"
    return names


def _manual_grads(dxs, inputs, module, names):
    dxs = dxs if isinstance(dxs, tuple) else (dxs,)
    grads = {names[i]: dxs[i] if i < len(dxs) else None for i, _ in _floating(inputs)}
    return {**grads, **{names[name]: p.grad for name, p in module.named_parameters()}}
