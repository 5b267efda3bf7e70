"""What every HyperVAE guide shares: q(u | D) q(z | x, θ(u))."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule

from ..config import ConfigError
from ..models import context_share, per_datum, record
from ..nets import encode


def _auxiliary(site) -> dict:
    # The encoder half of θ exists in the guide only; Pyro wants such sites marked.
    return {"is_auxiliary": True}


class TaskGuide(PyroModule):
    """q(u | D_t) per task, then the main VAE's encoder with weights θ(u) for every item.

    A subclass says how a task is read: `task_posterior(x)` maps a batch (tasks, items, 1, 28, 28)
    to the location and scale of q(u | D_t), each (tasks, u_dim). The encoder half of θ(u) is
    generated here, the decoder half in the model.
    """

    model = "hypervae"
    # True for a guide that reads one draw of a task, however many it is given: a few-shot model
    # then combines the posteriors of the shots (`HyperVAEProgram.task_posterior`); else the guide reads
    # the shots as a set.
    one_draw = False

    def __init__(self, config):
        super().__init__()
        self.u_dim = config.u_dim
        self.u_scale_init = config.u_scale_init
        self.random_context = config.random_context
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

    def forward(
        self,
        theta,
        x,
        kl_u_weight: float = 1.0,
        kl_z_weight: float = 1.0,
        record_theta: bool = False,
        context_size: int = 0,
        q_u: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """q(u | D_t) q(z | x, θ(u)); with `context_size` k > 0, q(u) reads the first k items of
        each task and q(z) the others, which alone the model scores (`split_context`); with `q_u`
        (location, scale, each (tasks, u_dim)), q(u) is that Gaussian, read from nothing (a
        posterior refined by gradient steps, `fewshot.refine`)."""
        if context_size:
            kl_u_weight = kl_u_weight * context_share(x.shape[1], context_size)  # as the model's
            shots, x = x[:, :context_size], x[:, context_size:]
        else:
            shots = self.context(x)
        tasks, items = x.shape[:2]
        with per_datum(tasks, items), pyro.plate("tasks", tasks, dim=-2):
            loc, scale = self.posterior(shots) if q_u is None else q_u
            with poutine.scale(scale=kl_u_weight):  # as in the model: the weight of KL(u)
                u = pyro.sample("u", self.q_u(loc.unsqueeze(-2), scale.unsqueeze(-2)))
            params = theta.encoder(u)
            if record_theta:  # as in the model
                with poutine.infer_config(config_fn=_auxiliary):
                    record("theta.encoder", params, theta.shapes["encoder"])
            with pyro.plate("data", items, dim=-1):
                z_loc, z_scale = encode(params, x)
                with poutine.scale(scale=kl_z_weight):  # as in the model: the weight of KL(z)
                    pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
