"""The two halves of a transformer layer: the position-wise MLP and the pre-norm block that joins it to
attention."""

import torch

from manualnet.nn.layers.attention import CausalSelfAttention, head_problems
from manualnet.nn.layers.dropout import Dropout
from manualnet.nn.layers.gelu import GELU
from manualnet.nn.layers.layernorm import LayerNorm
from manualnet.nn.layers.linear import Linear
from manualnet.nn.module import Module, register_layer
from manualnet.registry import expect, is_count, is_probability


@register_layer("MLP")
class MLP(Module):
    """y = dropout(gelu(x @ W_fc^T + b_fc) @ W_proj^T + b_proj), applied at each position alone.

    Args: n_embd: the width C; hidden: the inner width (4C in GPT-2); dropout: in training, on the output;
    approximate: the GELU's form ("tanh" in GPT-2); generator: for the weights and the dropout mask.
    Shape: x (*, C) -> y (*, C); fc.weight (hidden, C), proj.weight (C, hidden).
    """

    def __init__(self, n_embd: int, hidden: int | None = None, dropout: float = 0.0, approximate: str = "tanh",
                 bias: bool = True, generator=None):
        super().__init__()
        hidden = hidden or 4 * n_embd
        self.fc = Linear(n_embd, hidden, bias=bias, generator=generator)
        self.act = GELU(approximate)
        self.proj = Linear(hidden, n_embd, bias=bias, generator=generator)
        self.drop = Dropout(dropout, generator=generator)

    @classmethod
    def problems(cls, args):
        return (expect(args, "n_embd", is_count, "a whole number >= 1")
                + expect(args, "hidden", lambda h: h is None or is_count(h), "a whole number >= 1 (null: 4 n_embd)")
                + expect(args, "dropout", is_probability, "a number in [0, 1)"))

    @classmethod
    def example(cls, generator):
        module = cls(6, 10, generator=generator).to(torch.float64)
        return module, (torch.randn(2, 3, 6, generator=generator, dtype=torch.float64),)

    def forward(self, x):
        return self.drop(self.proj(self.act(self.fc(x))))

    def backward(self, dy):
        dy = self.drop.backward(dy)
        dy = self.proj.backward(dy)
        dy = self.act.backward(dy, out=dy)      # dy is the projection's new gradient: GELU's dx can take its place
        return self.fc.backward(dy)

    def reference(self, x):
        return self.drop(self.proj.reference(self.act.reference(self.fc.reference(x))))


@register_layer("Block")
class Block(Module):
    """A pre-norm transformer layer, as in GPT-2:

        h = x + attn(ln1(x))
        y = h + mlp(ln2(h))

    Args: n_embd C, n_head H, dropout and generator as for CausalSelfAttention and MLP.
    Shape: x (B, T, C) -> y (B, T, C).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, generator=None):
        super().__init__()
        self.ln1 = LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias=bias, generator=generator)
        self.ln2 = LayerNorm(n_embd)
        self.mlp = MLP(n_embd, 4 * n_embd, dropout, bias=bias, generator=generator)

    @classmethod
    def problems(cls, args):
        return head_problems(args, "n_embd", "n_head")

    @classmethod
    def example(cls, generator):
        module = cls(8, 2, generator=generator).to(torch.float64)
        return module, (torch.randn(2, 5, 8, generator=generator, dtype=torch.float64),)

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.mlp(self.ln2(h))

    def backward(self, dy):
        dh = dy + self.ln2.backward(self.mlp.backward(dy))      # the skip path passes dy through unchanged
        return dh + self.ln1.backward(self.attn.backward(dh))

    def reference(self, x):
        h = x + self.attn.reference(self.ln1.reference(x))
        return h + self.mlp.reference(self.ln2.reference(h))
