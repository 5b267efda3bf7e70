"""`typicality`: the outlier score that tunes itself on normal data alone (DoSE, Morningstar et
al., AISTATS 2021).

No single statistic of a generative model separates every pair of datasets: a likelihood rewards
simple images, a latent distance misses outliers that the encoder maps among the normal ones.
DoSE's answer, which needs no outlier: compute several statistics of each image, learn how they
are distributed over normal images the model did not train on, and score an image by how
untypical its statistics are, too high or too low.

The statistics (`statistics`), each per image, the image read alone as a task of one:
−ELBO, its reconstruction term, KL(z), the importance-sampled −log p(x), `complexity` (−log p(x)
minus the PNG length), `z-distance`; for a model with a task latent also KL(u) and `u-distance`
(outliers.py says what each is). The fit (`fit`): one Gaussian kernel density per statistic on the
statistics of normal images, bandwidth by Silverman's rule; the score is −Σ_s log p̂_s(statistic s
of x) (DoSE_KDE: statistics treated as independent, each weighed alike).

The normal images are the run's validation part, which it never trained on; a run without one
uses FIT_IMAGES of its training images, and the fit says so ("seen in training"): their
statistics are a little more typical than those of new normal images. The fit is saved as
RUN/typicality.json with the checkpoint's SHA-256 and step, and refitted when they change or the
file cannot be read.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.neighbors import KernelDensity

from .data import TaskData
from .evaluate import evaluate
from .files import atomic_write_text
from .outliers import compressed_nats, latent_distance

FIT_FILE = "typicality.json"
FIT_IMAGES = 1000
MIN_FIT_IMAGES = 20  # below this a density of each statistic says little
VERSION = 1


def statistics(program, images: torch.Tensor, train: TaskData, samples: int = 16, seed: int = 0,
               progress: bool = False) -> dict[str, torch.Tensor]:
    """Every statistic of each image (n, 1, 28, 28): name -> (n,) float64, in the images' order.
    `train` holds the training tasks the distances are measured to."""
    data = TaskData(images, torch.zeros(len(images), dtype=torch.long), ["scored"], "scored")
    s = evaluate(program, data, samples=samples, mode="datum", seed=seed, progress=progress, label_free=True)
    values = {"nelbo": s.nelbo, "recon": s.recon, "kl_z": s.kl_z, "nll": s.nll}
    if s.kl_u is not None:
        values["kl_u"] = s.kl_u
    out = {}
    for name, v in values.items():
        out[name] = torch.empty(len(images), dtype=torch.float64)
        out[name][s.index] = v.double()
    out["complexity"] = out["nll"] - compressed_nats(images)
    out["z_distance"] = latent_distance(program, train, images, "z", seed=seed).double()
    if s.kl_u is not None:
        out["u_distance"] = latent_distance(program, train, images, "u", seed=seed).double()
    return out


def silverman(values: np.ndarray) -> float:
    """Silverman's rule of thumb for a Gaussian kernel: 0.9 min(σ, IQR / 1.34) n^(−1/5)."""
    spread = min(values.std(ddof=1), np.subtract(*np.percentile(values, [75, 25])) / 1.34)
    if not spread > 0:  # a constant statistic (or one with a zero IQR): fall back on its deviation
        spread = values.std(ddof=1) or 1.0
    return float(0.9 * spread * len(values) ** -0.2)


