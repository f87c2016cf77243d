"""TensorBoard histograms: weights, gradients, activations and update-to-data ratios, per layer; and the first
conv layer's filters as an image grid."""

import dataclasses
import math

import torch

from manualnet.nn import Conv2d

FILTER_SCALE = 8   # a 3x3 kernel drawn as 24x24 pixels: TensorBoard shows images at their own size
MAX_TILES = 256
HISTOGRAM_SAMPLE = 2**16  # a larger tensor's bucket counts come from a sample of this many of its values
RATIO_SAMPLE = 2**12  # and a larger parameter's update ratio from at most this many

def record_outputs(model, x, outputs):
    """``model(x)``, with a copy of each top-level child's output put in ``outputs`` (``"0.Linear"`` -> tensor):
    the activations this step's gradients come from."""
    children = list(model.named_children())
    for name, child in children:
        object.__setattr__(child, "forward", _recording(child, f"{name}.{type(child).__name__}", outputs))
    try:
        return model(x)
    finally:
        for _, child in children:
            vars(child).pop("forward", None)


def _recording(child, tag, outputs):
    forward = child.forward

    def recorded(*inputs, **kwargs):
        y = forward(*inputs, **kwargs)
        if isinstance(y, torch.Tensor):  # a copy: a later layer may change the output's memory in place
            outputs.setdefault(tag, y.clone())
        return y

    return recorded


def log_update_ratios(log, before, step):
    """Each parameter's update ratio as the scalar ``update_ratio/<name>``; ``before`` is
    ``parameters_before(model)``, taken before this step's update."""
    ratios = update_ratios(before)
    log.tensorboard_scalars({f"update_ratio/{name}": value for name, value in ratios.items() if math.isfinite(value)},
                            step)


def log_histograms(log, model, activations, step):
    """Histograms of every parameter, its gradient and each top-level layer's output (``activations``, from
    ``record_outputs``)."""
    tensors = {}
    for name, param in model.named_parameters():
        tensors[f"weights/{name}"] = param
        if param.grad is not None:
            tensors[f"grads/{name}"] = param.grad
    tensors.update({f"activations/{tag}": output for tag, output in activations.items()})
    log.histograms(tensors, step)
    first_conv = next(((path, m) for path, m in model.named_modules() if isinstance(m, Conv2d)), None)
    if first_conv:
        log.images({f"filters/{first_conv[0] or 'conv'}.weight": filter_grid(first_conv[1].weight)}, step)


def filter_grid(weight, scale=FILTER_SCALE, pad=1):
    """A conv weight (O, C, kh, kw) as one (H, W, 3) image in [0, 1]: a grid of tiles on grey, one per filter
    in colour when C is 3 (an RGB input's filters), else one grey tile per (filter, channel); each tile
    min-max scaled on its own (its pattern, not its size, is what it shows), enlarged ``scale`` times."""
    w = weight.detach().float().cpu()
    o, c, kh, kw = w.shape
    tiles = (w if c == 3 else w.reshape(o * c, 1, kh, kw))[:MAX_TILES]
    lo, hi = tiles.amin((1, 2, 3), keepdim=True), tiles.amax((1, 2, 3), keepdim=True)
    tiles = ((tiles - lo) / (hi - lo).clamp_min(1e-12)).expand(-1, 3, -1, -1)
    tiles = tiles.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    th, tw = kh * scale + pad, kw * scale + pad
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    grid = torch.full((3, rows * th + pad, cols * tw + pad), 0.5)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, cols)
        grid[:, pad + r * th:(r + 1) * th, pad + col * tw:(col + 1) * tw] = tile
    return grid.permute(1, 2, 0)


@dataclasses.dataclass
class Snapshot:
    """The model's parameters (``names``, ``params``) and ``copies`` of their values (of a large one, its
    ``sampled`` values) when the snapshot was taken."""

    names: list
    params: list
    copies: list


def parameters_before(model, into=None):
    """A Snapshot of every parameter as it is now, copied into ``into`` (an earlier call's snapshot) when it
    still matches: a fresh copy of a large model page-faults on every call."""
    named = list(model.named_parameters())
    names, params = [name for name, _ in named], [p for _, p in named]
    values = [sampled(p, size=RATIO_SAMPLE) for p in params]
    if into is None or [(c.shape, c.dtype, c.device) for c in into.copies] != [(v.shape, v.dtype, v.device)
                                                                              for v in values]:
        return Snapshot(names, params, [v.clone() for v in values])
    torch._foreach_copy_(into.copies, values)
    into.names, into.params = names, params
    return into


