"""Cache-sized pieces: the one speed trick of the layers whose backward is a chain of elementwise ops (or of
ops independent across a leading dim, as attention's heads).

A chain of k elementwise ops over a tensor of several MB reads and writes it k times from memory; run on a
slice of about 1 MB at a time, each piece stays in the CPU's cache from the chain's first op to its last.
scripts/bench.py --gpt measures what it buys (docs/performance.md). On a GPU the whole tensor goes at once.
"""

import torch

PIECE_ELEMENTS = 2**18  # 1 MB of float32


def elementwise_in_pieces(fn, *tensors, out=None):
    """``fn(*tensors, out=out)`` for an ``fn`` made of elementwise ops on same-shaped tensors that writes its
    result into ``out`` (its last op's ``out=``; it may work in place on tensors it allocates, not on its
    arguments), computed a slice at a time into ``out``: a new tensor, or a given one (which may be one of
    ``tensors``, read by each piece before it is written; one that is not contiguous is written whole)."""
    first = tensors[0]
    if out is None:
        out = torch.empty_like(first, memory_format=torch.contiguous_format)
    if first.numel() <= 2 * PIECE_ELEMENTS or first.device.type != "cpu" or not out.is_contiguous():
        fn(*tensors, out=out)
        return out
    flat = [t.reshape(-1) for t in tensors]
    out_flat = out.view(-1)
    for start in range(0, out_flat.numel(), PIECE_ELEMENTS):
        piece = slice(start, start + PIECE_ELEMENTS)
        fn(*(t[piece] for t in flat), out=out_flat[piece])
    return out


def pieces_along(dim_size, elements_each):
    """Slices of a leading dim of ``dim_size`` whose pieces hold about PIECE_ELEMENTS elements, given
    ``elements_each`` per index of that dim."""
    step = max(1, PIECE_ELEMENTS // max(1, elements_each))
    return [slice(start, start + step) for start in range(0, dim_size, step)]
