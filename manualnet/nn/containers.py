"""Modules made of modules: a chain, a list, a residual connection."""

import torch

from manualnet.errors import LayerError
from manualnet.nn.module import Module, register_layer
from manualnet.registry import expect


def _check_modules(owner, modules):
    for i, module in enumerate(modules):
        if not isinstance(module, Module):
            raise LayerError(f"{owner}: item {i} is a {type(module).__name__}, not a manualnet.Module")
    return modules


@register_layer("Sequential")
class Sequential(Module):
    """y = layer_k(... layer_1(layer_0(x))); backward runs the layers in reverse.

    Children are named ``"0"``, ``"1"``, ... as in ``torch.nn.Sequential``, so ``state_dict`` keys
    (``0.weight``) match. Indexable (``model[0]``, ``model[1:]``), ``len``, iterable.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(_check_modules("Sequential", layers)):
            setattr(self, str(i), layer)

    def check_inputs(self, x):
        """What x must be is the first layer's to say (a GPT takes integer token ids); its refusal names both."""
        first = next(iter(self._modules.values()), None)
        if first is None:
            return
        try:
            first.check_inputs(x)
        except LayerError as e:
            raise self.fail(f"layer 0: {e}") from None

    def forward(self, x):
        for layer in self._modules.values():
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self._modules.values()):
            dy = layer.backward(dy)
        return dy

    def reference(self, x):
        """The layers' references in sequence (a layer without one runs its forward): what verify
        differentiates end to end, so a layer whose forward works in place (a GPT's) is still checked."""
        for layer in self._modules.values():
            x = layer.reference(x) if hasattr(layer, "reference") else layer(x)
        return x

    @classmethod
    def example(cls, generator):
        """A small chain and a float64 input, for ``verify --all-layers``."""
        from manualnet.nn.layers import Linear, Tanh

        model = cls(Linear(3, 5, generator=generator), Tanh(), Linear(5, 2, generator=generator)).to(torch.float64)
        return model, (torch.randn(4, 3, generator=generator, dtype=torch.float64),)

    def __getitem__(self, i):
        layers = list(self._modules.values())
        return Sequential(*layers[i]) if isinstance(i, slice) else layers[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    @property
    def layers(self):
        return list(self._modules.values())

    def __repr__(self):
        lines = ["Sequential("]
        for name, layer in self._modules.items():
            count = layer.num_parameters()
            note = f"  # {count:,} params" if count else ""
            lines.append(f"  ({name}): " + repr(layer).replace("\n", "\n  ") + note)
        return "\n".join(lines) + f"\n)  # {self.num_parameters():,} parameters"


class ModuleList(Module):
    """A list of modules whose parameters are registered under ``"0"``, ``"1"``, ...; it has no forward of
    its own: the module that holds it calls its items (and their backwards, in reverse)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in _check_modules("ModuleList", list(modules)):
            self.append(module)

    def append(self, module):
        setattr(self, str(len(self._modules)), _check_modules("ModuleList", [module])[0])
        return self

    def __getitem__(self, i):
        items = list(self._modules.values())
        return ModuleList(items[i]) if isinstance(i, slice) else items[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __reversed__(self):
        return reversed(list(self._modules.values()))


@register_layer("Residual")
class Residual(Module):
    """y = x + block(x): a skip connection around ``block`` (a module, or a list of layers run in sequence).

    Shape: x (*) -> y (*); ``block`` must keep x's shape. State dict keys: ``block.<name>``.
    """

    def __init__(self, block):
        super().__init__()
        self.block = Sequential(*block) if isinstance(block, (list, tuple)) else block

    @classmethod
    def problems(cls, args):
        return expect(args, "block", lambda b: isinstance(b, Module | list | tuple),
                      "a Module or a list of them (in a config: a list of layer specs)")

    @classmethod
    def example(cls, generator):
        """A residual MLP block and a float64 input, for ``verify --all-layers``."""
        from manualnet.nn.layers import Linear, Tanh

        block = cls([Linear(4, 6, generator=generator), Tanh(), Linear(6, 4, generator=generator)]).to(torch.float64)
        return block, (torch.randn(3, 4, generator=generator, dtype=torch.float64),)

    def forward(self, x):
        y = self.block(x)
        if y.shape != x.shape:
            raise self.fail(f"the block turns {tuple(x.shape)} into {tuple(y.shape)}; a skip connection needs the "
                            "block to keep its input's shape")
        return x + y

    def backward(self, dy):
        return dy + self.block.backward(dy)     # the skip path passes dy through unchanged
