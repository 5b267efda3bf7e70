"""d_t = the mean image of the task's items, q(u | d_t) a conv encoder."""

from __future__ import annotations

from ..models import TaskGuide
from ..nets import Encoder
from . import register


@register("set-mean")
class SetMeanGuide(TaskGuide):
    def __init__(self, config):
        super().__init__(config)
        self.encoder = Encoder(config.u_dim, config.hidden)

    def task_posterior(self, x):
        return self.encoder(x.mean(1))