def update_ratios(before):
    """{name: log10(|update| / |param|)} per parameter, the size of the step relative to the weights' (-inf for a
    parameter that did not move), in one fused op and one host sync for the whole model; ``before`` is
    ``parameters_before(model)`` taken before the update (of the same parameters: the model is not walked
    again), used up: its copies become before - after, the update negated (no second copy of the model). A
    parameter of more than ``RATIO_SAMPLE`` values is measured on at most that many ``sampled`` ones: a few
    small ops whatever the model's size, for an estimate of the whole's ratio (docs/training.md says how
    close)."""
    if not before.params:
        return {}
    after = [sampled(p, size=RATIO_SAMPLE) for p in before.params]  # a non-contiguous one's sample is a copy
    torch._foreach_sub_(before.copies, after)
    norms = torch.stack(torch._foreach_norm([*before.copies, *after])).tolist()
    k = len(after)
    return {name: math.log10(update / param) if update > 0 and param > 0 else -math.inf
            for name, update, param in zip(before.names, norms[:k], norms[k:], strict=True)}


def histogram_data(tensors, bins):
    """``[(tag, numel, min, max, sum, sum of squares, bucket counts)]`` for each non-empty tensor of
    ``tensors`` (tag -> tensor) whose values are all finite, in order, with two host syncs in all. The
    ``bins`` buckets split [min, max] evenly, as ``torch.histc`` makes them (the last one includes max); a
    constant tensor's range is [v, v + 1e-12]. ``bucket_limits`` gives their right edges. The statistics are
    exact; a large tensor's counts are estimated from a sample (``bucket_counts``)."""
    flat = [(tag, t.detach().reshape(-1), t.numel() // t.shape[0] if t.dim() else 1)
            for tag, t in tensors.items() if t.numel()]
    if not flat:
        return []
    stats = torch.stack([s for _, v, _ in flat for s in (*torch.aminmax(v), v.sum(), v.dot(v))]).tolist()
    rows, counts = [], []
    for i, (tag, v, row) in enumerate(flat):
        lo, hi, total, squares = stats[4 * i:4 * i + 4]
        if math.isfinite(lo) and math.isfinite(hi):  # a tensor with a non-finite value has no histogram
            hi = hi if hi > lo else lo + 1e-12
            rows.append((tag, v.numel(), lo, hi, total, squares))
            counts.append(bucket_counts(v, bins, lo, hi, row))
    return [(*row, bucket) for row, bucket in zip(rows, torch.stack(counts).tolist(), strict=True)] if rows else []


def bucket_counts(v, bins, lo, hi, row=1):
    """``torch.histc``'s counts of the 1-d ``v``'s values over [lo, hi]; for more than ``HISTOGRAM_SAMPLE``
    values, the counts of its ``sampled`` values times n / (sample size): the histogram's shape, at a fraction
    of the cost of binning every value of a large layer's weights."""
    sample = sampled(v, row)
    counts = torch.histc(sample, bins=bins, min=lo, max=hi)
    return counts if sample.numel() == v.numel() else counts * (v.numel() / sample.numel())


def sampled(t, row=None, size=HISTOGRAM_SAMPLE):
    """``t`` itself (detached), or for more than ``size`` values every k-th of its values (at most ``size``;
    a view when ``t`` is contiguous). k shares no factor with ``row`` (default: the length of one of ``t``'s
    rows), so the sample spreads over the columns: a k dividing it would see a fixed subset of an MNIST net's
    first-layer columns, some of them the always-zero border pixels'."""
    n = t.numel()
    if n <= size:
        return t.detach()
    row = row if row is not None else n // t.shape[0]
    k = -(-n // size)
    while math.gcd(k, row) != 1:
        k += 1
    return t.detach().reshape(-1)[::k]


def bucket_limits(lo, hi, bins):
    """The right edges of ``histogram_data``'s buckets over [lo, hi]."""
    return [lo + (hi - lo) * (i + 1) / bins for i in range(bins)]
