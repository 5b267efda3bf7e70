"""HyperVAE in Pyro: a VAE whose parameters are generated, per task, by a hyper-level VAE."""

__version__ = "0.1.0"
