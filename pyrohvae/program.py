"""A model, its guide and every network they use, built from a run's config.

Besides `model(x, task)` and `guide(x, task)` for training (`objective()`: their negative ELBO as
a module, whose parameters go to a torch optimizer), each program says how to score data
under one fixed model of a task (`conditioned`), which the evaluation code uses for all of them:
`summary` is a set of items of the task, (tasks, m, 1, 28, 28), and `choice` picks among the
program's generative networks (`choices`; only MetaVAE has more than one).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.elbo import ELBOModule
from pyro.nn import PyroModule, pyro_method
from torch import nn

from . import guides
from .config import ConfigError, RunConfig
from .models import hypervae_model, metavae_model, vae_model, z_from_eps
from .nets import Decoder, ThetaGenerator, decode
from .priors import make_prior


@dataclass
class TaskModel:
    """The model and guide of one fixed model per task, and for HyperVAE the q(u | summary) it
    came from and KL(q(u | summary) || p(u)), each per task."""

    model: Callable
    guide: Callable
    q_u: dist.Distribution | None = None
    kl_u: torch.Tensor | None = None


class _Method(nn.Module):
    """One method of a program as a module of its own: `ELBOModule` takes the model and the guide as
    modules, and finds their parameters through them; ours are two methods of one module."""

    def __init__(self, program: nn.Module, name: str):
        super().__init__()
        self.program, self.name = program, name

    def forward(self, *args, **kwargs):
        return getattr(self.program, self.name)(*args, **kwargs)


class Program(PyroModule):
    """What every program shares: the training objective and the per-step settings of its loss."""

    def objective(self) -> ELBOModule:
        """−ELBO(model, guide) as a module (`Trace_ELBO()(model, guide)`): called on a batch it gives
        the differentiable loss, and its `parameters()` are this program's."""
        return Trace_ELBO(max_plate_nesting=2)(_Method(self, "model"), _Method(self, "guide"))

    def step_kwargs(self, step: int) -> dict:
        """The keyword arguments of model and guide at training step `step` (none: the ELBO as is)."""
        return {}