@dataclass
class Fit:
    """The density of each statistic over normal images, and what it was fitted with."""

    names: list[str]
    values: list[list[float]]  # per statistic, the normal images' values
    bandwidths: list[float]
    fit_on: str  # which images: "<dataset>/validation", or "<dataset>/train (seen in training)"
    checkpoint: str  # SHA-256 of the run's checkpoint.pt
    step: int
    samples: int
    seed: int
    version: int = VERSION

    @property
    def n(self) -> int:
        return len(self.values[0])

    def log_densities(self, stats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """log p̂_s of each image's statistic s, per statistic."""
        out = {}
        for name, ref, h in zip(self.names, self.values, self.bandwidths):
            kde = KernelDensity(bandwidth=h).fit(np.asarray(ref)[:, None])
            out[name] = kde.score_samples(stats[name].numpy()[:, None])
        return out

    def score(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """−Σ_s log p̂_s: higher = more untypical."""
        return -torch.tensor(np.sum(list(self.log_densities(stats).values()), 0))

    def summary(self) -> dict:
        """What `outliers --json` reports of the fit (the values themselves stay in the file)."""
        return {"statistics": self.names, "bandwidths": dict(zip(self.names, self.bandwidths)),
                "weights": dict.fromkeys(self.names, 1.0), "fit_on": self.fit_on, "n": self.n,
                "step": self.step, "samples": self.samples}


def checkpoint_digest(run_dir: Path) -> str:
    from .train import CHECKPOINT

    digest = hashlib.sha256()
    with open(Path(run_dir) / CHECKPOINT, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fit_images(config, data_root=None, seed: int = 0) -> tuple[TaskData, str]:
    """The normal images the fit reads: the validation part, else FIT_IMAGES training images."""
    if config.validation:
        data = config.load_data("validation", data_root)
        where = data.name
    else:
        train = config.load_data("train", data_root)
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:FIT_IMAGES]
        data, where = train.subset(pick), f"{train.name} (seen in training)"
    if len(data) < MIN_FIT_IMAGES:
        raise ValueError(f"the typicality fit needs at least {MIN_FIT_IMAGES} normal images; {where} has {len(data)}")
    return data, where


def fit(program, run_dir: Path, step: int, train: TaskData, data_root=None, samples: int = 16, seed: int = 0,
        progress: bool = False) -> Fit:
    """Fit the density of every statistic on the run's normal images and save it (RUN/typicality.json)."""
    images, where = fit_images(program.config, data_root, seed)
    stats = statistics(program, images.images, train, samples, seed, progress)
    names = list(stats)
    bad = [n for n in names if not torch.isfinite(stats[n]).all()]
    if bad:
        raise ValueError(f"the typicality fit met non-finite {', '.join(bad)} on {where}: is the run trained?")
    result = Fit(names, [stats[n].tolist() for n in names], [silverman(stats[n].numpy()) for n in names], where,
                 checkpoint_digest(run_dir), step, samples, seed)
    atomic_write_text(Path(run_dir) / FIT_FILE, json.dumps(asdict(result)) + "\n")
    return result


def load_fit(run_dir: Path, step: int, samples: int, seed: int) -> tuple[Fit | None, str]:
    """The saved fit if it belongs to this checkpoint and these settings, else (None, why not)."""
    path = Path(run_dir) / FIT_FILE
    if not path.is_file():
        return None, "no fit yet"
    try:
        saved = Fit(**json.loads(path.read_text()))
        ok = (len(saved.names) == len(saved.values) == len(saved.bandwidths) and saved.n >= MIN_FIT_IMAGES
              and all(len(v) == saved.n and all(map(math.isfinite, v)) for v in saved.values)
              and all(h > 0 for h in saved.bandwidths))
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        return None, f"{FIT_FILE} unreadable ({type(e).__name__})"
    if not ok or saved.version != VERSION:
        return None, f"{FIT_FILE} damaged"
    if saved.step != step or saved.checkpoint != checkpoint_digest(run_dir):
        return None, f"{FIT_FILE} belongs to another checkpoint (step {saved.step})"
    if (saved.samples, saved.seed) != (samples, seed):
        return None, f"{FIT_FILE} fitted with --samples {saved.samples} --seed {saved.seed}"
    return saved, "reused"


def fitted(program, run_dir: Path, step: int, train: TaskData, data_root=None, samples: int = 16, seed: int = 0,
           progress: bool = False) -> tuple[Fit, str]:
    """The run's fit, reused when it still belongs to it, else refitted; and which it was."""
    saved, why = load_fit(run_dir, step, samples, seed)
    if saved is not None:
        return saved, why
    return fit(program, run_dir, step, train, data_root, samples, seed, progress), f"fitted ({why})"
