"""The checks wrapped around every module's ``forward`` and ``backward``, and their cost kept off the hot path.

Checked: the inputs (``check_inputs``: tensors, floating, the right sizes, the right count), backward after a
forward, dy's shape against the output's, and on the first backward of a new input signature the shapes of
the dx it returns. ``.grad`` is allocated before a backward when torch.optim's ``zero_grad`` dropped it, and
no autograd graph is built through manual math from an input that requires grad.

The speed trick: a module remembers the input signatures (shapes, dtypes, devices, mode) whose checks
passed. A call with such a signature runs "trusted": its children's inputs follow from its own, so inside it
every child's forward and backward skips its checks but for the cheap ones (forward before backward, dy's
shape), and with tensor subclasses' ``__torch_function__`` off, as a Parameter's is anyway. Registering a
parameter or module anywhere forgets every remembered signature.
"""

import contextlib
import functools
import inspect

import torch

from manualnet.errors import LayerError
from manualnet.registry import refuse

SIGNATURES_KEPT = 8  # per module: an epoch's short last batch is a second signature, eval mode a third


class _State:
    trusted = False          # inside a call whose inputs passed the checks before
    inside = False           # inside a backward checked in full: its children's dy comes from it
    inference = False        # that call runs under torch.inference_mode(): forwards keep no cache
    through_forward = False  # verify differentiates a module's own forward: forwards may build graphs
    version = 0              # bumped when any module registers a parameter or a child


def init(module):
    d = module.__dict__
    d["_checked"] = []       # (signature, version) pairs whose full checks passed
    d["_out_shapes"] = None  # set by forward, taken by backward
    d["_in_shapes"] = None   # set by a fully checked forward: its backward checks the dx it returns
    d["_out_dtype"] = None   # set by an outermost forward: its backward checks dy's dtype
    d["_graph"] = False      # its forward's inputs required grad: its backward runs under no_grad too


def wrap(cls):
    """Wrap the ``__init__``, ``forward`` and ``backward`` a Module subclass defines itself."""
    if "__init__" in cls.__dict__:
        cls.__init__ = _initialised(cls.__dict__["__init__"], cls if "problems" in cls.__dict__ else None)
    if "forward" in cls.__dict__:
        forward = cls.__dict__["forward"]
        cls.forward = _checked_forward(forward, _arity(forward))
    if "backward" in cls.__dict__:
        cls.backward = _checked_backward(cls.__dict__["backward"])


def _initialised(init, owner=None):
    """``init``, then a LayerError if it never called ``super().__init__()`` (one that assigned nothing would
    only fail later, in an attribute a forward or an optimizer reads). With ``owner`` (the class that defines
    ``init`` and a ``problems(args)`` classmethod), first a LayerError naming every argument out of range
    (``registry.refuse``): a subclass's own ``__init__`` is checked by its parent's for what it passes on."""
    signature = inspect.signature(init) if owner is not None else None

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        if signature is not None:
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:  # arguments that do not fit: init says so itself
                bound = None
            if bound is not None:
                bound.apply_defaults()
                given = dict(list(bound.arguments.items())[1:])
                refuse(self, given, owner.problems(given), LayerError)
        init(self, *args, **kwargs)
        if "_parameters" not in self.__dict__:
            raise LayerError(f"{type(self).__name__}: call super().__init__() first in {type(self).__name__}.__init__")

    return checked


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


def _checked_forward(forward, arity):
    @functools.wraps(forward)
    def checked(self, *inputs, **kwargs):
        d = self.__dict__
        if _State.trusted:
            out = forward(self, *inputs, **kwargs)
            if _State.inference:
                d["cache"], d["_out_shapes"] = None, None
            else:
                d["_out_shapes"] = out.shape if type(out) is torch.Tensor else _shapes(out)
            return out
        graph = _needs_no_grad(inputs)
        if graph:
            with torch.no_grad():
                out, in_shapes = _first_call(self, forward, arity, inputs, kwargs)
        else:
            out, in_shapes = _first_call(self, forward, arity, inputs, kwargs)
        d["_graph"] = graph
        if _State.inference:  # nothing to go back through: keep no cache
            d["cache"], d["_out_shapes"] = None, None
        else:
            d["_out_shapes"], d["_in_shapes"] = _shapes(out), in_shapes
            if in_shapes is not None:  # checked in full: its backward checks dy's dtype
                d["_out_dtype"] = out.dtype if isinstance(out, torch.Tensor) else None
        return out

    return checked


