"""The plain VAE's guide: q(z | x) by one amortized encoder."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule

from ..models import per_datum
from ..nets import Encoder
from . import register


@register("encoder")
class EncoderGuide(PyroModule):
    model = "vae"

    def __init__(self, config):
        super().__init__()
        self.encoder = Encoder(config.z_dim, config.hidden)

    def forward(self, x):
        tasks, items = x.shape[:2]
        with per_datum(tasks, items), pyro.plate("tasks", tasks, dim=-2), pyro.plate("data", items, dim=-1):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
