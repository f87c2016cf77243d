"""A user layer whose backward misuses an inner layer (a dy of the wrong shape): its LayerError is the
layer's bug, so the self-test must fail it, not skip it as uncheckable."""

import torch

import manualnet


@manualnet.register_layer("MisshapedBackward")
class MisshapedBackward(manualnet.Module):
    """y = 2 relu(x); backward hands the inner ReLU one column of dy (the bug)."""

    def __init__(self):
        super().__init__()
        self.inner = manualnet.ReLU()

    def forward(self, x):
        return 2 * self.inner.forward(x)

    def backward(self, dy):
        return 2 * self.inner.backward(dy[:, :1])

    def reference(self, x):
        return 2 * torch.relu(x)
