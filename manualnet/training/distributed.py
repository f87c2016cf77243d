"""Data-parallel training over torch.distributed: the same model on every rank, gradients averaged.

Started by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), manualnet joins the
process group with gloo on the CPU and NCCL on CUDA (one GPU per rank, from LOCAL_RANK). Each rank takes a
contiguous shard of every global batch, runs its own hand-written forward and backward, and the gradients
are summed over ranks in a few all-reduces over the model's flat gradient buffer (every gradient tensor is
a view of it: ``Optimizer.grad_buffers()``), in buckets of ``BUCKET_ELEMENTS``. One more small all-reduce
carries the step's numbers (the loss, the correct count, the stop flag), so the ranks agree on them.

Exactness: with a mean-reduced loss, rank r's gradient is scaled by n_r / N (its shard's share of the global
batch) before the sum, so the result is the gradient of the mean over the whole global batch, whatever the
split, the same as one process computes (up to floating-point summation order).
"""

import datetime
import os
import re

import torch

from manualnet.data.base import seeded_generator
from manualnet.errors import ConfigError, RankFailed
from manualnet.training import checkpoint

BUCKET_ELEMENTS = 8 * 2**20  # elements per all-reduce: a few collectives per step, not one per tensor


class Single:
    """One process: every hook is a no-op."""

    rank, world_size, is_main = 0, 1, True

    def shard_weight(self, shard_size, batch_size, reduction="mean"):
        return 1.0

    def reduce(self, buffers, values):
        return [float(v) for v in values]

    def sum(self, values, what=None):
        return values

    def gather(self, obj):
        return [obj]

    def broadcast(self, obj):
        return obj

    def broadcast_tensors(self, tensors):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class DataParallel:
    """Rank ``rank`` of ``world_size`` in a torch.distributed process group.

    Rank 0 keeps the random stream the model was built with; every other rank draws from its own, a function
    of (``seed``, rank), so Dropout masks differ between shards as they would between samples in one batch.
    """

    def __init__(self, device, timeout_s, seed):
        backend = "nccl" if device.type == "cuda" else "gloo"
        self.device, self.timeout_s = device, timeout_s
        self.rank = int(os.environ.get("RANK", "0"))
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        self._collective("joining the process group at " + where, torch.distributed.init_process_group, backend,
                         timeout=datetime.timedelta(seconds=timeout_s))
        self.rank, self.world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.is_main = self.rank == 0
        if self.rank:
            seed_rank(seed, self.rank)

    def shard_weight(self, shard_size, batch_size, reduction="mean"):
        return shard_weight(shard_size, batch_size, reduction)

    def reduce(self, buffers, values):
        """Sum every rank's (already weighted) gradients in place, bucket by bucket over ``buffers`` (the
        model's flat gradient buffer: ``Optimizer.grad_buffers()``), and ``values`` (numbers) in one more
        small collective; returns the summed values as floats."""
        for flat in buffers:
            flat = flat.view(-1)
            for start in range(0, flat.numel(), BUCKET_ELEMENTS):
                self._collective("the all_reduce of the gradients", torch.distributed.all_reduce,
                                 flat[start:start + BUCKET_ELEMENTS])
        return self.sum(values, "the all_reduce of the step's numbers")

    def sum(self, values, what="an all_reduce of numbers"):
        """Elementwise sum over ranks of a list of numbers."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        self._collective(what, torch.distributed.all_reduce, t)
        return t.tolist()

    def gather(self, obj):
        """Every rank's ``obj``, in rank order, on every rank (the RNG states a checkpoint keeps)."""
        box = [None] * self.world_size
        self._collective("an all_gather", torch.distributed.all_gather_object, box, obj)
        return box

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (the run directory, say)."""
        box = [obj]
        self._collective("a broadcast from rank 0", torch.distributed.broadcast_object_list, box, src=0)
        return box[0]

    def broadcast_tensors(self, tensors):
        """Rank 0's values of ``tensors`` on every rank, in place (the parameters, before the first step)."""
        for t in tensors:
            self._collective("the broadcast of the parameters", torch.distributed.broadcast, t, src=0)

    def _collective(self, what, op, *args, **kwargs):
        try:
            return op(*args, **kwargs)
        except RuntimeError as e:  # gloo raises RuntimeError; NCCL's DistBackendError is one too
            hint = (f"another rank died, or did not answer within train.dist_timeout_s = {self.timeout_s:g} s "
                    "(see its own log)")
            raise rank_failed(self.rank, what, e, hint) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        return False


def shard_weight(shard_size, batch_size, reduction="mean"):
    """The factor on a shard's loss gradient: its share n_r / N of a mean over the global batch of N rows
    (a sum over the batch is already the sum of the shards' sums)."""
    return shard_size / batch_size if reduction == "mean" else 1.0


def rank_failed(rank, what, error, hint):
    """The one-line RankFailed for collective ``what`` on ``rank`` that failed with ``error``."""
    return RankFailed(f"rank {rank}: {what} failed: {_reason(error)}; {hint}")


def _reason(error):
    """The first sentence of a collective's error, without gloo's source-file prefix."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]


def seed_rank(seed, rank, step=0):
    """Seed the global RNG (CPU and CUDA) with rank ``rank``'s own stream, a pure function of its arguments."""
    torch.manual_seed(seeded_generator(seed, f"rank {rank} from step {step}").initial_seed())


def restore_rng(state, rank, seed):
    """Set this rank's RNG from a checkpoint: the stream it saved (``rng`` is rank 0's, ``rng_ranks`` the
    others'), or, for a rank the saved run did not have (it ran on fewer processes), a new stream of its own."""
    saved = [state["rng"], *state.get("rng_ranks", [])]
    if rank < len(saved):
        checkpoint.set_rng_state(saved[rank])
    else:
        seed_rank(seed, rank, state["step"])


def launched_by_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def cluster_for(device, timeout_s=300, seed=0):
    """``DataParallel`` under torchrun with WORLD_SIZE > 1, else ``Single``. Use it as a context manager:
    leaving it leaves the process group."""
    if not launched_by_torchrun():
        return Single()
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} has no GPU: this machine has {torch.cuda.device_count()}")
        torch.cuda.set_device(local)
    return DataParallel(device, timeout_s, seed)

