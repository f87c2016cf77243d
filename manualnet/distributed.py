"""Data-parallel training over torch.distributed: the same model on every rank, gradients averaged.

Started by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), manualnet joins the
process group with gloo on the CPU and NCCL on CUDA (one GPU per rank, from LOCAL_RANK). Each rank takes a
contiguous shard of every global batch, runs its own hand-written forward and backward, and the gradients
are summed over ranks in a few all-reduces over one flat buffer that every gradient tensor is a view of.

Exactness: with a mean-reduced loss, rank r's gradient is scaled by n_r / N (its shard's share of the global
batch) before the sum, so the result is the gradient of the mean over the whole global batch, whatever the
split, the same as one process computes (up to floating-point summation order).
"""

import datetime
import os

import torch

from manualnet.errors import ConfigError

BUCKET_ELEMENTS = 8 * 2**20  # elements per all-reduce: a few collectives per step, not one per tensor


class Single:
    """One process: every hook is a no-op."""

    rank, world_size, is_main = 0, 1, True

    def shard_weight(self, shard_size, batch_size):
        return 1.0

    def reduce_gradients(self, grads):
        pass

    def sum(self, values):
        return values

    def broadcast(self, obj):
        return obj

    def close(self):
        pass


class DataParallel:
    """Rank ``rank`` of ``world_size`` in a torch.distributed process group."""

    def __init__(self, device, timeout_s):
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        self.rank, self.world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.is_main = self.rank == 0
        self.device = device
        self._flat = None

    def shard_weight(self, shard_size, batch_size):
        """The factor on this rank's mean loss gradient: its share n_r / N of the global batch."""
        return shard_size / batch_size

    def reduce_gradients(self, grads):
        """Sum every rank's (already weighted) gradients in place, bucket by bucket."""
        if self._flat is None:
            self._flat = flatten(list(grads.values()))
        for start in range(0, self._flat.numel(), BUCKET_ELEMENTS):
            torch.distributed.all_reduce(self._flat[start:start + BUCKET_ELEMENTS])

    def sum(self, values):
        """Elementwise sum over ranks of a list of numbers (metrics: loss sums, counts)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (the run directory, say)."""
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def close(self):
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def flatten(tensors):
    """Move same-dtype tensors into one flat buffer, in place: each keeps its identity (the optimizer and
    the layers hold references) but becomes a view of the buffer, so one collective covers them all."""
    flat = torch.zeros(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=tensors[0].device)
    offset = 0
    for t in tensors:
        view = flat[offset:offset + t.numel()].view_as(t)
        view.copy_(t)
        t.data = view
        offset += t.numel()
    return flat


def launched_by_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def cluster_for(device, timeout_s=300):
    """``DataParallel`` under torchrun with WORLD_SIZE > 1, else ``Single``."""
    if not launched_by_torchrun():
        return Single()
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} has no GPU: this machine has {torch.cuda.device_count()}")
        torch.cuda.set_device(local)
    return DataParallel(device, timeout_s)


def local_device(device):
    """Under torchrun on CUDA, each rank uses the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device
