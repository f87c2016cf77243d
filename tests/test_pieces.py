"""Backward passes computed in cache-sized pieces (manualnet/nn/pieces.py) give what the whole tensor gives:
each piece path is run here with pieces a few elements small, so the uneven last piece is covered too."""

import pytest
import torch

import manualnet as mn
from manualnet.nn import pieces
from manualnet.verify import all_passed, check_module


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 7)


def test_elementwise_in_pieces_equals_the_whole(small_pieces):
    x, y = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 9, dtype=torch.float64)
    got = pieces.elementwise_in_pieces(lambda a, b, out: torch.add(a * b, a, out=out), x, y)
    assert torch.equal(got, x * y + x)
    assert got.shape == x.shape


def test_pieces_along_cover_the_dim_once():
    slices = pieces.pieces_along(10, pieces.PIECE_ELEMENTS // 3)
    covered = torch.cat([torch.arange(10)[s] for s in slices])
    assert torch.equal(covered, torch.arange(10)) and len(slices) == 4


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_in_pieces_matches_autograd(small_pieces, approximate):
    x = torch.randn(6, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    assert all_passed(check_module(mn.GELU(approximate), x, fd=True))


@pytest.mark.parametrize("piece", [7, 2**18])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_into_its_own_dy_gives_the_new_tensor_backward_gives(monkeypatch, piece, approximate):
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", piece)
    gen = torch.Generator().manual_seed(0)
    x, dy = (torch.randn(6, 11, generator=gen, dtype=torch.float64) for _ in range(2))
    gelu = mn.GELU(approximate)
    gelu(x)
    expected = gelu.backward(dy)
    gelu(x)
    into = dy.clone()
    assert gelu.backward(into, out=into) is into and torch.equal(into, expected)
    gelu(x.t().contiguous().t())  # a transposed dy to write into: not contiguous, so written whole
    into = dy.t().contiguous().t()
    assert gelu.backward(into, out=into) is into
    torch.testing.assert_close(into, expected, rtol=1e-14, atol=0)  # strided: torch's unvectorised loop, to rounding


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_attention_backward_head_by_head_matches_autograd(monkeypatch, dropout):
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 2 * 5 * 5)   # two of the six (batch, head) pairs at a time
    module = mn.CausalSelfAttention(8, 2, dropout=dropout, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert all_passed(check_module(module.to(torch.float64), x))
