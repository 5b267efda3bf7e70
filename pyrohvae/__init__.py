"""HyperVAE in Pyro: a VAE whose parameters are generated, per task, by a hyper-level VAE.

The Python API (`pyrohvae.api`, README "Python API"): `fit` trains a run, `load` loads a run folder
or an exported model file, `load_images` reads image files; a `Run` evaluates, draws from the prior
predictive, and gives the model of a task from its images (`TaskVAE`) to sample and score.
"""

from .api import Run, TaskVAE, fit, load, load_images
from .config import RunConfig

__version__ = "0.1.0"
__all__ = ["Run", "RunConfig", "TaskVAE", "fit", "load", "load_images"]
