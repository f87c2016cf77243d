import torch
import torch.nn.functional as F

from manualnet.nn.module import Module, Parameter, register_layer
from manualnet.registry import expect, is_size


@register_layer("Embedding")
class Embedding(Module):
    """y[..., :] = W[idx[...], :]: a lookup table, one learned row per index.

    Args:
        num_embeddings: how many rows (the vocabulary's size); indices lie in [0, num_embeddings).
        embedding_dim: the width of each row.
        generator: a seeded ``torch.Generator`` to draw W ~ N(0, 1) from, PyTorch's default (the global RNG if None).
    Shape: idx (*) integers -> y (*, embedding_dim); weight (num_embeddings, embedding_dim).
    Backward returns None: the indices are integers and have no gradient.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, generator=None, device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.weight.normal_(0.0, 1.0, generator=generator)

    @classmethod
    def problems(cls, args):
        return [p for name in ("num_embeddings", "embedding_dim")
                for p in expect(args, name, is_size, "a whole number >= 0")]

    @classmethod
    def example(cls, generator):
        """A small instance and its input, indices repeated so the gradient's sums are exercised."""
        module = cls(7, 4, generator=generator).to(torch.float64)
        return module, (torch.tensor([[0, 3, 3, 6], [6, 1, 0, 3]]),)

    def check_inputs(self, idx):
        if not isinstance(idx, torch.Tensor) or idx.is_floating_point() or idx.dtype == torch.bool:
            got = idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise self.fail(f"expects integer indices (torch.long), got {got}")

    def forward(self, idx):
        self.cache = idx                                   # backward needs only which rows were read
        try:
            return F.embedding(idx, self.weight)           # y = W[idx]
        except IndexError:
            raise self.fail(f"index out of range: indices span {idx.min().item()}..{idx.max().item()}, "
                            f"the table has rows 0..{self.num_embeddings - 1}") from None

    def backward(self, dy):
        idx = self.take_cache()
        # dW[i] += sum of dy over the positions that read row i (a row read twice gets both gradients)
        self.weight.grad.index_add_(0, idx.reshape(-1), dy.reshape(-1, self.embedding_dim))
        return None

    def reference(self, idx):
        return F.embedding(idx, self.weight)

    def describe(self):
        return f"Embedding({self.num_embeddings}x{self.embedding_dim})"

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
