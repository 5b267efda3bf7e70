"""Priors on the task latent u, by name."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from .config import ConfigError


class StandardNormal(PyroModule):
    """p(u) = N(0, I), the paper's prior."""

    def __init__(self, u_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(u_dim))
        self.register_buffer("scale", torch.ones(u_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class Mixture(PyroModule):
    """p(u) = Σ_k π_k N(μ_k, diag σ_k²), a learnable mixture of `components` Gaussians.

    Starts as the standard normal (all components at 0 with unit scale, means spread a little so
    they can separate), so a run begins where the paper's does. Its parameters are attributes of a
    PyroModule: a variant can make them `PyroParam`s with constraints, or `PyroSample`s.
    """

    def __init__(self, u_dim: int, components: int = 10):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(0.1 * torch.randn(components, u_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, u_dim))

    def forward(self) -> dist.Distribution:
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.Normal(self.locs, self.log_scales.exp()).to_event(1),
        )


PRIORS = {"normal": StandardNormal, "mixture": Mixture}


def make_prior(name: str, u_dim: int) -> nn.Module:
    try:
        return PRIORS[name](u_dim)
    except KeyError:
        raise ConfigError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}") from None
