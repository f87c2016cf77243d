"""The checks wrapped around every module's ``forward`` and ``backward``, and their cost kept off the hot path.

Checked: the inputs (``check_inputs``: tensors, floating, the right sizes, the right count), backward after a
forward, dy's shape against the output's, and on the first backward of a new input signature the shapes of
the dx it returns. ``.grad`` is allocated before a backward when torch.optim's ``zero_grad`` dropped it, and
no autograd graph is built through manual math from an input that requires grad.

The one speed trick: a module remembers the input signatures (shapes, dtypes, devices, mode) whose checks
passed. A call with such a signature runs "trusted": its children's inputs follow from its own, so inside it
every child's forward and backward skips its checks but for the cheap ones (forward before backward, dy's
shape). Registering a parameter or module anywhere forgets every remembered signature.
"""

import contextlib
import functools
import inspect

import torch

SIGNATURES_KEPT = 8  # per module: an epoch's short last batch is a second signature, eval mode a third


class _State:
    trusted = False          # inside a call whose inputs passed the checks before
    inference = False        # that call runs under torch.inference_mode(): forwards keep no cache
    through_forward = False  # verify differentiates a module's own forward: forwards may build graphs
    version = 0              # bumped when any module registers a parameter or a child


def init(module):
    d = module.__dict__
    d["_checked"] = []       # (signature, version) pairs whose full checks passed
    d["_out_shapes"] = None  # set by forward, taken by backward
    d["_in_shapes"] = None   # set by a fully checked forward: its backward checks the dx it returns
    d["_graph"] = False      # its forward's inputs required grad: its backward runs under no_grad too


def wrap(cls):
    """Wrap the ``forward`` and ``backward`` a Module subclass defines itself."""
    if "forward" in cls.__dict__:
        forward = cls.__dict__["forward"]
        cls.forward = _checked_forward(forward, _arity(forward))
    if "backward" in cls.__dict__:
        cls.backward = _checked_backward(cls.__dict__["backward"])


def structure_changed():
    _State.version += 1


@contextlib.contextmanager
def autograd_through_forward():
    """Inside: forwards build autograd graphs from inputs that require grad (verify's own-forward reference)."""
    before, _State.through_forward = _State.through_forward, True
    try:
        yield
    finally:
        _State.through_forward = before


@contextlib.contextmanager
def _trusted(inference):
    _State.trusted, _State.inference = True, inference
    try:
        yield
    finally:
        _State.trusted = False


def _checked_forward(forward, arity):
    @functools.wraps(forward)
    def checked(self, *inputs, **kwargs):
        d = self.__dict__
        if _State.trusted:
            out = forward(self, *inputs, **kwargs)
            d["_out_shapes"] = None if _State.inference else _shapes(out)
            if _State.inference:
                d["cache"] = None
            return out
        key = (_signature(inputs), self.training, _State.version)
        inference = torch.is_inference_mode_enabled()
        graph = _needs_no_grad(inputs)
        with torch.no_grad() if graph else contextlib.nullcontext():
            if key in d["_checked"]:
                with _trusted(inference):
                    out = forward(self, *inputs, **kwargs)
                in_shapes = None
            else:
                if arity is not None and len(inputs) != arity:
                    raise self.fail(f"forward takes {arity} input(s), got {len(inputs)}")
                self.check_inputs(*inputs)
                out, in_shapes = forward(self, *inputs, **kwargs), _shapes(inputs)
                _remember(d["_checked"], key)
        d["_graph"] = graph
        if inference:  # nothing to go back through: keep no cache
            d["cache"], d["_out_shapes"] = None, None
        else:
            d["_out_shapes"], d["_in_shapes"] = _shapes(out), in_shapes
        return out

    return checked


def _checked_backward(backward):
    @functools.wraps(backward)
    def checked(self, *grads, **kwargs):
        d = self.__dict__
        expected = d["_out_shapes"]
        if expected is None:
            raise self.fail("backward called without a forward to go back through (call forward first; each "
                            "forward feeds one backward, and forward under torch.inference_mode() keeps none)")
        if grads and not (len(grads) == 1 and type(grads[0]) is torch.Tensor and grads[0].shape == expected) \
                and _grad_shapes(grads, expected) != expected:
            raise self.fail(f"backward got gradients of shape {_show(_grad_shapes(grads, expected))}, expected "
                            f"the outputs' {_show(expected)}")
        for p in d["_parameters"].values():
            if p.grad is None:  # dropped by zero_grad(set_to_none=True), torch.optim's default
                p.grad = torch.zeros_like(p)
        if _State.trusted:
            result = backward(self, *grads, **kwargs)
        else:
            in_shapes = d["_in_shapes"]
            graph = d["_graph"] or _needs_no_grad(grads)
            with torch.no_grad() if graph else contextlib.nullcontext(), \
                    _trusted(False) if in_shapes is None else contextlib.nullcontext():
                result = backward(self, *grads, **kwargs)
            if in_shapes is not None:  # the first backward of a new input signature: check what it returns
                _check_returned(self, result, in_shapes)
                d["_in_shapes"] = None
        d["_out_shapes"] = None  # after: a subclass's backward may call super().backward()
        return result

    return checked


def _remember(checked, key):
    if key not in checked:
        if len(checked) == SIGNATURES_KEPT:
            checked.pop(0)
        checked.append(key)


def _needs_no_grad(tensors):
    return (not _State.through_forward and torch.is_grad_enabled()
            and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors))


def _arity(forward):
    """How many inputs ``forward`` takes (None for ``*inputs`` or defaults: any number)."""
    params = list(inspect.signature(forward).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL or p.default is not p.empty for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _signature(inputs):
    return tuple((x.shape, x.dtype, x.device) if isinstance(x, torch.Tensor) else type(x) for x in inputs)


def _shapes(value):
    """The shape of a tensor, or the tuple of shapes of a tuple's tensors (None for a non-tensor)."""
    if isinstance(value, torch.Tensor):
        return value.shape
    return tuple(v.shape if isinstance(v, torch.Tensor) else None for v in value)


def _grad_shapes(grads, expected):
    if isinstance(expected, tuple) and not isinstance(expected, torch.Size):
        return tuple(g.shape if isinstance(g, torch.Tensor) else None for g in grads)
    g = grads[0]
    if len(grads) == 1 and isinstance(g, (int, float)) and not isinstance(g, bool):
        return torch.Size([])  # a loss's backward(dloss) takes its upstream gradient as a number too
    return g.shape if isinstance(g, torch.Tensor) and len(grads) == 1 else tuple(map(type, grads))


def _check_returned(module, result, in_shapes):
    """A backward's input gradients have the inputs' shapes (torch itself refuses a .grad of the wrong shape)."""
    returned = result if isinstance(result, tuple) else (result,)
    for i, (dx, shape) in enumerate(zip(returned, in_shapes, strict=False)):
        if dx is not None and shape is not None and (not isinstance(dx, torch.Tensor) or dx.shape != shape):
            got = tuple(dx.shape) if isinstance(dx, torch.Tensor) else type(dx).__name__
            raise module.fail(f"backward returned a gradient of shape {got} for input {i}, "
                              f"which has shape {tuple(shape)}")


def _show(shapes):
    if isinstance(shapes, torch.Size):
        return str(tuple(shapes))
    return ", ".join(str(tuple(s)) if isinstance(s, torch.Size) else str(s) for s in shapes)
