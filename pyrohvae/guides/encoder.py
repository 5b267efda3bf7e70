"""The plain VAE's guide: q(z | x) by one amortized encoder (`models.vae_guide`)."""

from __future__ import annotations

from pyro.nn import PyroModule

from ..nets import Encoder
from . import register


@register("encoder")
class EncoderGuide(PyroModule):
    model = "vae"

    def __init__(self, config):
        super().__init__()
        self.encoder = Encoder(config.z_dim, config.hidden)
