import math

import torch
import torch.nn.functional as F

from manualnet.nn.layers.dropout import Dropout
from manualnet.nn.layers.linear import Linear
from manualnet.nn.module import Module, register_layer
from manualnet.nn.pieces import pieces_along
from manualnet.registry import expect, is_count, is_probability


@register_layer("CausalSelfAttention")
class CausalSelfAttention(Module):
    """Multi-head causal self-attention, as in GPT-2. Per head h, with d = embed_dim / num_heads:

        q, k, v = split(x @ W_qkv^T + b_qkv)                       each (B, H, T, d)
        s = q @ k^T / sqrt(d) + M          M[i, j] = -inf where j > i (a position sees only its past)
        p = softmax(s) along the last dim, then dropout
        o = p @ v                                                 (B, H, T, d)
        y = dropout(concat_heads(o) @ W_proj^T + b_proj)

    Args:
        embed_dim: the model width C; num_heads: H, which must divide C.
        dropout: the probability of dropping an attention weight and an output element in training.
        generator: a seeded ``torch.Generator`` for both dropout masks (the global RNG if None).
    Shape: x (B, T, C) -> y (B, T, C); qkv.weight (3C, C), proj.weight (C, C).

    Forward keeps q, k and v, not the probabilities p (B, H, T, T): backward recomputes p from them, for one
    more (B, H, T, T) product and softmax, so that no float (B, H, T, T) tensor outlives the forward (the
    memory autograd's fused attention saves too), and goes through a few heads at a time, so that its
    (heads, T, T) temporaries stay small; docs/gpt.md has the time and memory this trades. With dropout,
    backward reapplies the forward's mask to the recomputed p.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, generator=None):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = Linear(embed_dim, 3 * embed_dim, bias=bias, generator=generator)
        self.proj = Linear(embed_dim, embed_dim, bias=bias, generator=generator)
        self.resid_drop = Dropout(dropout, generator=generator)
        self.dropout, self.generator = float(dropout), generator   # on p: drawn here, so backward can reapply it

    @classmethod
    def problems(cls, args):
        return head_problems(args, "embed_dim", "num_heads")

    @classmethod
    def example(cls, generator):
        module = cls(8, 2, generator=generator).to(torch.float64)
        return module, (torch.randn(2, 5, 8, generator=generator, dtype=torch.float64),)

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise self.fail(f"expects x of shape (B, T, {self.embed_dim}), got {tuple(x.shape)}")

    def forward(self, x):
        q, k, v = self.split_heads(self.qkv(x))          # (B*H, T, d) each, q already divided by sqrt(d)
        o, keep = self.attend(q, k, v)                   # (B, H, T, d)
        heads = o.transpose(1, 2).reshape(x.shape)       # (B, T, C): the heads side by side at each position
        self.cache = (q, k, v, keep, heads)     # backward needs q, k, v, the dropout mask and the heads' output
        return self.resid_drop(self.proj(heads))

    def attend(self, q, k, v):
        """o = dropout(p) @ v with p = softmax(q @ k^T + M), as (B, H, T, d), and the dropout mask (None
        without dropout). Without dropout, torch's fused scaled_dot_product_attention (a forward op) computes
        o without forming p; with it, p is formed here and its mask drawn, so that backward can reapply it."""
        if not self.training or self.dropout == 0:
            q4, k4, v4 = (t.view(-1, self.num_heads, *t.shape[1:]) for t in (q, k, v))
            return F.scaled_dot_product_attention(q4, k4, v4, is_causal=True, scale=1.0), None
        p = self.probabilities(q, k)                     # (B*H, T, T)
        keep = torch.rand(p.shape, generator=self.generator, device=p.device, dtype=p.dtype) >= self.dropout
        o = self.dropped(p, keep) @ v                    # (B*H, T, T) @ (B*H, T, d)
        return o.view(-1, self.num_heads, *o.shape[1:]), keep

    def split_heads(self, qkv):
        """(B, T, 3C) -> q / sqrt(d), k, v, each (B*H, T, d): one copy into head-major order, so that no
        product below copies its operands; q is scaled there, as (B*H, T, d) is cheaper to scale than s."""
        B, T, _ = qkv.shape
        heads = qkv.view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).contiguous()
        heads[0].mul_(self.scale)
        return heads.view(3, B * self.num_heads, T, self.head_dim).unbind(0)

    def dropped(self, p, keep):
        """pd = p * keep / (1 - dropout): the weights the values are averaged with."""
        return p if keep is None else p * keep / (1 - self.dropout)

    def scores(self, q, k):
        """s = q @ k^T + M for q already divided by sqrt(d): (B*H, T, T), M = -inf above the diagonal,
        added by the product itself (baddbmm)."""
        T = q.shape[-2]
        mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        return torch.baddbmm(mask, q, k.transpose(-2, -1))                 # (B*H, T, d) @ (B*H, d, T)

    def probabilities(self, q, k):
        """p = softmax(q @ k^T + M) for q already divided by sqrt(d): row i spread over positions 0..i."""
        return torch.softmax(self.scores(q, k), dim=-1)

    def backward(self, dy):
        q, k, v, keep, heads = self.take_cache()        # q is q / sqrt(d)
        dheads = self.proj.backward(self.resid_drop.backward(dy))
        do = self.split_out(dheads)                      # (B*H, T, d)
        # the softmax's row term sum_k dp_ik p_ik = do_i . o_i (below), per head: (B, T, H) -> (B*H, T, 1)
        rowdot = (dheads * heads).view(*dheads.shape[:2], self.num_heads, -1).sum(-1)
        rowdot = rowdot.transpose(1, 2).reshape(-1, rowdot.shape[1], 1)
        dqkv = torch.empty((3, *q.shape), dtype=q.dtype, device=q.device)
        # a few heads at a time, as flash attention tiles: the (heads, T, T) temporaries stay cache-sized
        for h in pieces_along(q.shape[0], q.shape[1] * q.shape[1]):
            self.heads_backward(q[h], k[h], v[h], do[h], rowdot[h], None if keep is None else keep[h], dqkv[:, h])
        return self.qkv.backward(self.merge_qkv(dqkv, dy.shape))

    def heads_backward(self, q, k, v, do, rowdot, keep, dqkv):
        """dq, dk, dv (written into dqkv) of a group of heads, from their output's gradient do."""
        dq, dk, dv = dqkv
        p = self.probabilities(q, k)                     # the forward's probabilities again
        # o = pd @ v, pd = dropout(p):  dpd = do @ v^T, dv = pd^T @ do
        dp = self.dropped(do @ v.transpose(-2, -1), keep)                  # dp = dpd * keep / (1 - dropout)
        torch.bmm(self.dropped(p, keep).transpose(-2, -1), do, out=dv)
        # softmax: ds_ij = p_ij (dp_ij - sum_k dp_ik p_ik), and sum_k dp_ik p_ik = sum_k dpd_ik pd_ik = do_i . o_i
        # (flash attention's D, the rowdot); masked entries have p = 0, so get no gradient
        ds = dp.sub_(rowdot).mul_(p)
        # s = (q / sqrt(d)) @ k^T:  dq = ds @ k / sqrt(d), dk = ds^T @ (q / sqrt(d))
        torch.bmm(ds, k, out=dq).mul_(self.scale)
        torch.bmm(ds.transpose(-2, -1), q, out=dk)

    def split_out(self, t):
        """(B, T, C) -> (B*H, T, d): the heads' order of a tensor laid out as the heads' output."""
        B, T, _ = t.shape
        return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2).reshape(-1, T, self.head_dim)

    def merge_qkv(self, dqkv, shape):
        """(3, B*H, T, d) -> (B, T, 3C): the gradients back in the qkv projection's layout."""
        B, T, C = shape
        return dqkv.view(3, B, self.num_heads, T, self.head_dim).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * C)

    def reference(self, x):
        """The same function in torch ops on this module's parameters; verify rewinds the dropout generators
        so the masks are the forward's."""
        B, T, C = x.shape
        H, d = self.num_heads, self.head_dim
        q, k, v = self.qkv.reference(x).view(B, T, 3, H, d).permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-2, -1) * self.scale).masked_fill(_future(T, x.device), float("-inf"))
        p = torch.softmax(s, dim=-1)
        if self.training and self.dropout > 0:
            keep = torch.rand(p.shape, generator=self.generator, device=p.device, dtype=p.dtype) >= self.dropout
            p = self.dropped(p, keep)
        o = p @ v
        return self.resid_drop(self.proj.reference(o.transpose(1, 2).reshape(B, T, C)))

    def describe(self):
        return f"CausalSelfAttention({self.embed_dim}, heads={self.num_heads})"

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


def head_problems(args, width, heads):
    """The range problems of an attention's width, its number of heads (which must divide it) and dropout,
    as ``[(name, expected)]`` (see ``registry.refuse``)."""
    found = [p for name in (width, heads) for p in expect(args, name, is_count, "a whole number >= 1")]
    if not found and width in args and heads in args:
        found += expect(args, heads, lambda h: args[width] % h == 0, f"a divisor of {width}={args[width]}")
    return found + expect(args, "dropout", is_probability, "a number in [0, 1)")


def _future(T, device):
    """(T, T) bool, True above the diagonal: the positions j > i that position i must not attend to."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu_(1)
