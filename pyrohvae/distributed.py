"""Data-parallel training across processes started by `torchrun` (one per device).

Every rank builds the same model from the same seed, draws the same global minibatch of
`world × tasks_per_step` tasks from a sampler with a shared seed and keeps its own slice of it, so
the ranks see different tasks and together exactly those a single process with `world ×
tasks_per_step` tasks per step would see. The ELBO module is wrapped in torch's
`DistributedDataParallel` (`trainer.Trainer`): it starts every rank from rank 0's parameters and
averages the gradients across ranks during the backward pass, which keeps the parameters
identical on every rank; the loss (the mean over tasks) is averaged alike, for the log. Only rank
0 writes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from .files import UserError


class Ranks:
    """The processes of a run: one (rank 0 of 1) unless started by torchrun with --distributed."""

    def __init__(self, rank: int = 0, world: int = 1, collective_device: str = "cpu"):
        self.rank, self.world = rank, world
        self.collective_device = collective_device  # where NCCL wants its small tensors

    @classmethod
    def start(cls, device: str) -> Ranks:
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RuntimeError("--distributed runs under torchrun (RANK and WORLD_SIZE are not set)")
        backend = "nccl" if device == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(dist.get_rank(), dist.get_world_size(), "cuda" if backend == "nccl" else "cpu")

    @property
    def writer(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def device(self, device: str) -> str:
        """One GPU per rank: cuda:LOCAL_RANK."""
        if device == "cuda" and self.parallel:
            local = int(os.environ.get("LOCAL_RANK", self.rank))
            torch.cuda.set_device(local)
            return f"cuda:{local}"
        return device

    def shard(self, x: torch.Tensor, task):
        """This rank's slice of a global batch: tasks (dim 0) when there are several per rank's
        share, else items (dim 1)."""
        if not self.parallel:
            return x, task
        if x.shape[0] >= self.world:
            n = x.shape[0] // self.world
            part = slice(self.rank * n, (self.rank + 1) * n)
            return x[part], None if task is None else task[part]
        n = x.shape[1] // self.world
        return x[:, self.rank * n : (self.rank + 1) * n], task

    def mean(self, value: float) -> float:
        if not self.parallel:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.collective_device)
        dist.all_reduce(t)
        return float(t) / self.world

    def gather(self, obj) -> list:
        if not self.parallel:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def flag(self, value: bool) -> bool:
        """True on every rank if it is true on any."""
        if not self.parallel:
            return value
        t = torch.tensor([float(value)], device=self.collective_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t)

    def barrier(self) -> None:
        """Wait for every rank. Before a clean shutdown: a rank that tears its gloo group down while
        rank 0 is still writing the last checkpoint was seen to abort (SIGABRT) now and then."""
        if self.parallel:
            dist.barrier()

    def close(self) -> None:
        if self.parallel and dist.is_initialized():
            dist.destroy_process_group()


@contextmanager
def ranks_for(distributed: bool, device: str):
    """The ranks of a run: this process's of a torchrun launch where `distributed`, else one alone;
    the process group closed on the way out, however the run ended."""
    try:
        ranks = Ranks.start(device) if distributed else Ranks()
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--distributed: {e}") from None
    try:
        yield ranks
    finally:
        ranks.close()
