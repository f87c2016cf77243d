"""The rules of a backward written by hand, checked: it is the math, not autograd or torch's own backward
kernels; it adds to ``.grad`` rather than overwriting it; it leaves its caller's tensors (the inputs, dy) as
they were."""

import contextlib
import threading

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from manualnet.errors import LayerError, NotByHand
from manualnet.verify.report import compare_tensors, failed_row


def changed_in_place(inputs, input_versions, dys, dy_versions, tolerance, label):
    """A failed row for each input that forward or backward changed in place, and each dy that backward did:
    the caller's own tensors (a batch, the dy a Residual's skip path reads again), which autograd's modules
    leave alone. ``input_versions``: the inputs' ``_version`` (torch's count of in-place changes) before and
    after forward; ``dy_versions``: the dys' before backward."""
    before, after_forward = input_versions
    changes = []
    for i, x in enumerate(inputs):
        name = f"x{i}" if len(inputs) > 1 else "x"
        changes += [("forward", name, x)] if after_forward[i] != before[i] else []
        changes += [("backward", name, x)] if x._version != after_forward[i] else []
    changes += [("backward", f"dy{k}" if len(dys) > 1 else "dy", dy) for k, dy in enumerate(dys)
                if dy._version != dy_versions[k]]
    return [failed_row(f"{method} changed {name} in place: it is the caller's tensor", tolerance, tensor=name,
                       shape=tuple(t.shape), method="in place", **label) for method, name, t in changes]


def accumulates(again, work, dys, seed, tolerance, label):
    """A backward ADDS to ``.grad``, as autograd does (one that overwrites it passes the rows above, whose
    buffers start at zero): ``again``, the module as it was after the forward, given random gradients g0,
    must end at g0 + what ``work``'s backward left from zero. Rows for the module's own parameters."""
    gen = torch.Generator().manual_seed(seed + 1)
    own = dict(again.named_parameters(recurse=False))
    start = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for k, p in own.items()}
    for k, p in own.items():
        p.grad = start[k].clone()
    _, crash = run_backward(lambda: again.backward(*dys))
    if crash:  # only from gradients already there: a failure of its own
        return [failed_row(crash, tolerance, tensor=f"d{k} accumulates", shape=tuple(own[k].shape),
                           method="accumulate", **label) for k in own]
    fresh = dict(work.named_parameters(recurse=False))
    filled = [k for k in own if own[k].grad is not None and fresh[k].grad is not None]  # (a missing one: above)
    return [compare_tensors(own[k].grad, start[k] + fresh[k].grad, tolerance, tensor=f"d{k} accumulates",
                            method="accumulate", **label) for k in filled]


def run_backward(run):
    """``run()``, or {} and why if the manual backward crashed or was not written by hand (it called
    autograd or one of torch's own backward kernels): a failed check, not an abort. A LayerError is the
    caller's misuse (a dy of the wrong shape, say) and is raised as it is."""
    try:
        with by_hand() as kernels:
            result = run()
    except LayerError:
        raise
    except Exception as error:              # whatever a broken backward raises is reported in its rows
        signature = isinstance(error, TypeError) and "positional argument" in str(error)
        hint = " (a loss's backward takes dloss=1.0, a layer's one dy per output)" if signature else ""
        return {}, f"backward raised {type(error).__name__}: {error}{hint}"
    if kernels:
        return {}, f"backward called torch's own backward kernel {kernels[0]}: write it from the math instead"
    return result, ""


_refusing = threading.local()  # .on: this thread runs a manual backward; autograd refuses it (not others)
_guards = {"lock": threading.Lock(), "users": 0, "saved": None}


@contextlib.contextmanager
def by_hand():
    """Inside, on this thread: autograd refuses to run (``NotByHand``), and the list yielded collects every
    aten op called whose name says it is a backward kernel (the ``torch.nn.grad`` functions call them too).
    Other threads' autograd runs as ever."""
    with _BackwardKernels() as kernels:  # (entered first: torch checks its own functions as it starts)
        with _guards["lock"]:
            if _guards["users"] == 0:
                _guards["saved"] = _install_guards()
            _guards["users"] += 1
        before, _refusing.on = getattr(_refusing, "on", False), True
        try:
            yield kernels.called
        finally:
            _refusing.on = before
            with _guards["lock"]:
                _guards["users"] -= 1
                if _guards["users"] == 0:
                    torch.autograd.backward, torch.autograd.grad, torch.Tensor.backward = _guards["saved"]


def _install_guards():
    """Put guards in place of autograd's entry points; return the originals."""
    saved = torch.autograd.backward, torch.autograd.grad, torch.Tensor.backward
    torch.autograd.backward = _guard(saved[0], "torch.autograd.backward")
    torch.autograd.grad = _guard(saved[1], "torch.autograd.grad")
    torch.Tensor.backward = _guard(saved[2], "Tensor.backward")
    return saved


def _guard(original, name):
    def guard(*args, **kwargs):
        if getattr(_refusing, "on", False):
            raise NotByHand(f"it called {name}: manualnet's backward is written by hand, without autograd")
        return original(*args, **kwargs)
    return guard


class _BackwardKernels(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.called = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if "backward" in name and name not in self.called:
            self.called.append(name)
        return func(*args, **(kwargs or {}))
