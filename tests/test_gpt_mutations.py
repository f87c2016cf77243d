"""Mutation test for the GPT: attention and transformer bugs, planted in copies of the real modules, are each
caught by verify on a real model; the correct GPT passes."""

import pytest
import torch

import manualnet as mn
from manualnet.nn.layers.attention import _future
from manualnet.verify.command import verify_model


class MaskAfterSoftmax(mn.CausalSelfAttention):
    def probabilities(self, q, k):
        p = torch.softmax(q @ k.transpose(-2, -1), dim=-1)             # bug: the softmax sees the future...
        return p.masked_fill(_future(p.shape[-1], p.device), 0.0)     # ...zeroed afterwards: rows sum below 1

    def attend(self, q, k, v):
        o = self.probabilities(q, k) @ v
        return o.view(-1, self.num_heads, *o.shape[1:]), None


class NoScaleInBackward(mn.CausalSelfAttention):
    def heads_backward(self, q, k, v, do, rowdot, keep, dqkv):
        dq, dk, dv = dqkv
        p = self.probabilities(q, k)
        dp = self.dropped(do @ v.transpose(-2, -1), keep)
        torch.bmm(self.dropped(p, keep).transpose(-2, -1), do, out=dv)
        ds = dp.sub_(rowdot).mul_(p)
        torch.bmm(ds, k, out=dq)                        # bug: dq = ds @ k, the 1 / sqrt(d) forgotten
        torch.bmm(ds.transpose(-2, -1), q, out=dk)


class DroppedResidualGradient(mn.Block):
    def backward(self, dy):
        dh = self.ln2.backward(self.mlp.backward(dy))   # bug: the skip path's dy is lost
        return dh + self.ln1.backward(self.attn.backward(dh))


class OneUseEmbedding(mn.Embedding):
    def backward(self, dy):
        idx = self.take_cache()
        self.weight.grad.zero_()                        # bug: tied to the head, it throws the head's gradient away
        self.weight.grad.index_add_(0, idx.reshape(-1), dy.reshape(-1, self.embedding_dim))


def gpt_with(attention=mn.CausalSelfAttention, block=mn.Block, embedding=mn.Embedding):
    """The GPT example (2 layers, 8 wide, tied weights) in float64, with the mutant classes swapped in."""
    model, (idx,) = mn.GPT.example(torch.Generator().manual_seed(0))
    for i, original in enumerate(model.blocks):
        mutant = block.__new__(block)
        mutant.__dict__.update(original.__dict__)        # the same children and parameters, the mutant's methods
        mutant.attn.__class__ = attention
        model.blocks.add_module(str(i), mutant)
    model.wte.__class__ = embedding
    gen = torch.Generator().manual_seed(1)
    return mn.Sequential(model), idx, torch.randint(0, model.vocab_size, idx.shape, generator=gen)


MUTANTS = [
    ({"attention": MaskAfterSoftmax}, {("0.blocks.0.attn", "y"), ("0.blocks.1.attn", "y")}),
    ({"attention": NoScaleInBackward}, {("0.blocks.0.attn", "dx"), ("0.blocks.0.attn", "dqkv.weight")}),
    ({"block": DroppedResidualGradient}, {("0.blocks.0", "dx"), ("0.blocks.1", "dx")}),
    ({"embedding": OneUseEmbedding}, {(None, "d0.wte.weight")}),
]


@pytest.mark.parametrize("mutant, caught", MUTANTS, ids=lambda m: next(iter(m.values())).__name__
                         if isinstance(m, dict) else "")
def test_planted_gpt_bug_is_caught(mutant, caught):
    model, idx, targets = gpt_with(**mutant)
    rows = verify_model(model, mn.CrossEntropyLoss(), idx, targets)
    failed = {(r.index, r.tensor) for r in rows if not r.passed}
    assert caught <= failed, sorted(failed, key=str)


def test_correct_gpt_passes_every_row():
    model, idx, targets = gpt_with()
    rows = verify_model(model, mn.CrossEntropyLoss(), idx, targets)
    assert rows and all(r.passed for r in rows), [r for r in rows if not r.passed]
