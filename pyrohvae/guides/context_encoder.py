"""MetaVAE's guide (Choi et al. 2019): one inference network for all tasks, q(z | x, D), that
also reads a context set D of the same task through the mean of its per-item features
(`models.metavae_guide`)."""

from __future__ import annotations

from pyro.nn import PyroModule

from ..nets import ContextEncoder
from . import register


@register("context-encoder")
class ContextEncoderGuide(PyroModule):
    model = "metavae"

    def __init__(self, config):
        super().__init__()
        self.encoder = ContextEncoder(config.z_dim, config.hidden)
