from manualnet.nn.module import Module, register_layer


@register_layer("Flatten")
class Flatten(Module):
    """y = x reshaped so dims start_dim..end_dim become one. Shape: (N, d1, d2, ...) -> (N, d1*d2*...)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        self.cache = x.shape                    # backward needs only x's shape
        return x.flatten(self.start_dim, self.end_dim)

    def backward(self, dy):
        shape = self.take_cache()
        return dy.reshape(shape)                # dx = dy, reshaped back to x's shape

    def reference(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


@register_layer("Identity")
class Identity(Module):
    """y = x. Shape: any."""

    def forward(self, x):
        self.cache = True                       # nothing to remember but that forward ran
        return x

    def backward(self, dy):
        self.take_cache()
        return dy                               # dx = dy

    def reference(self, x):
        return x
