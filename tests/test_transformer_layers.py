"""The GPT's layers one by one against their torch.nn twins: forward, input gradient and every parameter
gradient (float64 to 1e-10 relative, float32 within torch.testing's defaults), and each layer's own promise
(causality, repeated indices, both GELU forms, the loss on (B, T, V) logits)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import manualnet as mn
from manualnet import LAYERS, LayerError
from tests.gpt_parity import assert_same, by_autograd, by_hand
from tests.torch_gpt import TorchAttention, TorchBlock, TorchGPT, TorchMLP

TWINS = {
    "Embedding": lambda m: nn.Embedding(m.num_embeddings, m.embedding_dim),
    "LayerNorm": lambda m: nn.LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine),
    "GELU": lambda m: nn.GELU(approximate=m.approximate),
    "CausalSelfAttention": lambda m: TorchAttention(m.embed_dim, m.num_heads),
    "MLP": lambda m: TorchMLP(m.fc.in_features, m.fc.out_features),
    "Block": lambda m: TorchBlock(m.ln1.normalized_shape[0], m.attn.num_heads),
    "GPT": lambda m: TorchGPT(m.vocab_size, m.block_size, len(m.blocks), m.blocks[0].attn.num_heads,
                              m.wte.embedding_dim, m.tie_weights),
}


def example_and_twin(name, dtype):
    module, inputs = LAYERS.get(name).example(torch.Generator().manual_seed(0))
    module.to(dtype)
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    twin = TWINS[name](module).to(dtype)
    twin.load_state_dict(module.state_dict())
    return module, twin, inputs


@pytest.mark.parametrize("name", list(TWINS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_matches_its_torch_nn_twin(name, dtype):
    module, twin, inputs = example_and_twin(name, dtype)
    dy = torch.randn(module(*inputs).shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    assert_same(by_hand(module, inputs, dy), by_autograd(twin, inputs, dy),
                tol=1e-10 if dtype == torch.float64 else None)


def test_every_example_is_registered_and_runs_in_float64():
    for name in TWINS:
        module, inputs = LAYERS.get(name).example(torch.Generator().manual_seed(0))
        assert all(p.dtype == torch.float64 for p in module.parameters()), name
        assert module(*inputs).dtype == torch.float64


def test_embedding_sums_the_gradients_of_a_repeated_index():
    emb = mn.Embedding(4, 2).to(torch.float64)
    emb(torch.tensor([[1, 1, 3]]))
    emb.backward(torch.tensor([[[1.0, 2.0], [10.0, 20.0], [5.0, 5.0]]], dtype=torch.float64))
    assert emb.weight.grad.tolist() == [[0, 0], [11, 22], [0, 0], [5, 5]]


def test_embedding_names_an_index_out_of_range():
    with pytest.raises(LayerError, match=r"Embedding\(4x2\): index out of range: indices span 0..9, .* rows 0..3"):
        mn.Embedding(4, 2)(torch.tensor([0, 9]))


def test_embedding_refuses_float_indices():
    with pytest.raises(LayerError, match="integer indices"):
        mn.Embedding(4, 2)(torch.zeros(3))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_matches_autograd_in_both_forms(approximate):
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    gelu = mn.GELU(approximate)
    dy = torch.cos(x)
    assert_same(by_hand(gelu, (x,), dy), by_autograd(nn.GELU(approximate), (x,), dy), tol=1e-12)


def test_layernorm_without_affine_over_two_dims_matches_torch():
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1
    ln = mn.LayerNorm((3, 5), elementwise_affine=False)
    assert list(ln.parameters()) == []
    dy = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    twin = nn.LayerNorm((3, 5), elementwise_affine=False, dtype=torch.float64)
    assert_same(by_hand(ln, (x,), dy), by_autograd(twin, (x,), dy), tol=1e-10)


def test_attention_never_sends_gradient_to_the_future():
    attn, (x,) = mn.CausalSelfAttention.example(torch.Generator().manual_seed(0))
    attn(x)
    dy = torch.zeros_like(x)
    dy[:, 2] = 1.0                          # only position 2's output matters
    dx = attn.backward(dy)
    assert dx[:, 3:].abs().max().item() == 0.0
    assert dx[:, :3].abs().min().item() > 0.0


def test_attention_equals_torch_multihead_attention_with_a_causal_mask():
    attn, (x,) = mn.CausalSelfAttention.example(torch.Generator().manual_seed(0))
    mha = nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)
    xr = x.clone().requires_grad_()
    y_ref = mha(xr, xr, xr, attn_mask=future, need_weights=False)[0]
    y_ref.sum().backward()
    y = attn(x)
    assert (y - y_ref).abs().max().item() <= 1e-12
    assert (attn.backward(torch.ones_like(y)) - xr.grad).abs().max().item() <= 1e-12


def test_attention_refuses_heads_that_do_not_divide_the_width():
    with pytest.raises(LayerError, match="^CausalSelfAttention argument num_heads=3: expected a divisor of embed_dim"):
        mn.CausalSelfAttention(8, 3)
    with pytest.raises(LayerError, match="num_heads=0: expected a whole number >= 1"):
        mn.CausalSelfAttention(8, 0)
    with pytest.raises(LayerError, match="embed_dim=0: expected a whole number >= 1"):  # not 1 / sqrt(0)
        mn.CausalSelfAttention(0, 1)


@pytest.mark.parametrize("make, message", [
    (lambda: mn.GPT(10, 8, 1, 3, 8), "GPT argument n_head=3: expected a divisor of n_embd=8"),
    (lambda: mn.GPT(10, 0, 0, 2, 8, dropout=1.0), "GPT argument block_size=0: expected a whole number >= 1\n"
                                                  "GPT argument n_layer=0: expected a whole number >= 1\n"
                                                  "GPT argument dropout=1.0: expected a number in [0, 1)"),
    (lambda: mn.Block(8, 2, dropout=-0.1), "Block argument dropout=-0.1: expected a number in [0, 1)"),
    (lambda: mn.MLP(0, hidden=0), "MLP argument n_embd=0: expected a whole number >= 1\n"
                                  "MLP argument hidden=0: expected a whole number >= 1 (null: 4 n_embd)"),
    (lambda: mn.LayerNorm(8, eps=-1e-5), "LayerNorm argument eps=-1e-05: expected a finite number >= 0"),
    (lambda: mn.LayerNorm([4, -2]), "LayerNorm argument normalized_shape=[4, -2]: expected a whole number >= 0"),
    (lambda: mn.Embedding(-1, 4), "Embedding argument num_embeddings=-1: expected a whole number >= 0"),
    (lambda: mn.Linear(4, -3), "Linear argument out_features=-3: expected a whole number >= 0"),
])
def test_layers_refuse_arguments_out_of_range_all_in_one_error(make, message):
    with pytest.raises(LayerError) as refused:
        make()
    assert str(refused.value).startswith(message)


def test_cross_entropy_on_sequence_logits_equals_torch_with_classes_in_dim_1():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 7, (3, 5), generator=gen)
    loss = mn.CrossEntropyLoss()
    value = loss(logits, targets)
    lr = logits.clone().requires_grad_()
    expected = F.cross_entropy(lr.transpose(1, 2), targets)    # torch's (B, C, T) convention
    expected.backward()
    assert abs(value.item() - expected.item()) <= 1e-14
    assert (loss.backward() - lr.grad).abs().max().item() <= 1e-16


def test_cross_entropy_names_the_target_shape_it_wants():
    with pytest.raises(LayerError, match=r"target must have shape \(3, 5\)"):
        mn.CrossEntropyLoss()(torch.zeros(3, 5, 7), torch.zeros(3, 7, dtype=torch.long))


def test_gelu_refuses_an_unknown_approximation():
    with pytest.raises(LayerError, match="^GELU argument approximate='erf': expected 'none' or 'tanh'$"):
        mn.GELU("erf")
