"""q(u | D_t) by a permutation-invariant encoder of the whole set: the conv trunk's features of
every item, mean-pooled, then a dense layer to the location and log-variance of u."""

from __future__ import annotations

import torch
from pyro.nn import PyroModule
from torch import nn

from ..models import TaskGuide
from ..nets import Encoder, Linear, features, weights
from . import register


@register("set-encoder")
class SetEncoderGuide(TaskGuide):
    def __init__(self, config):
        super().__init__(config)
        # The main encoder's trunk per item; its heads read the pooled features.
        self.items = Encoder(config.u_dim, config.hidden)
        self.pooled = PyroModule[nn.Sequential](Linear(config.hidden, config.hidden), nn.ReLU())

    def task_posterior(self, x):
        params = weights(self.items)
        h = self.pooled(features(params, x).mean(-2))
        return self.items.loc(h), torch.exp(0.5 * self.items.logvar(h))
