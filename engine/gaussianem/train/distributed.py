"""Several processes (``torchrun``): who is who, each rank's share of an epoch, decisions
all ranks take together, the particle cache built once per file system, and latents
gathered back into particle order.

The process group is ``cpu:gloo,cuda:nccl`` on GPUs, so that small CPU tensors (flags,
latents on their way to disk) travel by gloo while gradients use NCCL; on CPU it is gloo.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import uuid
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from gaussianem.device import resolve_device
from gaussianem.errors import TrainingError
from gaussianem.io.cache import cache_dir_for, cached_images
from gaussianem.io.images import ParticleImages, loader_workers, make_loader
from gaussianem.model.encoding import encode_particles
from gaussianem.progress import Progress
from gaussianem.train import signals


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

    def maxima(self, *values: int) -> tuple[int, ...]:
        """Each value's maximum over the ranks, in one collective: before each step, the
        stop signal one of them received, a failed loader, a checkpoint due on rank 0."""
        if self.world <= 1:
            return tuple(int(v) for v in values)
        t = torch.tensor([int(v) for v in values], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(int(v) for v in t.tolist())

    def from_main(self, obj):
        """Rank 0's ``obj`` on every rank (a decision taken once, from files rank 0 read)."""
        if self.world <= 1:
            return obj
        # pickled into a CPU tensor: gloo carries it, also beside NCCL (broadcast_object_list
        # would use a GPU, before each process has chosen its own)
        data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8) if self.main else None
        size = torch.tensor([len(data) if self.main else 0], dtype=torch.int64)
        dist.broadcast(size, src=0)
        buf = data if self.main else torch.empty(int(size.item()), dtype=torch.uint8)
        dist.broadcast(buf, src=0)
        return obj if self.main else pickle.loads(buf.numpy().tobytes())

    def barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()


