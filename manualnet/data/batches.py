"""Mini-batches cut from one seeded permutation per epoch: whole-tensor gathers, no per-sample loading.

Small batches are views of one shuffled copy of the data made per epoch (a gather per batch would cost more
in calls than in copying); batches of at least ``GATHER_PER_BATCH_BYTES`` are gathered one by one (the bytes
copied are the same, without an epoch-sized buffer whose first fill page-faults), for the trainer into two
buffers used in turn (memory that stays mapped and warm, not a fresh batch-sized tensor each step).

Epoch e's order is a pure function of (seed, e), so a run resumed at (epoch e, batch k) sees exactly the
batches it would have seen, and every data-parallel rank agrees on the global batches without talking.
"""

import torch

from manualnet.data.base import seeded_generator
from manualnet.errors import ConfigError, DataError

GATHER_PER_BATCH_BYTES = 64 * 1024  # an MNIST batch, 128 x 784 floats, is 400 kB; spirals' 64 x 2, 512 B


class Batches:
    """Batches of ``batch_size`` rows of x, y (and ``labels``), in a seeded random order each epoch.

    Iterating ``epoch(e)`` yields ``(xb, yb)`` (``(xb, yb, lb)`` when ``labels`` is given): the rows
    ``order(e)[lo:hi]`` of each tensor, gathered per batch (see ``epoch``'s ``reuse``) or as views of a
    per-epoch shuffled copy (see ``_shuffled``): a view is valid until the next epoch's batches start (two
    epochs' generators share the copy: walk them one after the other, not zipped), and without ``shuffle``
    batches are views of the data themselves (change one in place and the data changes). ``len()`` is the
    number of batches per epoch; the last one is smaller when ``batch_size`` does not divide N, unless
    ``drop_last``.

    Data parallel: with ``world_size`` W > 1, rank r yields only its contiguous shard of each global batch,
    split like ``torch.tensor_split(batch, W)[r]``: a batch of B rows gives the first B mod W ranks
    ceil(B / W) rows and the others floor(B / W). ``global_size(b)`` is B, to weight the shard's mean loss.
    Shapes: x (N, ...), y (N, ...), labels (N, ...); every yielded tensor keeps its trailing dimensions.
    """

    def __init__(self, x, y, batch_size, seed=0, shuffle=True, drop_last=False, labels=None, rank=0,
                 world_size=1):
        self.tensors = (x, y) if labels is None else (x, y, labels)
        self.n = len(x)
        lengths = [len(t) for t in self.tensors]
        if len(set(lengths)) != 1:
            raise DataError(f"Batches: x, y{', labels' if labels is not None else ''} must have one row per "
                            f"sample, got lengths {lengths}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not (world_size >= 1 and 0 <= rank < world_size):
            raise ConfigError(f"rank {rank} is outside 0..{world_size - 1} (world_size {world_size})")
        self.batch_size, self.seed, self.shuffle, self.drop_last = batch_size, seed, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self._next_epoch = 0
        if self.n == 0 or len(self) == 0:
            raise DataError(f"Batches: {self.n} samples make no batch of {batch_size}"
                            f"{' (drop_last)' if drop_last else ''}")
        smallest = self.global_size(len(self) - 1)
        if smallest < world_size:
            raise ConfigError(f"batch_size {batch_size} on {self.n} samples leaves a last batch of {smallest}, "
                              f"fewer than the {world_size} ranks, so a rank would get no samples; choose a "
                              f"batch_size that divides {self.n} or leaves at least {world_size}")

    def __len__(self):
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def global_size(self, batch):
        """B: the number of rows in global batch ``batch`` (over all ranks)."""
        return min(self.batch_size, self.n - batch * self.batch_size)

    def shard_bounds(self, batch):
        """[lo, hi): the rows of global batch ``batch`` that rank ``rank`` takes, as offsets into the epoch."""
        start, size = batch * self.batch_size, self.global_size(batch)
        share, extra = divmod(size, self.world_size)
        lo = start + self.rank * share + min(self.rank, extra)
        return lo, lo + share + (1 if self.rank < extra else 0)

    def order(self, epoch):
        """The permutation of range(N) that epoch ``epoch`` visits (the identity without ``shuffle``)."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=seeded_generator(self.seed, f"epoch {epoch}"))

    def epoch(self, epoch, start_batch=0, reuse=False):
        """This rank's batches of epoch ``epoch``, from batch ``start_batch`` on (for an exact resume). With
        ``reuse``, batches gathered one by one go into two buffers in turn, so each is valid only until the
        batch after next is made (the trainer's way: a batch serves its one step); without, each is new."""
        if not 0 <= start_batch <= len(self):
            raise DataError(f"Batches: cannot start epoch {epoch} at batch {start_batch}: an epoch has "
                            f"{len(self)} batches of {self.batch_size} (did batch_size change since the checkpoint?)")
        return self._batches(epoch, start_batch, reuse)

    def _batches(self, epoch, start_batch, reuse):
        if not self.shuffle:  # batches are views: no copy at all
            for batch in range(start_batch, len(self)):
                lo, hi = self.shard_bounds(batch)
                yield tuple(t[lo:hi] for t in self.tensors)
            return
        order = self.order(epoch).to(self.tensors[0].device)
        if self.batch_size * sum(t[0].numel() * t.element_size() for t in self.tensors) >= GATHER_PER_BATCH_BYTES:
            pair = [self._batch_buffers(), self._batch_buffers()] if reuse else None
            for batch in range(start_batch, len(self)):
                lo, hi = self.shard_bounds(batch)
                yield self._gathered(order[lo:hi], pair[batch % 2] if reuse else None)
            return
        shuffled = self._shuffled(order)
        if getattr(self, "_views", None) is None:  # the buffers never move: their batch views are made once
            self._views = [tuple(t[lo:hi] for t in shuffled) for lo, hi in map(self.shard_bounds, range(len(self)))]
        yield from self._views[start_batch:]

    def _shuffled(self, order):
        """Each tensor gathered in ``order`` into a buffer allocated once (so its pages stay mapped and warm
        from epoch to epoch); the batches are then views, one copy per epoch instead of one per batch."""
        if getattr(self, "_buffers", None) is None:
            self._buffers = {id(t): torch.empty_like(t) for t in self.tensors}
        return self._gathered(order, self._buffers)

    def _batch_buffers(self):
        """{id(tensor): a buffer of a batch's rows of it}, allocated once per epoch: its pages stay mapped."""
        rows = max(hi - lo for lo, hi in (self.shard_bounds(0), self.shard_bounds(len(self) - 1)))
        return {id(t): t.new_empty((rows, *t.shape[1:])) for t in self.tensors}

    def _gathered(self, rows, buffers=None):
        """The ``rows`` of each tensor (into the first rows of ``buffers[id(tensor)]`` when given); targets
        that are the labels are gathered once."""
        done = {}
        for t in self.tensors:
            if id(t) not in done:
                done[id(t)] = torch.index_select(t, 0, rows, out=buffers[id(t)][:len(rows)]) if buffers else \
                    torch.index_select(t, 0, rows)
        return tuple(done[id(t)] for t in self.tensors)

    def __iter__(self):
        """The next epoch: 0 on the first ``for``, then 1, 2, ... (``epoch(e)`` picks one directly)."""
        self._next_epoch += 1
        return self.epoch(self._next_epoch - 1)
