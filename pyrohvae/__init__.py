"""HyperVAE in Pyro: a VAE whose parameters are generated, per task, by a hyper-level VAE.

The Python API (`pyrohvae.api`, README "Python API"): `fit` trains a run, `load` loads a run folder
or an exported model file, `load_images` reads image files; a `Run` evaluates, draws from the prior
predictive, and gives the model of a task from its images (`TaskVAE`) to sample and score.
"""

import pyro

# Parameters belong to their PyroModules, not to Pyro's global param store: training goes through
# `Trace_ELBO()(model, guide)` and a torch optimizer (pyrohvae/train.py), and two programs in one
# process never share a weight by name. Set before any PyroModule is built, which reads it.
pyro.settings.set(module_local_params=True)

from .api import Run, TaskVAE, fit, load, load_images
from .config import RunConfig

__version__ = "0.1.0"
__all__ = ["Run", "RunConfig", "TaskVAE", "fit", "load", "load_images"]
