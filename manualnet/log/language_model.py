"""What TensorBoard shows of a language model at each evaluation: each attention layer's entropy and a text
sample."""

import torch

from manualnet.nn.layers.attention import CausalSelfAttention
from manualnet.nn.models.generate import generate

SAMPLE_TOKENS = 200


def attention_entropy(model, idx):
    """{"attention_entropy/<path>": nats}: the mean entropy of the attention rows of each CausalSelfAttention
    in ``model`` on ``idx`` (B, T), averaged over batch, heads and positions. Low: each position attends to a
    few others; log(i + 1) at most, for a row spread evenly over positions 0..i."""
    inputs = {}
    attentions = [(path, m) for path, m in model.named_modules() if isinstance(m, CausalSelfAttention)]
    for path, module in attentions:
        object.__setattr__(module, "forward", _recording(module, path, inputs))
    try:
        with torch.inference_mode():
            model(idx)
            return {f"attention_entropy/{path}": _entropy(module, inputs[path]) for path, module in attentions}
    finally:
        for _, module in attentions:
            vars(module).pop("forward", None)


def _recording(module, path, inputs):
    forward = module.forward

    def recorded(x):
        inputs[path] = x
        return forward(x)

    return recorded


def _entropy(attention, x):
    q, k, _ = attention.split_heads(attention.qkv(x))     # q already divided by sqrt(d)
    p = attention.probabilities(q, k)
    return -torch.special.xlogy(p, p).sum(-1).mean().item()     # 0 log 0 = 0 where the mask left p = 0


def text_sample(model, vocab, block_size, seed, tokens=SAMPLE_TOKENS):
    """``tokens`` characters generated from a newline (or token 0), drawn with a generator seeded by ``seed``."""
    start = vocab.index("\n") if "\n" in vocab else 0
    device = next(model.parameters()).device
    idx = torch.full((1, 1), start, dtype=torch.long, device=device)
    out = generate(model, idx, tokens, block_size, generator=torch.Generator(device).manual_seed(seed))
    return "".join(vocab[i] for i in out[0, 1:].tolist())


def log_language_model(log, model, data, step, seed):
    """Attention entropies on a few val windows and a text sample, into TensorBoard at ``step``."""
    was_training = model.training
    model.eval()
    try:
        log.tensorboard_scalars(attention_entropy(model, data.x_val[:8]), step)
        log.text("sample", text_sample(model, data.classes, data.x_train.shape[1], seed + step), step)
    finally:
        model.train(was_training)