def _first_call(module, forward, arity, inputs, kwargs):
    """The outermost call's forward: checked in full for a new input signature, else run trusted with its
    children. Returns the output and, after full checks, the inputs' shapes (for backward's check)."""
    key = (_signature(inputs), module.training, _State.version)
    _State.inference = torch.is_inference_mode_enabled()
    checked = module.__dict__["_checked"]
    if key in checked:
        _State.trusted = True
        try:
            with _plain_tensors():
                return forward(module, *inputs, **kwargs), None
        finally:
            _State.trusted = False
    if arity is not None and len(inputs) != arity:
        raise module.fail(f"forward takes {arity} input(s), got {len(inputs)}")
    module.check_inputs(*inputs)
    out = forward(module, *inputs, **kwargs)
    _remember(checked, key)
    return out, tuple(x.shape if isinstance(x, torch.Tensor) and x.is_floating_point() else None for x in inputs)


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
            raise self.fail(_grads_problem(grads, expected))
        for p in d["_parameters"].values():
            if p.grad is None:  # dropped by zero_grad(set_to_none=True), torch.optim's default
                p.grad = torch.zeros_like(p)
        if _State.trusted:
            result = backward(self, *grads, **kwargs)
            d["_out_shapes"] = None  # after: a subclass's backward may call super().backward()
            return result
        if d["_in_shapes"] is None:  # a signature checked before: its children run trusted
            result = _outermost_backward(self, backward, grads, kwargs)
            d["_out_shapes"] = None
            return result
        dtype = d["_out_dtype"]
        if not _State.inside and dtype is not None and grads and isinstance(grads[0], torch.Tensor) and \
                grads[0].dtype != dtype:  # the outermost call: dy comes from the caller, not from a parent
            raise self.fail(f"backward got dy of dtype {grads[0].dtype}, but forward's output is {dtype}")
        inside, _State.inside = _State.inside, True
        try:
            result = _outermost_backward(self, backward, grads, kwargs)
        finally:
            _State.inside = inside
        d["_out_shapes"] = None  # after: a subclass's backward may call super().backward()
        return result

    return checked


def _outermost_backward(module, backward, grads, kwargs):
    if module.__dict__["_graph"] or _needs_no_grad(grads):
        with torch.no_grad():
            return _first_backward(module, backward, grads, kwargs)
    return _first_backward(module, backward, grads, kwargs)


def _first_backward(module, backward, grads, kwargs):
    """The outermost call's backward: after a forward checked in full, run with its children checked too and
    its dx checked against the inputs' shapes; else run trusted."""
    in_shapes = module.__dict__["_in_shapes"]
    if in_shapes is not None:  # the first backward of a new input signature: check what it returns
        try:
            result = backward(module, *grads, **kwargs)
        except RuntimeError as e:  # torch refuses a .grad of another shape than its parameter's: say whose
            if "assign a gradient" not in str(e):
                raise
            raise module.fail(f"backward set a parameter's gradient of the wrong shape ({e})") from None
        _check_returned(module, result, in_shapes)
        module.__dict__["_in_shapes"] = None
        return result
    _State.trusted = True
    try:
        with _plain_tensors():
            return backward(module, *grads, **kwargs)
    finally:
        _State.trusted = False


def _plain_tensors():
    """Inside a trusted call, tensor subclasses act as plain tensors: a Parameter in an op then costs nothing
    over a tensor, where each op would otherwise look up its ``__torch_function__`` (a Parameter's does
    nothing: torch disables it)."""
    return torch._C.DisableTorchFunctionSubclass()


def _remember(checked, key):
    if key not in checked:
        if len(checked) == SIGNATURES_KEPT:
            checked.pop(0)
        checked.append(key)


def _needs_no_grad(tensors):
    if _State.through_forward or not torch.is_grad_enabled():
        return False
    for t in tensors:  # noqa: SIM110 - a plain loop: any() over a generator costs more, on every call
        if isinstance(t, torch.Tensor) and t.requires_grad:
            return True
    return False


def _arity(forward):
    """How many inputs ``forward`` takes (None for ``*inputs`` or defaults: any number)."""
    params = list(inspect.signature(forward).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL or p.default is not p.empty for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _signature(inputs):
    """Shapes, dtypes and devices (get_device: -1 on the CPU, cheaper than building a torch.device)."""
    return tuple([(x.shape, x.dtype, x.get_device()) if isinstance(x, torch.Tensor) else type(x) for x in inputs])


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
    floating = [i for i, shape in enumerate(in_shapes) if shape is not None]
    fewest = getattr(module, "inputs_with_gradients", None) or (floating[-1] + 1 if floating else 0)
    extra = returned[len(in_shapes):]  # Nones past the inputs given (an optional input left out): as torch
    if len(returned) < fewest or any(g is not None for g in extra):  # (one dx for two inputs: one is lost)
        raise module.fail(f"backward returned {len(returned)} gradient(s) for the {len(in_shapes)} input(s) of "
                          "forward; return one per input, in order (None for one that gets none; inputs after "
                          "the last floating one may be left out)")
    for i, (dx, shape) in enumerate(zip(returned, in_shapes, strict=False)):
        if dx is not None and shape is not None and (not isinstance(dx, torch.Tensor) or dx.shape != shape):
            got = tuple(dx.shape) if isinstance(dx, torch.Tensor) else type(dx).__name__
            raise module.fail(f"backward returned a gradient of shape {got} for input {i}, "
                              f"which has shape {tuple(shape)}")


def _grads_problem(grads, expected):
    """What is wrong with backward's ``grads``: their count, a non-tensor, or their shapes."""
    outputs = 1 if isinstance(expected, torch.Size) else len(expected)
    if len(grads) != outputs:
        return f"backward got {len(grads)} gradients, expected {outputs} (one per output of forward)"
    kinds = [type(g).__name__ for g in grads if not isinstance(g, (torch.Tensor, int, float))]
    if kinds:
        return f"backward got a {kinds[0]}, expected torch.Tensors (dL/d each output)"
    got = _show(_grad_shapes(grads, expected))
    return f"backward got gradients of shape {got}, expected the outputs' {_show(expected)}"


def _show(shapes):
    if isinstance(shapes, torch.Size):
        return str(tuple(shapes))
    return ", ".join(str(tuple(s)) if isinstance(s, torch.Size) else str(s) for s in shapes)
