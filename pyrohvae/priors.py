"""Priors on the task latent u, by name."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from .config import ConfigError


class StandardNormal(nn.Module):
    """p(u) = N(0, I), the paper's prior."""

    def __init__(self, u_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(u_dim))
        self.register_buffer("scale", torch.ones(u_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


PRIORS = {"normal": StandardNormal}


def make_prior(name: str, u_dim: int) -> nn.Module:
    try:
        return PRIORS[name](u_dim)
    except KeyError:
        raise ConfigError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}") from None
