"""The reference: the same GPT written with torch.nn and trained by autograd, as llm.c checks itself against
PyTorch. Its children carry manualnet's names, so one state dict loads into both; attention goes through
``F.scaled_dot_product_attention``, a path that shares no code with manualnet's explicit one."""

import torch
import torch.nn.functional as F
from torch import nn


class TorchAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(o.transpose(1, 2).reshape(B, T, C))


class TorchMLP(nn.Module):
    def __init__(self, n_embd, hidden=None):
        super().__init__()
        self.fc = nn.Linear(n_embd, hidden or 4 * n_embd)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(hidden or 4 * n_embd, n_embd)

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class TorchBlock(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(n_embd), TorchAttention(n_embd, n_head)
        self.ln2, self.mlp = nn.LayerNorm(n_embd), TorchMLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TorchGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, tie_weights=True):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(TorchBlock(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def torch_twin(module, torch_class, *args, **kwargs):
    """A torch.nn module built by ``torch_class(*args)`` holding ``module``'s weights, in its dtype."""
    twin = torch_class(*args, **kwargs).to(next(module.parameters()).dtype)
    twin.load_state_dict(module.state_dict())
    return twin
