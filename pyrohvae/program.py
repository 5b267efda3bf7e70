"""A model, its guide and every network they use, built from a run's config."""

from __future__ import annotations

import torch
from torch import nn

from . import guides
from .config import RunConfig
from .models import hypervae_model, vae_model
from .nets import Decoder, ThetaGenerator, decode
from .priors import make_prior


class VAEProgram(nn.Module):
    """The plain VAE baseline: one encoder and one decoder for all tasks."""

    def __init__(self, config: RunConfig):
        super().__init__()
        self.config = config
        self.decoder = Decoder(config.z_dim, config.hidden)
        self.guide_nets = guides.get(config.guide, "vae")(config)

    def model(self, x):
        vae_model(self.decoder, self.config.z_dim, x)

    def guide(self, x):
        self.guide_nets(x)

    def parts(self) -> dict[str, nn.Module]:
        return {"inference network (encoder)": self.guide_nets, "generative network (decoder)": self.decoder}

    def sample_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class HyperVAEProgram(nn.Module):
    """HyperVAE: the hyper-decoder θ(u), the prior on u and the guide's networks."""

    def __init__(self, config: RunConfig):
        super().__init__()
        self.config = config
        self.theta = ThetaGenerator(
            config.u_dim, config.z_dim, config.hidden, config.h_dim, config.theta_init_scale
        )
        self.prior = make_prior(config.prior, config.u_dim)
        self.guide_nets = guides.get(config.guide, "hypervae")(config)

    def model(self, x):
        hypervae_model(self.theta, self.prior, self.config.z_dim, x)

    def guide(self, x):
        self.guide_nets(self.theta, x)

    def parts(self) -> dict[str, nn.Module]:
        return {
            "hyper-encoder q(u|d)": self.guide_nets,
            "hyper-decoder trunk (u -> H)": self.theta.trunk,
            "matrix layers -> main encoder": self.theta.layers["encoder"],
            "matrix layers -> main decoder": self.theta.layers["decoder"],
            "prior p(u)": self.prior,
        }

    @torch.no_grad()
    def task_u(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of q(u | D_t) for a batch (tasks, items, 1, 28, 28)."""
        loc, _ = self.guide_nets.task_posterior(x)
        return loc

    def sample_logits(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Logits of p(x | z, θ(u)); u (*batch, u_dim) broadcasts against z (*batch, n, z_dim)."""
        return decode(self.theta.decoder(u.unsqueeze(-2)), z)


PROGRAMS = {"vae": VAEProgram, "hypervae": HyperVAEProgram}


def build(config: RunConfig) -> nn.Module:
    return PROGRAMS[config.model](config)