class VAEProgram(Program):
    """The plain VAE baseline: one encoder and one decoder for all tasks."""

    def __init__(self, config: RunConfig):
        super().__init__()
        self.config = config
        self.decoder = Decoder(config.z_dim, config.hidden)
        self.guide_nets = guides.get(config.guide, "vae")(config)

    @pyro_method
    def model(self, x, task=None, tasks=None, items=None):
        vae_model(self.decoder, self.config.z_dim, x, tasks=tasks, items=items)

    @pyro_method
    def guide(self, x, task=None):
        self.guide_nets(x)

    def parts(self) -> dict[str, nn.Module]:
        return {"inference network (encoder)": self.guide_nets, "generative network (decoder)": self.decoder}

    def choices(self, task_name: str | None) -> list:
        return [None]

    def conditioned(self, summary, choice=None) -> TaskModel:
        return TaskModel(self.model, self.guide)

    def sample_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class HyperVAEProgram(Program):
    """HyperVAE: the hyper-decoder θ(u), the prior on u and the guide's networks."""

    def __init__(self, config: RunConfig):
        super().__init__()
        self.config = config
        self.theta = ThetaGenerator(
            config.u_dim, config.z_dim, config.hidden, config.h_dim, config.theta_init_scale,
            z_prior=config.z_prior == "task",
        )
        self.prior = make_prior(config.prior, config.u_dim)
        self.guide_nets = guides.get(config.guide, "hypervae")(config)

    @pyro_method
    def model(self, x, task=None, kl_u_weight=1.0, kl_z_weight=1.0, record_theta=False, tasks=None, items=None):
        hypervae_model(self.theta, self.prior, self.config.z_dim, x, kl_u_weight=kl_u_weight,
                       kl_z_weight=kl_z_weight, record_theta=record_theta, tasks=tasks, items=items)

    @pyro_method
    def guide(self, x, task=None, kl_u_weight=1.0, kl_z_weight=1.0, record_theta=False):
        self.guide_nets(self.theta, x, kl_u_weight, kl_z_weight, record_theta)

    def step_kwargs(self, step: int) -> dict:
        """The weights of KL(u) and KL(z) at `step` (the config's warm-up and annealing)."""
        kl_u, kl_z = self.config.kl_weights(step)
        return {"kl_u_weight": kl_u, "kl_z_weight": kl_z}

    def parts(self) -> dict[str, nn.Module]:
        return {
            "hyper-encoder q(u|d)": self.guide_nets,
            "hyper-decoder trunk (u -> H)": self.theta.trunk,
            "matrix layers -> main encoder": self.theta.layers["encoder"],
            "matrix layers -> main decoder": self.theta.layers["decoder"],
            "prior p(u)": self.prior,
        }

    def choices(self, task_name: str | None) -> list:
        return [None]

    @torch.no_grad()
    def task_u(self, summary: torch.Tensor) -> torch.Tensor:
        """Mean of q(u | D_t) for a batch (tasks, items, 1, 28, 28): (tasks, u_dim)."""
        loc, _ = self.guide_nets.posterior(summary)
        return loc

    @torch.no_grad()
    def conditioned(self, summary, choice=None) -> TaskModel:
        """Model and guide with u fixed at the mean ū of q(u | summary) and hidden from traces (θ(ū)
        with it), so that only z is sampled and only z and x are scored: the main VAE θ(ū) of
        each task."""
        return self.conditioned_on(*self.guide_nets.posterior(summary))

    @torch.no_grad()
    def conditioned_on(self, loc: torch.Tensor, scale: torch.Tensor) -> TaskModel:
        """As `conditioned`, for a q(u) given by its location and scale, each (tasks, u_dim)."""
        u = loc.unsqueeze(-2)

        def fix(fn):
            # θ(ū) is fixed too, and hidden like u should a caller record it (record_theta=True):
            # else every importance trace would keep a copy of it
            hidden = poutine.block(hide_fn=lambda site: site["name"] == "u" or site["name"].startswith("theta."))
            return hidden(poutine.condition(fn, data={"u": u}))

        q = dist.Normal(loc, scale).to_event(1)
        return TaskModel(fix(self.model), fix(self.guide), q, self.kl_u(q))

    @torch.no_grad()
    def kl_u(self, q: dist.Distribution) -> torch.Tensor:
        """KL(q || p(u)) per task: analytic where torch has the pair, else by 4,096 draws."""
        p = self.prior()
        try:
            return torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            u = q.sample((4096,))
            return (q.log_prob(u) - p.log_prob(u)).mean(0)

    def sample_logits(self, eps: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Logits of p(x | z, θ(u)) for z = the standard normal draws `eps` put through p(z | u)
        (z = eps under the paper's N(0, I)); u (*batch, u_dim) broadcasts against eps
        (*batch, n, z_dim)."""
        params = self.theta.decoder(u.unsqueeze(-2))
        return decode(params, z_from_eps(params, eps))

    @torch.no_grad()
    def sample_task(self, summary, n: int, generator: torch.Generator, choice=None) -> torch.Tensor:
        """n Bernoulli means of the main VAE θ(ū) chosen from `summary` (1, m, 1, 28, 28), z ~ p(z | ū)."""
        eps = torch.randn(n, self.config.z_dim, generator=generator).to(summary.device)
        return torch.sigmoid(self.sample_logits(eps, self.task_u(summary)[0]))


class MetaVAEProgram(Program):
    """MetaVAE (Choi et al. 2019): one inference network q(z | x, D) shared by all tasks, and one
    generative network per training task."""

    def __init__(self, config: RunConfig):
        super().__init__()
        if not config.train_tasks:
            raise ConfigError("metavae needs config.train_tasks (set when training starts)")
        self.config = config
        self.decoders = PyroModule[nn.ModuleList](Decoder(config.z_dim, config.hidden) for _ in config.train_tasks)
        self.guide_nets = guides.get(config.guide, "metavae")(config)
        self.task_index = {name: i for i, name in enumerate(config.train_tasks)}

    @pyro_method
    def model(self, x, task, items=None):
        metavae_model(self.decoders, self.config.z_dim, x, task, items=items)

    @pyro_method
    def guide(self, x, task=None, context=None):
        self.guide_nets(x, context)

    def parts(self) -> dict[str, nn.Module]:
        return {
            "inference network q(z|x,D)": self.guide_nets,
            f"generative networks ({len(self.decoders)} tasks)": self.decoders,
        }

    def choices(self, task_name: str | None) -> list:
        """The decoder of a training task, or every decoder for data of a task not trained on
        (or of no known task: None)."""
        if task_name in self.task_index:
            return [self.task_index[task_name]]
        return list(range(len(self.decoders)))

    def conditioned(self, summary, choice) -> TaskModel:
        task = torch.full((summary.shape[0],), choice, dtype=torch.long, device=summary.device)
        return TaskModel(functools.partial(self.model, task=task), functools.partial(self.guide, context=summary))

    def sample_logits(self, z: torch.Tensor, task: int) -> torch.Tensor:
        return self.decoders[task](z)

    @torch.no_grad()
    def sample_task(self, summary, n: int, generator: torch.Generator, choice=None) -> torch.Tensor:
        """n Bernoulli means of the decoder `choice`, z ~ p(z); the summary plays no part."""
        z = torch.randn(n, self.config.z_dim, generator=generator).to(summary.device)
        return torch.sigmoid(self.sample_logits(z, choice))


PROGRAMS = {"vae": VAEProgram, "hypervae": HyperVAEProgram, "metavae": MetaVAEProgram}


def build(config: RunConfig) -> Program:
    return PROGRAMS[config.model](config)
