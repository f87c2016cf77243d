"""Models assembled from the layers; importing this package registers them."""

from manualnet.nn.models.block import MLP, Block
from manualnet.nn.models.gpt import GPT

__all__ = ["GPT", "MLP", "Block"]
