"""The layer contract every manualnet layer fills in.

``forward(x)`` returns y and stores in ``self.cache`` exactly what backward needs. ``backward(dy)`` takes
dL/dy (y's shape), returns dL/dx (x's shape) and ADDS each parameter's gradient into ``self.grads``, the way
PyTorch accumulates ``.grad``. ``params`` and ``grads`` are dicts with the same keys and shapes, named like
PyTorch's, so a state dict moves between manualnet and ``torch.nn`` unchanged.

The checks every layer needs (dtype, dy's shape, backward before forward) and running under
``torch.no_grad()`` live here, wrapped around each subclass's ``forward`` and ``backward``, so that a
layer's own code reads like its math. Under ``torch.inference_mode()`` forward keeps no cache.
"""

import functools

import torch

from manualnet.errors import LayerError
from manualnet.registry import Registry

LAYERS = Registry("layer")


def register_layer(name):
    """Decorator: make a Layer subclass available to configs as ``{type: name}``."""
    return LAYERS.register(name)


class Layer:
    """Base class of every layer, and of Sequential.

    Subclasses set ``self.params`` / ``self.grads`` in ``__init__`` (after ``super().__init__()``) and
    implement ``forward(x)`` and ``backward(dy)``. Three flags, set by Sequential around one backward call,
    let a layer save work: ``needs_input_grad`` False (dx is not wanted: return None), ``reuse_dy`` True
    (dy is a temporary nobody else holds: dx may be written into it) and, for a layer whose class sets
    ``sets_grads``, ``accumulate_grads`` False (write the gradients instead of adding to them: the caller
    would have zeroed them first). A subclass may also give
    ``reference(x, params)``: the same function written with ``torch.nn.functional`` ops, which
    ``manualnet.verify`` differentiates with autograd; without it, verify runs the layer's own forward under
    autograd.
    """

    fresh_dx = False  # True: backward always returns a new tensor that nothing else holds (Sequential may
                      # then let the layer below write its dx into that memory)
    sets_grads = False  # True: backward honours accumulate_grads = False

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.training = True
        self.needs_input_grad = True  # False: backward may skip dL/dx and return None (first layer)
        self.reuse_dy = False         # True: backward may write dx into dy's memory (set by Sequential)
        self.accumulate_grads = True  # False: backward sets the gradients (only if sets_grads; Sequential)
        self.cache = None
        self._y_shape = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:  # the unchecked originals stay reachable for Sequential's fast path
            cls.raw_forward = cls.__dict__["forward"]
            cls.forward = _checked_forward(cls.raw_forward)
        if "backward" in cls.__dict__:
            cls.raw_backward = cls.__dict__["backward"]
            cls.backward = _checked_backward(cls.raw_backward)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def take_cache(self):
        """Hand the cache to backward and forget it: one forward feeds one backward."""
        cache, self.cache = self.cache, None
        return cache

    def check_input(self, x):
        """Raise LayerError if x cannot be this layer's input. Subclasses with a fixed size override."""

    def fail(self, problem):
        """A LayerError that names this layer."""
        return LayerError(f"{self.describe()}: {problem}")

    def describe(self):
        return type(self).__name__

    # -- parameters -------------------------------------------------------------------------------

    def named_parameters(self):
        """Yield ``(name, param, grad)`` for every parameter."""
        for name, param in self.params.items():
            yield name, param, self.grads[name]

    def num_parameters(self):
        return sum(p.numel() for p in self.params.values())

    def zero_grad(self):
        for grad in self.grads.values():
            grad.zero_()

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def to(self, device=None, dtype=None):
        """Move/cast parameters and gradients in place (the dict entries keep their identity)."""
        if dtype is not None and not torch.empty((), dtype=dtype).is_floating_point():
            raise self.fail(f"to(dtype={dtype}) needs a floating dtype")
        for tensors in (self.params, self.grads):
            for t in tensors.values():
                t.data = t.data.to(device=device, dtype=dtype)
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


def _checked_forward(forward):
    @functools.wraps(forward)
    def checked(self, x, *args, **kwargs):
        if not isinstance(x, torch.Tensor):
            raise self.fail(f"forward expects a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise self.fail(f"input has dtype {x.dtype}; layers work on floating tensors, cast it with x.float()")
        self.check_input(x)
        if torch.is_grad_enabled():  # entering no_grad costs microseconds: only when needed
            with torch.no_grad():
                y = forward(self, x, *args, **kwargs)
        else:
            y = forward(self, x, *args, **kwargs)
        if torch.is_inference_mode_enabled():
            self.cache, self._y_shape = None, None
        else:
            self._y_shape = y.shape
        return y

    return checked


def _checked_backward(backward):
    @functools.wraps(backward)
    def checked(self, dy, *args, **kwargs):
        if self._y_shape is None:
            raise self.fail(
                "backward called without a forward to go back through (call forward first; each forward "
                "feeds one backward, and forward under torch.inference_mode() keeps no cache)"
            )
        if not isinstance(dy, torch.Tensor) or dy.shape != self._y_shape:
            got = tuple(dy.shape) if isinstance(dy, torch.Tensor) else type(dy).__name__
            raise self.fail(f"backward got dy of shape {got}, expected y's shape {tuple(self._y_shape)}")
        self._y_shape = None
        if torch.is_grad_enabled():
            with torch.no_grad():
                return backward(self, dy, *args, **kwargs)
        return backward(self, dy, *args, **kwargs)

    return checked
