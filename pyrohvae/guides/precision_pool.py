"""q(u | D_t) as the prior times one Gaussian factor per item: each item's encoder gives a location
m_i and a precision λ_i, and q(u | D) = N(Σ λ_i m_i / (1 + Σ λ_i), 1 / (1 + Σ λ_i)) per dimension,
the posterior of N(0, I) given independent Gaussian observations of u. It narrows as items are
added, and reads a set of any size the same way, none, one shot or a hundred."""

from __future__ import annotations

from ..models import TaskGuide
from ..nets import Encoder
from . import register


@register("precision-pool")
class PrecisionPoolGuide(TaskGuide):
    def __init__(self, config):
        super().__init__(config)
        # The main encoder's architecture per item: its scale head gives the factor's 1/√λ_i.
        self.items = Encoder(config.u_dim, config.hidden)

    def task_posterior(self, x):
        loc, scale = self.items(x)  # (tasks, items, u_dim) each
        precision = scale.pow(-2)
        total = 1.0 + precision.sum(-2)
        return (precision * loc).sum(-2) / total, total.rsqrt()
