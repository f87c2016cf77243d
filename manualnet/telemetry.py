"""TensorBoard histograms: weights, gradients, activations and update-to-data ratios, per layer."""

import math

import torch


def log_histograms(log, model, xb, before, step):
    """``before`` holds each parameter as it was before this step's update."""
    tensors, names = {}, []
    for name, param, grad in model.named_parameters():
        tensors[f"weights/{name}"], tensors[f"grads/{name}"] = param, grad
        names.append(name)
    ratios = zip(names, update_ratios(model, before), strict=True)
    log.tensorboard_scalars({f"update_ratio/{name}": value for name, value in ratios if math.isfinite(value)}, step)
    model.eval()  # no dropout masks drawn: logging must not change the training's random stream
    with torch.inference_mode():
        x = xb
        for i, layer in enumerate(model.layers):
            x = layer.forward(x)
            tensors[f"activations/{i}.{type(layer).__name__}"] = x
        log.histograms(tensors, step)
    model.train()


def update_ratios(model, before):
    """log10(std(update) / std(param)) per parameter (-inf for a scalar or a parameter that did not move),
    with one host sync for the whole model."""
    stds = [torch.stack([(p - before[name]).std(), p.std()]) for name, p in model.params.items() if p.numel() > 1]
    pairs = iter(torch.stack(stds).tolist() if stds else [])
    ratios = []
    for p in model.params.values():
        update_std, param_std = next(pairs) if p.numel() > 1 else (0.0, 0.0)
        ratios.append(math.log10(update_std / param_std) if update_std > 0 and param_std > 0 else -math.inf)
    return ratios
