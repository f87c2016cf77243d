"""TensorBoard histograms: weights, gradients, activations and update-to-data ratios, per layer."""

import math

import torch


def log_histograms(log, model, xb, before, step):
    """``before`` holds each parameter as it was before this step's update."""
    for name, param, grad in model.named_parameters():
        log.histogram(f"weights/{name}", param, step)
        log.histogram(f"grads/{name}", grad, step)
        update = param - before[name]
        ratio = update.std() / param.std() if param.numel() > 1 else torch.tensor(0.0)
        value = math.log10(ratio.item()) if ratio.item() > 0 else -math.inf
        if math.isfinite(value) and log.writer:
            log.writer.add_scalar(f"update_ratio/{name}", value, step)
    model.eval()  # no dropout masks drawn: logging must not change the training's random stream
    with torch.inference_mode():
        x = xb
        for i, layer in enumerate(model.layers):
            x = layer.forward(x)
            log.histogram(f"activations/{i}.{type(layer).__name__}", x, step)
    model.train()