def backend_for(device_name: str) -> str:
    """The process group's backend: NCCL for CUDA tensors and gloo for CPU tensors on a
    GPU machine; gloo alone on CPU."""
    if device_name != "cpu" and torch.cuda.is_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def launched_world() -> int:
    """How many processes ``torchrun`` launched for this job (``WORLD_SIZE``; 1 outside it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_name: str) -> Dist:
    if launched_world() <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device_name))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def process_device(device_name: str, dd: Dist) -> torch.device:
    """This process's device: under torchrun on GPUs, the node's GPU ``LOCAL_RANK``."""
    device = resolve_device(device_name)
    if device.type == "cuda" and dd.world > 1:
        device = torch.device("cuda", dd.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cuda":             # TF32 matmuls: float32 at tensor-core speed
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def finish_distributed() -> None:
    """Destroy this process's process group (a ``torchrun`` process at its end), so that
    gloo's threads stop before the interpreter exits: left to the destructors, one rank of
    a finished run aborted at exit ("terminate called without an active exception", once
    in three CI runs on a loaded machine)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave_process(code: int) -> int:
    """``code`` for the caller to exit with; a ``torchrun`` process (``WORLD_SIZE`` > 1)
    leaves here instead, with ``os._exit`` once its output is flushed. Its work is written
    and its process group destroyed by then, but the destructors of gloo's and torch's
    threads at interpreter exit still aborted one rank of a finished run now and then
    ("terminate called without an active exception", exit code -6, in CI on a loaded
    machine after :func:`finish_distributed` was added), and torchrun then reports the
    whole job as failed."""
    if launched_world() <= 1:
        return code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class EpochBatches(torch.utils.data.Sampler):
    """The batches of this rank, step by step: step ``s`` of epoch ``e`` uses the global
    batch ``perm_e[s*B:(s+1)*B]`` (``perm_e`` seeded by seed + e, ``B`` the batch size in
    all processes together) and rank ``r`` of ``world`` takes its elements ``r::world``.
    The global batches do not depend on the number of processes, so a checkpoint resumes
    on another number of them (``skip`` steps of the epoch already done) and continues as
    the run would have; :meth:`loss_weight` makes the averaged gradient the global batch's."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int):
        if batch_size < world:
            raise TrainingError(f"--batch-size {batch_size} is smaller than the number of processes ({world}): "
                                "the batch size is the global batch, shared between the processes")
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch, self.skip = 0, 0
        self._perm = (None, None)

    def order(self, epoch: int) -> np.ndarray:
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g).numpy())
        return self._perm[1]

    def steps_per_epoch(self) -> int:
        """Global steps; a last batch with fewer particles than processes is left out."""
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.world else 0)

    def global_batch(self, epoch: int, step: int) -> np.ndarray:
        return self.order(epoch)[step * self.batch_size:(step + 1) * self.batch_size]

    def loss_weight(self, epoch: int, step: int) -> float:
        """This rank's share of the global batch times the world size: DDP averages the
        ranks' gradients, so weighting each rank's mean loss by it gives the global mean."""
        g = len(self.global_batch(epoch, step))
        return len(range(self.rank, g, self.world)) * self.world / g

    def noise(self, epoch: int, step: int, dim: int) -> torch.Tensor:
        """This rank's rows of the global batch's reparameterisation noise (seeded by seed,
        epoch and step), the same numbers whatever the number of processes."""
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + step) % 2 ** 63)
        return torch.randn(len(self.global_batch(epoch, step)), dim, generator=g)[self.rank::self.world]

    def __iter__(self):
        perm = self.order(self.epoch)
        for s in range(self.skip, self.steps_per_epoch()):
            yield perm[s * self.batch_size:(s + 1) * self.batch_size][self.rank::self.world].tolist()

    def __len__(self):
        return self.steps_per_epoch() - self.skip


def shared_folder(folder: str, dd: Dist) -> bool:
    """Whether every process's ``folder`` is rank 0's (one file system): rank 0 writes a
    file with a new name in its folder, every rank looks for that name in its own. A
    node-local folder (a scratch disk) answers False on the other nodes."""
    if dd.world <= 1:
        return True
    name = dd.from_main(f".gaussianem-probe-{socket.gethostname()}-{uuid.uuid4().hex[:12]}")
    if dd.main:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as f:
            f.write("a file to see whether all processes share this folder\n")
    dd.barrier()
    missing = dd.maxima(not os.path.exists(os.path.join(folder, name)))[0]
    if dd.main:
        os.remove(os.path.join(folder, name))
    return not missing


def training_images(cfg, data, box: int, dd: Dist, progress: Progress) -> ParticleImages:
    """The training's images at ``box``: through the particle cache (``cfg.cache``) when
    they are cropped. Rank 0 builds the cache and the others open it after a barrier; where
    the folder is not the same for all processes (a node's own disk, :func:`shared_folder`),
    the first process of each node builds that node's copy, all nodes at once."""
    folder = cache_dir_for(cfg.cache, cfg.particles)
    if not folder or box == data.box:
        return ParticleImages(data, box=box, invert=cfg.invert)
    shared = shared_folder(folder, dd)
    if not shared:
        progress.message(f"the cache folder {folder} is not shared by all nodes: each node builds its own copy "
                         "there (a folder on a file system all nodes share is built once)")
    if dd.main or (not shared and dd.local_rank == 0):
        cached_images(data, box, folder, cfg.particles, num_workers=loader_workers("cuda"), progress=progress)
    dd.barrier()
    return cached_images(data, box, folder, cfg.particles, invert=cfg.invert)


@torch.no_grad()
def encode_all(model, images: ParticleImages, batch_size: int, workers: int, phys, image_std, dd: Dist,
               device) -> np.ndarray:
    """Posterior means of all particles, in input order: each rank encodes its
    :func:`share`, gathered on every rank (:func:`gather_rows`)."""
    mine = share(len(images), dd)
    loader = make_loader(images, batch_size, shuffle=False, num_workers=workers, sampler=mine.tolist(), device=device)
    loader.worker_init_fn = signals.ignore_in_worker
    zs, ids = [], []
    for b in loader:
        mu = encode_particles(model, b["image"].to(device), b["index"].to(device), phys, image_std)
        zs.append(mu.float().cpu())
        ids.append(b["index"].cpu())
    z = torch.cat(zs) if zs else torch.zeros(0, model.cfg.zdim)
    idx = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
    return gather_rows(z, idx, len(images), dd)


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
