"""MetaVAE's guide (Choi et al. 2019): one inference network for all tasks, q(z | x, D), that
also reads a context set D of the same task through the mean of its per-item features."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule

from ..models import per_datum
from ..nets import ContextEncoder
from . import register


@register("context-encoder")
class ContextEncoderGuide(PyroModule):
    model = "metavae"

    def __init__(self, config):
        super().__init__()
        self.encoder = ContextEncoder(config.z_dim, config.hidden)

    def forward(self, x, context=None):
        """x: (tasks, items, 1, 28, 28); context: (tasks, m, 1, 28, 28), by default x itself."""
        tasks, items = x.shape[:2]
        with per_datum(tasks, items), pyro.plate("tasks", tasks, dim=-2), pyro.plate("data", items, dim=-1):
            loc, scale = self.encoder(x, x if context is None else context)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
