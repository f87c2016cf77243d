"""A user layer whose forward crashes on every input: the self-test must fail it, not abort."""

import manualnet


@manualnet.register_layer("CrashingForward")
class CrashingForward(manualnet.Module):
    """y = x @ w with a w that was never given a shape (the bug)."""

    def __init__(self):
        super().__init__()
        self.w = None

    def forward(self, x):
        return x @ self.w

    def backward(self, dy):
        return dy @ self.w.t()
