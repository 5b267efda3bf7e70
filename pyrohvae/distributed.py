"""Data-parallel training across processes started by `torchrun` (one per device).

Every rank builds the same model from the same seed, draws the same global minibatch of
`world × tasks_per_step` tasks from a sampler with a shared seed and keeps its own slice of it, so
the ranks see different tasks and together exactly those a single process with `world ×
tasks_per_step` tasks per step would see. After each backward pass the gradients are averaged
across ranks (one all-reduce of a flat buffer) before Adam steps, which keeps the parameters
identical on every rank; the loss (the mean over tasks) is averaged alike. Only rank 0 writes.

This is the all-reduce that `DistributedDataParallel` performs, done on the Pyro param store's
gradients because `SVI` owns the backward pass and the optimizer step.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


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

    def average_grads(self, params) -> None:
        """Average the gradients of `params` (the same list, in the same order, on every rank)."""
        if not self.parallel:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g)
            offset += g.numel()

    def mean(self, value: float) -> float:
        if not self.parallel:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.collective_device)
        dist.all_reduce(t)
        return float(t) / self.world

    def broadcast(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere (same seed makes them equal already; this
        makes sure)."""
        if self.parallel:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

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
