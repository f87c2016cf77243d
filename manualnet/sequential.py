from collections import OrderedDict

import torch

from manualnet.errors import LayerError
from manualnet.flat import FlatGroup, split
from manualnet.layer import Layer


class Sequential(Layer):
    """y = layer_k(... layer_1(layer_0(x))); backward runs the layers in reverse.

    ``params`` and ``grads`` hold every layer's tensors under PyTorch-style names (``"0.weight"``), the
    same objects the layers hold, so an optimizer built on a Sequential updates its layers. They live as
    views of two flat buffers (``flat_buffers()``): the optimizer, ``zero_grad`` and gradient norms then
    work on the whole model in one op each.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise LayerError(f"Sequential: item {i} is a {type(layer).__name__}, not a manualnet.Layer")
        self.layers = list(layers)
        self._checked = None  # the input signature the layers' checks last passed for
        # Backward order after the first layer, each with whether its dy is a temporary the layer above
        # made for it alone (never the caller's dy), which the layer may overwrite with its dx.
        later = self.layers[1:]
        self._backward_plan = [(layer, i + 1 < len(later) and later[i + 1].fresh_dx)
                               for i, layer in reversed(list(enumerate(later)))]
        # backward(accumulate=False): the layers that write their gradients themselves, and those zeroed first
        self._setters = [layer for layer in self.layers if layer.sets_grads]
        self._zeroed_first = [layer for layer in self.layers if layer.grads and not layer.sets_grads]
        self.params = {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}
        self.grads = {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}
        self._flatten()

    def _flatten(self):
        self._flat_params, self._flat_grads = FlatGroup(self.params.values()), FlatGroup(self.grads.values())

    def flat_buffers(self):
        """``(params, grads)``: the flat buffers every parameter and gradient is a view of, in ``params``'
        order; None if there are none (no parameters, mixed dtypes or devices, a layer moved on its own)."""
        if self._flat_params.valid() and self._flat_grads.valid():
            return self._flat_params.buffer, self._flat_grads.buffer
        return None

    def param_buffers(self):
        """The tensors that hold every parameter: the flat buffer, or the parameters themselves."""
        flat = self.flat_buffers()
        return [flat[0]] if flat is not None else list(self.params.values())

    def grad_buffers(self):
        """The tensors that hold every gradient: the flat buffer, or one tensor per parameter."""
        flat = self.flat_buffers()
        return [flat[1]] if flat is not None else list(self.grads.values())

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x, outputs=None):
        """y = the last layer's output. ``outputs``, a list, receives a copy of every layer's output in
        order (the trainer's activation histograms: the activations this step's gradients come from)."""
        # Each layer's checks depend only on the input's shape, dtype, device and the mode: once they
        # passed for this signature, the same input kind runs the layers' unchecked forwards (the checks
        # cost as much as a small layer's math).
        signature = (x.shape, x.dtype, x.device, self.training, len(self.layers))
        if signature == self._checked and not torch.is_inference_mode_enabled():
            for layer in self.layers:
                x = layer.raw_forward(x)
                if outputs is not None:  # a copy: a later layer or backward may reuse the output's memory
                    outputs.append(x.clone())
        else:
            self._checked = None
            for layer in self.layers:
                x = layer.forward(x)
                if outputs is not None:
                    outputs.append(x.clone())
            self._checked = signature
        self.cache = True
        return x

    def backward(self, dy, input_grad=True, accumulate=True):
        """Backpropagate dy through every layer; with ``input_grad=False`` skip the first layer's dL/dx
        (nothing upstream needs it, as autograd skips inputs that do not require grad) and return None.
        With ``accumulate=False`` the gradients are set, not added to, as ``zero_grad()`` then ``backward``
        would leave them, without the pass over memory that zeroes them: layers that can (``sets_grads``)
        write them in their own GEMMs, the others are zeroed first. Sequential's own check of dy covers the
        layers: each one's dy comes from the layer after it."""
        self.take_cache()
        if not self.layers:
            return dy
        if not accumulate:
            if self._zeroed_first:
                torch._foreach_zero_([g for layer in self._zeroed_first for g in layer.grads.values()])
            for layer in self._setters:
                layer.accumulate_grads = False
        try:
            for layer, reuse in self._backward_plan:
                layer._y_shape, layer.reuse_dy = None, reuse
                dy = layer.raw_backward(dy)
                layer.reuse_dy = False
            first = self.layers[0]
            first._y_shape, first.needs_input_grad = None, input_grad
            dx = first.raw_backward(dy)
            first.needs_input_grad = True
        finally:
            for layer in self._setters if not accumulate else ():
                layer.accumulate_grads = True
        return dx if input_grad else None

    def zero_grad(self):
        torch._foreach_zero_(self.grad_buffers())

    def train(self, mode=True):
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def to(self, device=None, dtype=None):
        for layer in self.layers:
            layer.to(device=device, dtype=dtype)
        self._flatten()
        return self

    def state_dict(self, copy=False):
        """Name -> parameter tensor, PyTorch's names; loads into the equivalent torch.nn.Sequential. With
        ``copy``, a snapshot no later update reaches (one copy of the flat buffer, the entries its views)."""
        if not copy:
            return OrderedDict((name, p) for name, p in self.params.items())
        flat = self.flat_buffers()
        copies = split(flat[0].clone(), self.params.values()) if flat is not None else \
            [p.detach().clone() for p in self.params.values()]
        return OrderedDict(zip(self.params, copies, strict=True))

    def load_state_dict(self, state_dict, strict=True):
        """Copy tensors into the parameters in place. Strict: every name must be present, known and of
        the same shape, else a LayerError lists the missing, unexpected and mis-shaped names."""
        missing = [k for k in self.params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self.params]
        misshaped = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(self.params[k].shape)}"
                     for k, v in state_dict.items() if k in self.params and v.shape != self.params[k].shape]
        problems = [f"{label} {', '.join(items)}" for label, items in
                    (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items]
        if misshaped or (strict and problems):
            raise LayerError(f"state dict does not fit this model: {'; '.join(problems)}")
        with torch.no_grad():  # a torch.nn state dict's tensors may require grad: ours never do
            for k, v in state_dict.items():
                if k in self.params:
                    self.params[k].copy_(v)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = ["Sequential("]
        for i, layer in enumerate(self.layers):
            count = layer.num_parameters()
            lines.append(f"  ({i}): {layer!r}" + (f"  # {count:,} params" if count else ""))
        lines.append(f")  # {self.num_parameters():,} parameters")
        return "\n".join(lines)

    def describe(self):
        return "Sequential"
