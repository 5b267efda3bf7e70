"""What every HyperVAE guide shares: how q(u | D) is read from a task (the guide itself,
q(u | D) q(z | x, θ(u)), is `models.hypervae_guide`)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ..config import ConfigError

COMBINES = ("product", "mean")  # how `shots_posterior` joins the posteriors of one-draw shots


class TaskGuide(PyroModule):
    """The reader of q(u | D_t) that `models.hypervae_guide` asks for every task.

    A subclass says how a task is read: `task_posterior(x)` maps a batch (tasks, items, 1, 28, 28)
    to the location and scale of q(u | D_t), each (tasks, u_dim).
    """

    model = "hypervae"
    # True for a guide that reads one draw of a task, however many it is given: a few-shot model
    # then combines the posteriors of the shots (`shots_posterior`); else the guide reads the shots
    # as a set.
    one_draw = False

    def __init__(self, config):
        super().__init__()
        self.u_dim = config.u_dim
        self.u_scale_init = config.u_scale_init
        self.random_context = config.random_context
        self.prior = config.prior
        if self.random_context and self.one_draw:
            raise ConfigError(f"--random-context: the {self.name} guide reads one draw, not a set")

    def task_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(u | D_t), each (tasks, u_dim): `task_posterior`'s, its scale
        times `u_scale_init`. The constant factor is a shift of the log-scale, i.e. where the
        scale starts: Adam's steps are the same whatever the shift."""
        loc, scale = self.task_posterior(x)
        return loc, scale * self.u_scale_init if self.u_scale_init != 1.0 else scale

    @torch.no_grad()
    def shots_posterior(
        self, shots: torch.Tensor, combine: str = "product"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(u | shots) for tasks of k shots each (tasks, k, 1, 28, 28), each
        (tasks, u_dim). A guide that reads a set reads each task's shots as one; one that reads one
        draw gives a posterior per shot, combined by their product with the prior divided out
        (`combine="product"`, for p(u) = N(0, I)) or by the mean of their locations and scales
        (`"mean"`)."""
        if not self.one_draw:
            return self.posterior(shots)
        tasks, k = shots.shape[:2]
        # every shot a task of one draw
        loc, scale = self.posterior(shots.reshape(tasks * k, 1, *shots.shape[2:]))
        loc, scale = loc.reshape(tasks, k, -1), scale.reshape(tasks, k, -1)
        if combine == "mean":
            return loc.mean(1), scale.mean(1)
        if combine != "product":
            raise ValueError(f"unknown --combine {combine!r}; choose one of {', '.join(COMBINES)}")
        if self.prior != "normal":
            raise ValueError(
                f"--combine product divides out a N(0, I) prior; this run's prior is "
                f"{self.prior!r}: use --combine mean"
            )
        precisions = scale.pow(-2)
        precision = torch.maximum(precisions.sum(1) - (k - 1), precisions.max(1).values)
        # the prior N(0, I) divided out contributes nothing to the precision-weighted location
        return (precisions * loc).sum(1) / precision, precision.rsqrt()

    @staticmethod
    def q_u(loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        """q(u | D) from `posterior`'s location and scale: a diagonal Normal, u's dims one event."""
        return dist.Normal(loc, scale).to_event(1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """What q(u) reads of the batch: all of it, or in training with `random_context` its first
        k items (a random subset: minibatches come shuffled), k log-uniform in 1..items, so that
        contexts of a few shots are as common in training as they are in few-shot use."""
        if not (self.training and self.random_context):
            return x
        items = x.shape[1]
        k = int(math.exp(float(torch.rand(())) * math.log(items + 1)))
        return x[:, : min(max(k, 1), items)]
