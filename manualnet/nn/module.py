"""The module contract every manualnet layer, loss and model fills in.

``forward(*inputs)`` returns a tensor (or a tuple) and stores in ``self.cache`` exactly what backward
needs. ``backward(*grads)`` takes dL/d(each output) and returns dL/d(each input) (a tensor, or a tuple in
the inputs' order), ADDING each parameter's gradient into ``param.grad``, as autograd accumulates ``.grad``.
Children and parameters are registered by attribute assignment, as in ``torch.nn.Module``, and named by
their path (``blocks.0.attn.qkv.weight``), so a state dict moves between manualnet and ``torch.nn`` unchanged.

The checks every module needs (tensor inputs, dy's shape, backward before forward, the shapes backward
returns) are wrapped around each subclass's ``forward`` and ``backward`` by ``manualnet.nn.contract``, so
that a layer's own code reads like its math.
"""

from collections import OrderedDict, namedtuple

import torch

from manualnet.errors import LayerError
from manualnet.nn import contract
from manualnet.registry import Registry

LAYERS = Registry("layer")


def register_layer(name):
    """Decorator: make a Module subclass available to configs as ``{type: name}``."""
    return LAYERS.register(name)


_moves = 0  # calls of Module.to(): an optimizer's state follows its parameters to another dtype or device


def moves():
    """How many times ``Module.to`` has moved or cast parameters in this process."""
    return _moves


class Parameter(torch.nn.Parameter):
    """A learnable tensor: assigned to a module attribute, it is registered as that module's parameter.

    It never requires grad (manualnet's backward fills ``.grad`` by hand) and behaves as a plain tensor in
    every op, as ``torch.nn.Parameter`` does.
    """

    def __new__(cls, data, requires_grad=False):
        return super().__new__(cls, data, requires_grad=False)

    def __repr__(self):
        return f"Parameter containing:\n{self.data!r}"


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])  # as torch returns


