"""Several processes (``torchrun``): who is who, each rank's share of an epoch, decisions
all ranks take together, and latents gathered back into particle order.

The process group is ``cpu:gloo,cuda:nccl`` on GPUs, so that small CPU tensors (flags,
latents on their way to disk) travel by gloo while gradients use NCCL; on CPU it is gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a stop signal that reached
        one process, an error found by rank 0): all ranks then act alike, none waits."""
        if self.world <= 1:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()


def backend_for(device_name: str) -> str:
    """The process group's backend: NCCL for CUDA tensors and gloo for CPU tensors on a
    GPU machine; gloo alone on CPU."""
    if device_name != "cpu" and torch.cuda.is_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_distributed(device_name: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device_name))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of epoch ``epoch``'s permutation (seeded by seed + epoch),
    starting after ``skip`` of its samples (for resuming inside an epoch)."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int):
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch, self.skip = 0, 0

    def order(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.n, generator=g).numpy()
        per = self.n // self.world                       # equal shares keep DDP in step
        return perm[self.rank * per:(self.rank + 1) * per]

    def steps_per_epoch(self) -> int:
        return int(np.ceil((self.n // self.world) / self.batch_size))

    def __iter__(self):
        return iter(self.order(self.epoch)[self.skip:].tolist())

    def __len__(self):
        return self.n // self.world - self.skip


def share(n: int, dd: Dist) -> np.ndarray:
    """This rank's contiguous share of ``n`` particles (for encoding them all once)."""
    per = int(np.ceil(n / dd.world))
    return np.arange(dd.rank * per, min(n, (dd.rank + 1) * per))


def gather_rows(z: torch.Tensor, idx: torch.Tensor, n: int, dd: Dist) -> np.ndarray:
    """Rows ``z`` (CPU, float32) of particles ``idx`` from every rank, as one (n, dim)
    array in particle order (on rank 0 and every other rank alike)."""
    if dd.world > 1:
        per = int(np.ceil(n / dd.world))
        zpad = torch.zeros(per, z.shape[1])
        ipad = torch.full((per,), -1, dtype=torch.long)
        zpad[:len(z)], ipad[:len(idx)] = z, idx
        zl = [torch.zeros_like(zpad) for _ in range(dd.world)]
        il = [torch.zeros_like(ipad) for _ in range(dd.world)]
        dist.all_gather(zl, zpad)                 # CPU tensors: gloo (see backend_for)
        dist.all_gather(il, ipad)
        z, idx = torch.cat(zl), torch.cat(il)
        keep = idx >= 0
        z, idx = z[keep], idx[keep]
    full = np.zeros((n, z.shape[1]), dtype=np.float32)
    full[idx.numpy()] = z.numpy()
    return full
