import math

import torch

from manualnet.nn.layers.dropout import Dropout
from manualnet.nn.layers.linear import Linear
from manualnet.nn.module import Module, register_layer


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

    Forward keeps q, k, v and the log-sum-exp of each row of s, not the probabilities p (B, H, T, T):
    backward recomputes p = exp(s - lse) from them, as flash attention does, for one more (B, H, T, T)
    product; docs/gpt.md has the time and memory this trades. With dropout, backward reapplies the
    forward's mask to the recomputed p.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, generator=None):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        if embed_dim % num_heads:
            raise self.fail(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = Linear(embed_dim, 3 * embed_dim, bias=bias, generator=generator)
        self.proj = Linear(embed_dim, embed_dim, bias=bias, generator=generator)
        self.resid_drop = Dropout(dropout, generator=generator)
        self.dropout, self.generator = float(dropout), generator   # on p: drawn here, so backward can reapply it

    @classmethod
    def example(cls, generator):
        module = cls(8, 2, generator=generator).to(torch.float64)
        return module, (torch.randn(2, 5, 8, generator=generator, dtype=torch.float64),)

    def check_inputs(self, x):
        super().check_inputs(x)
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise self.fail(f"expects x of shape (B, T, {self.embed_dim}), got {tuple(x.shape)}")

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.heads(self.qkv(x)).contiguous()   # one copy, so no product below copies its operands
        qkv[0].mul_(self.scale)                 # q / sqrt(d): scaling (B, H, T, d) is cheaper than s (B, H, T, T)
        q, k, v = qkv
        s = self.scores(q, k)
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        p = s.sub_(lse).exp_()                  # softmax(s) = exp(s - log sum_j exp(s_j)), in the scores' memory
        keep = self.keep_mask(p)
        o = self.dropped(p, keep) @ v                                       # (B, H, T, T) @ (B, H, T, d)
        heads = o.transpose(1, 2).reshape(B, T, C)
        # Backward needs q, k, v, p, the dropout mask and the heads' output. p is recomputed from the
        # log-sum-exp, as flash attention does, so no float (B, H, T, T) tensor is kept; heads is the tensor
        # proj keeps anyway.
        self.cache = (q, k, v, lse, keep, heads)
        return self.resid_drop(self.proj(heads))

    def heads(self, qkv):
        """q, k, v (B, H, T, d) each: views of the projection (B, T, 3C) split into 3 and into heads."""
        B, T, _ = qkv.shape
        return qkv.view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def keep_mask(self, p):
        """In training with dropout, which attention weights survive (bool, p's shape); else None."""
        if not self.training or self.dropout == 0:
            return None
        return torch.rand(p.shape, generator=self.generator, device=p.device, dtype=p.dtype) >= self.dropout

    def dropped(self, p, keep):
        """pd = p * keep / (1 - dropout): the weights the values are averaged with."""
        return p if keep is None else p * keep / (1 - self.dropout)

    def scores(self, q, k):
        """s = q @ k^T + M for q already divided by sqrt(d): (B, H, T, T), -inf above the diagonal."""
        s = torch.matmul(q, k.transpose(-2, -1))                           # (B, H, T, d) @ (B, H, d, T)
        return s.masked_fill_(_future(q.shape[-2], q.device), float("-inf"))   # before the softmax: p[i, j > i] = 0

    def probabilities(self, q, k):
        """p = softmax(q @ k^T / sqrt(d) + M): (B, H, T, T), row i spread over positions 0..i."""
        return torch.softmax(self.scores(q * self.scale, k), dim=-1)

    def backward(self, dy):
        q, k, v, lse, keep, heads = self.take_cache()    # q is q / sqrt(d)
        B, H, T, d = q.shape
        dheads = self.proj.backward(self.resid_drop.backward(dy))
        do = dheads.view(B, T, H, d).transpose(1, 2).contiguous()
        p = self.scores(q, k).sub_(lse).exp_()  # the forward's probabilities again, from its log-sum-exp
        dqkv = torch.empty(B, T, 3 * H * d, dtype=dy.dtype, device=dy.device)
        dheads_qkv = self.heads(dqkv)           # dq, dk, dv as views: each lands in the qkv projection's layout
        # o = pd @ v, pd = dropout(p):  dpd = do @ v^T, dv = pd^T @ do
        dp = self.dropped(do @ v.transpose(-2, -1), keep)                  # dp = dpd * keep / (1 - dropout)
        dheads_qkv[2].copy_(self.dropped(p, keep).transpose(-2, -1) @ do)
        # softmax: ds_ij = p_ij (dp_ij - sum_k dp_ik p_ik), and sum_k dp_ik p_ik = sum_k dpd_ik pd_ik = do_i . o_i,
        # a (B, H, T) product of the heads' output and its gradient (flash attention's D); masked entries have
        # p = 0, so get no gradient
        rowdot = (dheads * heads).view(B, T, H, d).sum(-1).transpose(1, 2).unsqueeze(-1)
        ds = dp.sub_(rowdot).mul_(p)
        # s = (q / sqrt(d)) @ k^T:  dq = ds @ k / sqrt(d), dk = ds^T @ (q / sqrt(d))
        dheads_qkv[0].copy_(torch.matmul(ds, k).mul_(self.scale))
        dheads_qkv[1].copy_(ds.transpose(-2, -1) @ q)
        return self.qkv.backward(dqkv)

    def reference(self, x):
        """The same function in torch ops on this module's parameters; verify rewinds the dropout generators
        so the masks are the forward's."""
        B, T, C = x.shape
        q, k, v = self.heads(self.qkv.reference(x))
        s = (q @ k.transpose(-2, -1) * self.scale).masked_fill(_future(T, x.device), float("-inf"))
        p = torch.softmax(s, dim=-1)
        o = self.dropped(p, self.keep_mask(p)) @ v
        return self.resid_drop(self.proj.reference(o.transpose(1, 2).reshape(B, T, C)))

    def describe(self):
        return f"CausalSelfAttention({self.embed_dim}, heads={self.num_heads})"

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


def _future(T, device):
    """(T, T) bool, True above the diagonal: the positions j > i that position i must not attend to."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu_(1)