class Module:
    """Base class of every layer, loss and model.

    Subclasses call ``super().__init__()`` first, assign parameters (``self.weight = Parameter(...)``),
    buffers (``self.register_buffer("running_mean", t)``) and children (``self.fc = Linear(4, 8)``), and
    implement ``forward`` and ``backward``. A subclass may also give ``reference(*inputs)``: the same
    function written with ``torch.nn.functional`` ops on its own parameters, which ``manualnet.verify``
    differentiates with autograd; without it, verify runs the module's own forward under autograd.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "cache", None)
        contract.init(self)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        contract.wrap(cls)

    # -- registration -----------------------------------------------------------------------------

    def __setattr__(self, name, value):
        if name == "cache":  # set by every forward: the common case first
            self.__dict__["cache"] = value
            return
        if "_parameters" not in self.__dict__:
            raise LayerError(f"{type(self).__name__}.{name}: call super().__init__() first in "
                             f"{type(self).__name__}.__init__, before assigning attributes")
        # Registered values also live in __dict__, so reading self.weight in forward is a plain lookup.
        if isinstance(value, torch.nn.Parameter):
            if value.requires_grad:  # a torch.nn.Parameter as torch makes it: manualnet fills .grad by hand
                value = Parameter(value.detach())
            self._parameters[name] = value
            contract.structure_changed()
        elif isinstance(value, Module):
            self._modules[name] = value
            contract.structure_changed()
        elif name in self._parameters or name in self._modules:
            raise LayerError(f"{type(self).__name__}.{name} is a registered "
                             f"{'parameter' if name in self._parameters else 'module'}; assign a "
                             f"{'Parameter' if name in self._parameters else 'Module'}, not a "
                             f"{type(value).__name__}")
        elif name in self._buffers:
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        contract.structure_changed()
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor):
        """A tensor that belongs to the state (saved in ``state_dict``, moved by ``to``) but is not learned,
        such as BatchNorm's running statistics."""
        self._buffers[name] = tensor
        object.__setattr__(self, name, tensor)

    def register_parameter(self, name, param):
        setattr(self, name, param if isinstance(param, torch.nn.Parameter) else Parameter(param))

    def add_module(self, name, module):
        setattr(self, name, module)

    # -- traversal --------------------------------------------------------------------------------

    def named_modules(self, prefix=""):
        """``(path, module)`` for this module and every descendant, depth first, each once."""
        seen = set()

        def walk(module, path):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield path, module
            for name, child in module._modules.items():
                yield from walk(child, f"{path}.{name}" if path else name)

        yield from walk(self, prefix)

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_children(self):
        yield from self._modules.items()

    def children(self):
        yield from self._modules.values()

    def named_parameters(self, prefix="", recurse=True):
        """``(name, parameter)`` pairs named by path (``0.weight``); a tensor shared by two modules (tied
        weights) is listed once, under its first name."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for path, module in modules:
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{path}.{name}" if path else name), p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix=""):
        for path, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                yield (f"{path}.{name}" if path else name), b

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self):
        """Name -> tensor for every parameter and buffer, PyTorch's names; the tensors share memory with
        the module's (clone them for a snapshot). Tied weights appear under each of their names, as in torch."""
        state = OrderedDict()
        for path, module in self.named_modules():
            for name, t in (*module._parameters.items(), *module._buffers.items()):
                state[f"{path}.{name}" if path else name] = t.detach()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy tensors into the parameters and buffers in place. Strict: every name must be present, known
        and of the same shape, else a LayerError lists the missing, unexpected and mis-shaped names."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        misshaped = [f"{k}: given {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                     for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
        problems = [f"{label} {', '.join(items)}" for label, items in
                    (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items]
        if misshaped or (strict and problems):
            raise LayerError(f"state dict does not fit this model: {'; '.join(problems)}")
        with torch.no_grad():  # a torch.nn state dict's tensors may require grad: ours never do
            for k in filter(own.__contains__, state_dict):  # in the given order, as torch copies
                own[k].copy_(state_dict[k])
        return IncompatibleKeys(missing, unexpected)

    def zero_grad(self, set_to_none=False):
        """Zero every parameter's gradient in place (``set_to_none``: drop them, as torch's default does;
        the next backward then allocates them again)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, *args, **kwargs):
        """Move or cast parameters, their gradients and floating buffers in place, like ``torch.nn.Module.to``:
        ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)`` or keywords."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None and not dtype.is_floating_point:
            raise LayerError(f"{type(self).__name__}.to({dtype}): parameters need a floating dtype")
        global _moves
        _moves += 1
        for module in self.modules():
            for p in module._parameters.values():
                p.data = p.data.to(device=device, dtype=dtype)
                if p.grad is not None:
                    p.grad = p.grad.to(device=device, dtype=dtype)
            for name, b in module._buffers.items():
                if b is not None:
                    module.register_buffer(name, b.to(device=device, dtype=dtype if b.is_floating_point() else None))
        return self

    def double(self):
        return self.to(torch.float64)

    def float(self):
        return self.to(torch.float32)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to(torch.device("cuda", device) if isinstance(device, int) else device or "cuda")

    def apply(self, fn):
        """``fn(module)`` for every module below this one and then this one, as torch.nn.Module.apply."""
        for module in reversed(list(self.modules())):
            fn(module)
        return self

    # -- forward and backward ---------------------------------------------------------------------

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def take_cache(self):
        """Hand the cache to backward and forget it: one forward feeds one backward."""
        d = self.__dict__
        cache, d["cache"] = d["cache"], None
        return cache

    def check_inputs(self, *inputs):
        """Raise LayerError if these cannot be this module's inputs (run once per input signature). The
        default wants floating tensors; a layer with a fixed size or integer inputs overrides it."""
        for i, x in enumerate(inputs):
            if not isinstance(x, torch.Tensor):
                raise self.fail(f"input {i} is a {type(x).__name__}; forward expects torch.Tensors")
            if not x.is_floating_point():
                raise self.fail(f"input {i} has dtype {x.dtype}; this layer works on floating tensors, "
                                "cast it with x.float()")
            own = next(iter(self._parameters.values()), None)
            if own is not None and (x.dtype, x.device) != (own.dtype, own.device):
                raise self.fail(f"input {i} is {x.dtype} on {x.device}, its parameters {own.dtype} on {own.device}; "
                                f"move one to the other (x.to({own.dtype}) or model.to({x.dtype}))")

    def fail(self, problem):
        """A LayerError that names this module."""
        return LayerError(f"{self.describe()}: {problem}")

    def describe(self):
        return type(self).__name__

    def extra_repr(self):
        return ""

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"
