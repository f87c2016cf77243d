import math

import torch

from manualnet.nn.containers import ModuleList
from manualnet.nn.layers.attention import head_problems
from manualnet.nn.layers.dropout import Dropout
from manualnet.nn.layers.embedding import Embedding
from manualnet.nn.layers.layernorm import LayerNorm
from manualnet.nn.layers.linear import Linear
from manualnet.nn.models.block import Block
from manualnet.nn.module import Module, register_layer
from manualnet.registry import expect, is_count

INIT_STD = 0.02  # GPT-2's initial weight scale


@register_layer("GPT")
class GPT(Module):
    """A GPT-2 language model: token ids in, next-token logits out.

        x_0 = dropout(wte[idx] + wpe[0..T-1])
        x_l = block_l(x_{l-1})                   l = 1..n_layer, pre-norm (see Block)
        logits = ln_f(x_L) @ W_head^T            (W_head = wte with tie_weights)

    Args:
        vocab_size V, block_size (the longest context), n_layer, n_head, n_embd C, dropout.
        tie_weights: the head reads its weights from the token embedding (one tensor, whose gradient is the
            sum of its two uses), as GPT-2 does.
        generator: a seeded ``torch.Generator`` for the weights and the dropout masks.
    Shape: idx (B, T) integers, T <= block_size -> logits (B, T, V). Weights start as GPT-2's: N(0, 0.02),
    the projections into the residual stream N(0, 0.02 / sqrt(2 n_layer)), biases 0.
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float = 0.0, tie_weights: bool = True, bias: bool = True, generator=None):
        super().__init__()
        self.vocab_size, self.block_size, self.tie_weights = vocab_size, block_size, tie_weights
        self.wte = Embedding(vocab_size, n_embd, generator=generator)
        self.wpe = Embedding(block_size, n_embd, generator=generator)
        self.drop = Dropout(dropout, generator=generator)
        self.blocks = ModuleList(Block(n_embd, n_head, dropout, bias, generator) for _ in range(n_layer))
        self.ln_f = LayerNorm(n_embd)
        self.lm_head = Linear(n_embd, vocab_size, bias=False, generator=generator)
        if tie_weights:
            self.lm_head.weight = self.wte.weight
        self._init_weights(n_layer, generator)

    def _init_weights(self, n_layer, generator):
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif not name.startswith("ln") and ".ln" not in name:
                std = INIT_STD / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else INIT_STD
                p.normal_(0.0, std, generator=generator)

    @classmethod
    def problems(cls, args):
        found = [p for name in ("vocab_size", "block_size", "n_layer") for p in expect(args, name, is_count,
                                                                                       "a whole number >= 1")]
        return found + head_problems(args, "n_embd", "n_head")

    @classmethod
    def example(cls, generator):
        module = cls(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8, generator=generator)
        return module.to(torch.float64), (torch.randint(0, 11, (2, 6), generator=generator),)

    def check_inputs(self, idx):
        if not isinstance(idx, torch.Tensor) or idx.is_floating_point() or idx.dtype == torch.bool or idx.dim() != 2:
            got = f"{idx.dtype} {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise self.fail(f"expects token ids as a (B, T) integer tensor, got {got}")
        if idx.shape[1] > self.block_size:
            raise self.fail(f"a context of {idx.shape[1]} tokens is longer than block_size={self.block_size}")

    def forward(self, idx):
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))      # (B, T, C) + (T, C)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def backward(self, dlogits):
        dx = self.lm_head.backward(dlogits)
        dx = self.ln_f.backward(dx)
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        dx = self.drop.backward(dx)
        self.wpe.backward(dx.sum(0))            # each position's row is read by every sequence of the batch
        self.wte.backward(dx)                   # with tied weights, adds to the head's gradient in wte.weight
        return None                             # token ids have no gradient

    def reference(self, idx):
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte.reference(idx) + self.wpe.reference(positions))
        for block in self.blocks:
            x = block.reference(x)
        return self.lm_head.reference(self.ln_f.reference(x))

    def describe(self):
        return f"GPT({len(self.blocks)} layers, {self.num_parameters():,} parameters)"

    def extra_repr(self):
        return f"vocab_size={self.vocab_size}, block_size={self.block_size}, tie_weights={self.tie_weights}"
