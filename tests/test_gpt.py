"""The whole GPT against a torch.nn GPT loaded with the same state dict, as llm.c checks itself: the same
logits, loss and every parameter's gradient, and the same 50-step AdamW training trajectory."""

import pytest
import torch

import manualnet as mn
from manualnet import LayerError
from tests.gpt_parity import assert_same, by_autograd, by_hand, rel_err
from tests.torch_gpt import TorchGPT, torch_twin

SIZES = dict(vocab_size=23, block_size=16, n_layer=2, n_head=4, n_embd=32)


def gpt_pair(dtype=torch.float64, tie_weights=True, seed=0):
    model = mn.GPT(**SIZES, tie_weights=tie_weights, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return model, torch_twin(model, TorchGPT, **SIZES, tie_weights=tie_weights)


def batch(seed, B=4, T=16):
    """Sequences that count up mod V from a random start, by a random stride of 1 to 3: learnable in context."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, SIZES["vocab_size"], (B, 1), generator=gen)
    stride = torch.randint(1, 4, (B, 1), generator=gen)
    tokens = (start + stride * torch.arange(T + 1)) % SIZES["vocab_size"]
    return tokens[:, :-1], tokens[:, 1:]


def loss_by_hand(model, idx, targets):
    """Cross-entropy of the next token: forward, loss, backward; returns the logits and the loss."""
    loss_fn = mn.CrossEntropyLoss()
    logits = model(idx)
    loss = loss_fn(logits, targets)
    model.backward(loss_fn.backward())
    return logits, loss


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gpt_logits_loss_and_every_gradient_equal_torch(tie_weights, dtype):
    model, twin = gpt_pair(dtype, tie_weights)
    idx, targets = batch(1)
    logits, loss = loss_by_hand(model, idx, targets)
    logits_ref = twin(idx)
    loss_ref = torch.nn.functional.cross_entropy(logits_ref.flatten(0, 1), targets.flatten())
    loss_ref.backward()
    grads, grads_ref = dict(model.named_parameters()), dict(twin.named_parameters())
    assert grads.keys() == grads_ref.keys() and len(grads) == 4 + 12 * SIZES["n_layer"] + (not tie_weights)
    tol = 1e-10 if dtype == torch.float64 else None
    assert_same((logits, (), {n: p.grad for n, p in grads.items()}),
                (logits_ref.detach(), (), {n: p.grad for n, p in grads_ref.items()}), tol=tol)
    assert rel_err(loss, loss_ref.detach()) <= (1e-12 if dtype == torch.float64 else 1e-6)


def test_gpt_gradient_for_any_upstream_gradient_and_a_shorter_context():
    model, twin = gpt_pair()
    idx, _ = batch(2, B=3, T=9)
    dy = torch.randn(3, 9, SIZES["vocab_size"], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert_same(by_hand(model, (idx,), dy), by_autograd(twin, (idx,), dy), tol=1e-10)


def test_fifty_adamw_steps_follow_torchs_trajectory_in_float64():
    model, twin = gpt_pair()
    ours = mn.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    theirs = torch.optim.AdamW(twin.parameters(), lr=3e-3, weight_decay=0.1)
    losses, losses_ref = [], []
    for step in range(50):
        idx, targets = batch(100 + step)
        ours.zero_grad()
        losses.append(loss_by_hand(model, idx, targets)[1].item())
        ours.step()
        theirs.zero_grad()
        loss_ref = torch.nn.functional.cross_entropy(twin(idx).flatten(0, 1), targets.flatten())
        loss_ref.backward()
        theirs.step()
        losses_ref.append(loss_ref.item())
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses, losses_ref, strict=True))
    assert worst <= 1e-8, f"worst relative difference {worst:.2e}"
    assert losses[-1] < losses[0] - 1.0   # it learned, so the two trajectories are not trivially flat


def test_tied_weights_are_one_tensor_whose_gradient_sums_both_uses():
    tied, _ = gpt_pair(tie_weights=True)
    untied, _ = gpt_pair(tie_weights=False)
    untied.load_state_dict({**tied.state_dict()})      # lm_head.weight is in the tied state dict, = wte.weight
    assert tied.lm_head.weight is tied.wte.weight
    assert "lm_head.weight" in tied.state_dict() and "lm_head.weight" not in dict(tied.named_parameters())
    idx, targets = batch(4)
    loss_by_hand(tied, idx, targets)
    loss_by_hand(untied, idx, targets)
    both_uses = untied.wte.weight.grad + untied.lm_head.weight.grad
    assert rel_err(tied.wte.weight.grad, both_uses) <= 1e-12
    assert rel_err(both_uses, untied.lm_head.weight.grad) > 1e-3     # the embedding's share is not negligible


def test_gpt_with_dropout_matches_finite_differences_under_the_same_masks():
    gen = torch.Generator()
    model = mn.GPT(**SIZES, dropout=0.2, generator=gen).to(torch.float64)
    idx, targets = batch(5, B=2, T=8)

    def loss_at_fixed_masks():
        gen.manual_seed(42)                            # every dropout draws the same masks each time
        return mn.CrossEntropyLoss()(model(idx), targets).item()

    gen.manual_seed(42)
    model.zero_grad(set_to_none=True)
    loss_by_hand(model, idx, targets)
    probes = [("wte.weight", (3, 5)), ("blocks.0.attn.qkv.weight", (7, 2)), ("blocks.1.mlp.fc.bias", (11,)),
              ("blocks.0.ln1.weight", (4,)), ("wpe.weight", (1, 0))]
    params, h = dict(model.named_parameters()), 1e-6
    for name, at in probes:
        p, saved = params[name], params[name][at].item()
        p[at] = saved + h
        up = loss_at_fixed_masks()
        p[at] = saved - h
        down = loss_at_fixed_masks()
        p[at] = saved
        assert abs(p.grad[at].item() - (up - down) / (2 * h)) <= 1e-7 + 1e-5 * abs(p.grad[at].item()), name


def test_gpt_refuses_a_context_longer_than_its_block_size():
    model, _ = gpt_pair()
    with pytest.raises(LayerError, match="a context of 17 tokens is longer than block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_gpt_refuses_float_token_ids():
    model, _ = gpt_pair()
    with pytest.raises(LayerError, match=r"token ids as a \(B, T\) integer tensor, got torch.float32"):
        model(torch.zeros(1, 4))
