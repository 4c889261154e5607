"""Multi-process runs under torchrun: process-group setup, data sharding, rank-0 helpers.

``torchrun --nproc_per_node=P -m maskzoo train ...`` (or ``--nnodes``/``--rdzv-endpoint`` for several
machines) sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR``/``MASTER_PORT``;
:func:`init_distributed` reads them and joins the group: NCCL when the process drives a GPU
(``cuda:LOCAL_RANK``), gloo on the CPU. Without those variables everything here degrades to the
single-process case, so the same code runs both ways.

Data sharding: :class:`IterationSampler` is the distributed sampler of the training loop. For
iteration ``t`` it takes the ``t``-th global batch of ``batch_size * world_size`` indices from a
seeded permutation of the data set (one new permutation per epoch) and gives rank ``r`` its
``r``-th slice. So P processes with batch B see exactly the images that one process with batch
``P * B`` sees, and a run can restart at any iteration without replaying the ones before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "gather_to_main",
    "IterationSampler",
    "shard_indices",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None  # None when not distributed


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; returns this process's place and device.

    ``device``: "cpu", "cuda" or None (a GPU when there is one). Under torchrun with CUDA, each
    process takes GPU ``LOCAL_RANK`` and the NCCL backend; on the CPU, gloo.
    """
    want_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if want_cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        dev = torch.device(device if device else ("cuda" if want_cuda else "cpu"))
        return DistInfo(0, 0, 1, dev, None)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank, local_rank, world_size, dev, backend)


def cleanup() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_available() and dist.is_initialized():
        # Every rank reaches this point before any tears its connections down: a rank that leaves
        # early (rank 0 still writing the last checkpoint) would otherwise break its peers' sockets.
        dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs): the one process that logs and writes files."""
    return get_rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_mean(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean of each scalar over all processes (a single reduction for all of them)."""
    names = sorted(values)
    if not names:
        return {}
    stacked = torch.stack([values[n].detach().float().reshape(()) for n in names])
    if _active():
        if dist.get_backend() == "nccl":
            stacked = stacked.cuda()
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return dict(zip(names, stacked.cpu().tolist()))


def gather_to_main(obj):
    """Collect one picklable object per process on rank 0: a list there (rank order), None elsewhere."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size() if is_main_process() else None
    dist.gather_object(obj, out, dst=0)
    return out


def shard_indices(length: int, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """Indices ``rank, rank + P, ...`` of ``range(length)``: this process's share of an evaluation."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    return list(range(rank, length, world_size))


class IterationSampler:
    """Per-iteration batches for one process of a (possibly) distributed run; see the module doc.

    ``batches(start)`` yields, for iterations ``start, start + 1, ...``, a list of
    ``(dataset index, augmentation seed)`` for this rank. Both depend only on (seed, iteration,
    position in the global batch), never on how the run got there.
    """

    def __init__(self, dataset_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if dataset_size <= 0:
            raise ValueError("the training set is empty (no image with a usable annotation)")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.dataset_size, self.batch_size, self.seed = dataset_size, batch_size, seed
        self.rank, self.world_size = rank, world_size

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_size, generator=g)

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        gb = self.global_batch_size
        first = iteration * gb + self.rank * self.batch_size
        out = []
        cached_epoch, perm = -1, None
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.dataset_size)
            if epoch != cached_epoch:
                cached_epoch, perm = epoch, self._permutation(epoch)
            aug_seed = (self.seed * 2_654_435_761 + position) % (2**63)
            out.append((int(perm[offset]), aug_seed))
        return out

    def batches(self, start: int = 0):
        iteration = start
        while True:
            yield self.batch(iteration)
            iteration += 1
