"""The paper's guide: d_t is one random draw from the task, q(u | d_t) a conv encoder."""

from __future__ import annotations

import torch

from ..models import TaskGuide
from ..nets import Encoder
from . import register


@register("random-draw")
class RandomDrawGuide(TaskGuide):
    one_draw = True

    def __init__(self, config):
        super().__init__(config)
        # The hyper-encoder has the main encoder's architecture (paper §4), with u for z.
        self.encoder = Encoder(config.u_dim, config.hidden)

    def task_posterior(self, x):
        tasks, items = x.shape[:2]
        pick = torch.randint(items, (tasks,), device=x.device)
        d = x[torch.arange(tasks, device=x.device), pick]
        return self.encoder(d)
