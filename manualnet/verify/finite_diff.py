"""Central finite differences: df/dt_i ~ (f(t + h e_i) - f(t - h e_i)) / 2h, in float64.

Independent of autograd: it needs only a way to evaluate f. Every coordinate is checked for tensors of up to
``FULL_LIMIT`` elements, a seeded sample of ``SAMPLE`` coordinates beyond that.
"""

import contextlib

import torch

from manualnet.verify.report import FINITE_DIFF, compare_tensors, failed_row, mismatch

H = 1e-6
FULL_LIMIT = 10_000
SAMPLE = 64
KINK_MARGIN = 10 * H   # inputs this close to a kink could straddle it within one stencil
KINK_OFFSET = 100 * H  # where such inputs are moved to, on their own side of the kink


def coordinates(numel, generator):
    """Flat indices to check: all of them, or a sorted seeded sample of SAMPLE for big tensors."""
    if numel <= FULL_LIMIT:
        return torch.arange(numel)
    return torch.randperm(numel, generator=generator)[:SAMPLE].sort().values


def numeric_gradient(objective, tensor, flat_indices, h=H):
    """d objective / d tensor at ``flat_indices`` (a float64 vector), perturbing ``tensor`` in place.

    ``objective()`` returns a Python float computed from ``tensor``'s current values; each entry is restored
    after its two evaluations. Dividing by the step actually taken (t+h) - (t-h) keeps rounding out.
    """
    numeric = torch.empty(len(flat_indices), dtype=torch.float64)
    with _one_thread():
        for k, flat in enumerate(flat_indices.tolist()):
            where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tensor.shape))
            old = tensor[where].item()
            up, down = old + h, old - h
            tensor[where] = up
            f_up = objective()
            tensor[where] = down
            f_down = objective()
            tensor[where] = old
            numeric[k] = (f_up - f_down) / (up - down)
    return numeric


def checked_row(objective, values, analytic, generator, h=H, **where):
    """The row of ``analytic`` (d objective / d values by hand) against central differences at
    ``coordinates``, and (flat indices, analytic, numeric values) there: None when they cannot be compared."""
    flat = coordinates(values.numel(), generator)
    numeric = numeric_gradient(objective, values, flat, h)
    problem = mismatch(analytic, values)
    if problem:
        return failed_row(problem, FINITE_DIFF, shape=tuple(values.shape), **where), None
    picked = analytic.detach().reshape(-1)[flat].cpu()
    row = compare_tensors(picked, numeric, FINITE_DIFF, **where)
    row.shape = tuple(values.shape)
    return row, (flat, picked, numeric)


@contextlib.contextmanager
def _one_thread():
    """Thousands of tiny evaluations: handing each to a thread pool costs more than its arithmetic, and on a
    busy machine every one waits for a free core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_sided_slopes(objective, tensor, flat, h=H):
    """(left, right): the slopes of ``objective`` at ``tensor``'s flat index ``flat``, from below and from
    above; they differ where the function has a kink (relu at 0), and a central difference averages them."""
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tensor.shape))
    old = tensor[where].item()
    with _one_thread():
        f_at = objective()
        tensor[where] = old + h
        f_up = objective()
        tensor[where] = old - h
        f_down = objective()
        tensor[where] = old
    return (f_at - f_down) / h, (f_up - f_at) / h


def move_off_kink(x, kink):
    """x with entries within KINK_MARGIN of ``kink`` moved to kink +- KINK_OFFSET (keeping their side), and
    how many were moved: a correct layer must not fail because a stencil straddles its kink."""
    near = (x - kink).abs() < KINK_MARGIN
    count = int(near.sum())
    if not count:
        return x, 0
    side = torch.where(x >= kink, 1.0, -1.0).to(x.dtype)
    return torch.where(near, kink + side * KINK_OFFSET, x), count


def spread_ties(x, tie_dims):
    """x with entries that nearly tie moved apart, and how many moved. Within each slice over x's last
    ``tie_dims`` dims (a max-pool's (H, W) plane), the sorted entries are pushed up until each is at least
    KINK_OFFSET above the one below it, keeping their order: a max whose runner-up lies within a stencil's
    reach has a derivative that jumps there, as ReLU's does at its kink."""
    flat = x.reshape(*x.shape[:x.dim() - tie_dims], -1)
    values, order = flat.sort(-1)
    steps = KINK_OFFSET * torch.arange(values.shape[-1], dtype=x.dtype, device=x.device)
    spread = torch.cummax(values - steps, -1).values + steps   # w_i = max_{j<=i} v_j + (i - j) * offset
    count = int((spread != values).sum())
    return torch.empty_like(flat).scatter_(-1, order, spread).reshape(x.shape), count


def keep_off_kinks(layer, x):
    """x moved where ``layer``'s derivative jumps no longer lies within a stencil of it, and a note saying
    what moved: a ``kink`` (a point, ReLU's 0) or ties within ``tie_dims`` trailing dims (MaxPool2d)."""
    kink, tie_dims = getattr(layer, "kink", None), getattr(layer, "tie_dims", None)
    if kink is not None:
        x, moved = move_off_kink(x, kink)
        return x, f"{moved} input(s) within {KINK_MARGIN:g} of the kink at {kink:g} moved away" if moved else ""
    if tie_dims:
        x, moved = spread_ties(x, tie_dims)
        return x, f"{moved} input(s) spread {KINK_OFFSET:g} apart from near-ties a max could flip on" if moved else ""
    return x, ""
