"""Text from a language model, one token at a time, as nanoGPT's ``generate``."""

import torch


@torch.inference_mode()
def generate(model, idx, max_new_tokens, block_size, temperature=1.0, top_k=None, generator=None, on_token=None):
    """idx (B, T0) token ids -> (B, T0 + max_new_tokens): each new token drawn from
    softmax(logits[-1] / temperature), restricted to the ``top_k`` likeliest when given, the context cut to
    the last ``block_size`` tokens. ``generator``: a seeded torch.Generator for the draws; ``on_token``:
    called with each step's new ids (B, 1) as they are drawn (to show text as it comes)."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -block_size:])[:, -1, :] / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        next_id = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
        idx = torch.cat((idx, next_id), dim=1)
        if on_token is not None:
            on_token(next_id)
    return idx
