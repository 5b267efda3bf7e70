"""`typicality`: the outlier score that tunes itself on normal data alone (after DoSE, Morningstar
et al., AISTATS 2021).

No single statistic of a generative model separates every pair of datasets: a likelihood rewards
simple images, a latent distance misses outliers that the encoder maps among the normal ones.
DoSE's answer, which needs no outlier: compute several statistics of each image, learn how they
are distributed over normal images, and score an image by how untypical its statistics are, too
high or too low.

The statistics (`statistics`), each per image, the image read alone as a task of one: the
reconstruction term of −ELBO, KL(z), the importance-sampled −log p(x), `complexity` (−log p(x)
minus the PNG length), `z-distance`, four of the model's drawing of the image at E[z | x]
(`drawing`): its nats per pixel of ink, the ink it draws beyond the image's counted in pixels and
in solid 2×2 blocks, and the log ratio of its strokes' width to the image's; the image's own stroke
width (`stroke_width`); and for a model with a task latent also KL(u) and `u-distance` (outliers.py
says what each is). −ELBO itself is left out: it is the sum of the first two. The drawing's are
what an Omniglot model sees of an MNIST digit: it draws the digit's bold strokes thin; and what a
model of garments sees of a digit or a character: it draws their thin strokes as solid shapes
(docs/outliers.md has the measurements).

How untypical the statistics are is read jointly (`Fit`): the statistics standardized by the
normal images' mean and sd, the score is the distance to the NEIGHBOURS-th nearest normal image
(`density="knn"`), a density estimate that assumes no form. DoSE's own form, one density per
statistic summed as if they were independent, misses what only the joint sees: a digit's −log p(x)
is typical of garments, but not for an image of its PNG length (on a Fashion-MNIST run against
MNIST and Omniglot outliers the per-statistic sum gave AUC 87.7 and 91.9, a joint density 97.0 and
96.5, docs/outliers.md). Versions 2 to 5 read the joint density as a Gaussian mixture with full
covariances, its number of components (1 to MAX_COMPONENTS) chosen by BIC, the score −log p̂; it
stays as `density="mixture"`. The nearest neighbours replaced it in version 6, chosen on
experiments/results/typicality_screen.md (runs of another seed, no test image) with the image's
stroke width: mean AUC over the pairs of datasets 98.34, against version 5's 98.01.

The normal images are the run's validation part, which it never trained on; a run without one
uses FIT_IMAGES of its training images, and the fit says so ("seen in training"): their
statistics are a little more typical than those of new normal images. The fit's images are saved
as RUN/typicality.json with the checkpoint's SHA-256 and step, and the fit is made again when they
change or the file cannot be read; the density is made again from them, deterministically, on load.
The training images' latent means that the distances measure to are kept the same way
(RUN/typicality-latents.pt, `latent_references`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .data import TaskData
from .files import OptionError, atomic_path, atomic_write_text
from .outliers import compressed_nats, datum_scores, latent_distance, reconstruction_logits, reference_latents

FIT_FILE = "typicality.json"
LATENTS_FILE = "typicality-latents.pt"  # the training images' latent means the distances measure to
FIT_IMAGES = 3000
MIN_FIT_IMAGES = 50  # below this a density of the statistics says little
NEIGHBOURS = 10  # `density="knn"`: the score is the distance to the NEIGHBOURS-th nearest fit image
MAX_COMPONENTS = 8  # `density="mixture"`
DENSITIES = ("knn", "mixture")
NORMAL_RATE = 0.05  # the share of normal images the reported threshold flags
# 3: recon_ink, ink_excess; 4: block_excess; 5: width_ratio, and 3,000 images; 6: image_width, knn
VERSION = 6


def statistics(
    program,
    images: torch.Tensor,
    train: TaskData,
    samples: int = 16,
    seed: int = 0,
    progress: bool = False,
    made: tuple | None = None,
    references: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Every statistic of each image (n, 1, 28, 28): name -> (n,) float64, in the images' order.
    `train` holds the training tasks the distances are measured to; `made`, the images'
    `reconstruction` where a caller has it already; `references`, the training images' latent means
    where a caller kept them (`latent_references`)."""
    references = references or {}
    data = TaskData(images, torch.zeros(len(images), dtype=torch.long), ["scored"], "scored")
    scores = datum_scores(program, data, samples, seed, progress)
    out = {name: scores[name].double() for name in ("recon", "kl_z", "nll", "kl_u") if name in scores}
    out["complexity"] = out["nll"] - compressed_nats(images)
    out.update(drawing(program, images, made))
    # An MNIST digit the model draws as well as a character can still be told by its bold strokes
    out["image_width"] = stroke_width(images.double())
    out["z_distance"] = latent_distance(
        program, train, images, "z", seed=seed, reference=references.get("z")
    ).double()
    if "kl_u" in out:
        out["u_distance"] = latent_distance(
            program, train, images, "u", seed=seed, reference=references.get("u")
        ).double()
    return out


def drawing(program, images: torch.Tensor, made: tuple | None = None) -> dict[str, torch.Tensor]:
    """How the model's drawing of each image (`reconstruction_logits`) differs from it, in ways the
    reconstruction term sums away: `recon_ink`, its nats per pixel on (how well the strokes are
    drawn, whatever their length); `ink_excess`, the ink it draws less the image's (which strokes it
    draws too thin or too bold); `block_excess`, the same count at the next scale, solid 2×2 blocks
    of ink (a stroke two pixels wide or more holds them, a thin one hardly any), the drawing's
    expected number less the image's; and `width_ratio`, the log of the drawing's mean stroke width
    over the image's (`stroke_width`), which does not grow with the amount of ink as the excesses do.
    `made`: the images' `reconstruction`, made here where not given."""
    x, drawn, nats = made if made is not None else reconstruction(program, images)
    ink = x.flatten(1).sum(1)
    return {
        "recon_ink": (nats * x).flatten(1).sum(1) / ink.clamp(min=1),
        "ink_excess": drawn.flatten(1).sum(1) - ink,
        "block_excess": solid_blocks(drawn) - solid_blocks(x),
        "width_ratio": torch.log(stroke_width(drawn) / stroke_width(x)),
    }


def reconstruction(program, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The images, the model's drawing of them (each pixel's probability of ink under
    `reconstruction_logits`) and each pixel's nats under it, all (n, 1, h, w) float64."""
    logits = reconstruction_logits(program, images).double()
    x = images.double()
    nats = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return x, torch.sigmoid(logits), nats


def solid_blocks(p: torch.Tensor) -> torch.Tensor:
    """The expected number of 2×2 windows all of whose pixels are on, pixels (n, 1, h, w) on
    independently with probabilities p: for a binary image, the count itself."""
    blocks = p[..., :-1, :-1] * p[..., :-1, 1:] * p[..., 1:, :-1] * p[..., 1:, 1:]
    return blocks.flatten(1).sum(1)


def edges(p: torch.Tensor) -> torch.Tensor:
    """The expected number of neighbouring pixel pairs, across and down, one pixel on and the other
    off, pixels (n, 1, h, w) on independently with probabilities p: for a binary image, the length of
    its outline."""

    def differ(a, b):
        return a * (1 - b) + b * (1 - a)

    across = differ(p[..., :, 1:], p[..., :, :-1])
    down = differ(p[..., 1:, :], p[..., :-1, :])
    return across.flatten(1).sum(1) + down.flatten(1).sum(1)


def stroke_width(p: torch.Tensor) -> torch.Tensor:
    """Ink over half the outline (`edges`): a stroke w pixels wide and much longer than wide has
    width about w. One pixel added to both keeps it finite and 1 for an empty image."""
    return (p.flatten(1).sum(1) + 1) / (edges(p) / 2 + 1)


@dataclass
class Fit:
    """The normal images' statistics, what they were computed with, and how their density is read."""

    names: list[str]
    values: list[list[float]]  # per statistic, the normal images' values
    fit_on: str  # which images: "<dataset>/validation", or "<dataset>/train (seen in training)"
    checkpoint: str  # SHA-256 of the run's checkpoint.pt
    step: int
    samples: int
    seed: int
    version: int = VERSION
    density: str = "knn"  # or "mixture", versions 2 to 5's (module docstring)
    neighbours: int = NEIGHBOURS  # of "knn"

    def __post_init__(self):
        if self.density not in DENSITIES:
            raise ValueError(f"density {self.density!r} is not one of {', '.join(DENSITIES)}")

    @property
    def n(self) -> int:
        return len(self.values[0])

    @functools.cached_property
    def _standardized(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The normal images' values standardized (n, statistics), and the mean and sd that did it."""
        x = np.asarray(self.values, dtype=np.float64).T
        mean, sd = x.mean(0), x.std(0)
        sd[sd == 0] = 1.0  # a constant statistic: any change of it is untypical
        return (x - mean) / sd, mean, sd

    @functools.cached_property
    def _density(self):
        """For "knn", the neighbour search over the standardized values; for "mixture", the mixture
        that BIC chose and the BIC of each number of components."""
        # imported here, as `outliers.detection_metrics` does
        from sklearn.mixture import GaussianMixture
        from sklearn.neighbors import NearestNeighbors

        z = self._standardized[0]
        if self.density == "knn":
            # fewer than the fit images: each of them is scored among the others (`own_scores`)
            if not 1 <= self.neighbours < self.n:
                raise ValueError(f"{self.neighbours} neighbours among {self.n} fit images")
            return NearestNeighbors(n_neighbors=self.neighbours).fit(z), None
        mixtures = [
            GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=0).fit(z)
            for k in range(1, min(MAX_COMPONENTS, self.n // 50) + 1)
        ]
        bics = [m.bic(z) for m in mixtures]
        return mixtures[int(np.argmin(bics))], bics

    def score(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """How untypical each image's statistics are, higher = more: the distance to the
        `neighbours`-th nearest normal image ("knn") or −log p̂ ("mixture"), standardized."""
        _, mean, sd = self._standardized
        z = (np.stack([stats[n].numpy() for n in self.names], 1) - mean) / sd
        density, _ = self._density
        if self.density == "knn":
            return torch.from_numpy(density.kneighbors(z)[0][:, -1])
        return -torch.from_numpy(density.score_samples(z))

    @functools.cached_property
    def own_scores(self) -> np.ndarray:
        """Each fit image's score among the others ("knn": its neighbours but itself; "mixture":
        in-sample, so a little low): what a new normal image scores, with no label read."""
        z = self._standardized[0]
        density, _ = self._density
        if self.density == "knn":  # itself at distance 0 among the K + 1 nearest
            return density.kneighbors(z, n_neighbors=self.neighbours + 1)[0][:, -1]
        return -density.score_samples(z)

    def threshold(self, rate: float) -> float:
        """The score above which a share `rate` of normal images lies, read off the fit images'
        own scores: flagging above it wants no labelled outlier."""
        return float(np.quantile(self.own_scores, 1 - rate))

    def summary(self, rate: float = NORMAL_RATE) -> dict:
        """What `outliers --json` reports of the fit (the values themselves stay in the file), with
        the threshold that flags a share `rate` of normal images."""
        _, mean, sd = self._standardized
        density, bics = self._density
        out = {
            "statistics": self.names,
            "version": self.version,
            "density": self.density,
            "mean": dict(zip(self.names, mean.round(4).tolist())),
            "sd": dict(zip(self.names, sd.round(4).tolist())),
            "normal_threshold": {"rate": rate, "threshold": self.threshold(rate)},
        }
        if self.density == "knn":
            out["neighbours"] = self.neighbours
        else:
            out["components"] = density.n_components
            out["component_weights"] = density.weights_.round(4).tolist()
            out["bic"] = [round(b, 1) for b in bics]
        return {**out, "fit_on": self.fit_on, "n": self.n, "step": self.step, "samples": self.samples}


def checkpoint_digest(run_dir: Path) -> str:
    from .train import CHECKPOINT

    digest = hashlib.sha256()
    with open(Path(run_dir) / CHECKPOINT, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def latent_references(program, run_dir: Path, step: int, train: TaskData, seed: int = 0) -> dict:
    """{site: `outliers.reference_latents`} for z and, with a task latent, u: the training images'
    latent means that `z_distance` and `u_distance` measure to, kept as RUN/LATENTS_FILE for this
    checkpoint, seed and training set. Encoding them (each image alone as a task) was most of a later
    call's time (the Omniglot default preset at one thread: `outliers --limit 1000` 43 s, 16 s with
    them kept), and they change only with the checkpoint; a file that is another's or cannot be read
    is made again."""
    path = Path(run_dir) / LATENTS_FILE
    key = {"checkpoint": checkpoint_digest(run_dir), "step": step, "seed": seed, "images": len(train)}
    try:
        kept = torch.load(path, weights_only=True)
        if kept["key"] == key:
            return kept["sites"]
    except (OSError, RuntimeError, EOFError, LookupError, TypeError, ValueError, pickle.UnpicklingError):
        pass  # none yet, cut short or of another format: made again below
    sites = ("z", "u") if program.task_latent else ("z",)
    made = {site: reference_latents(program, train, site, seed=seed) for site in sites}
    with atomic_path(path) as tmp:
        torch.save({"key": key, "sites": made}, tmp)
    return made


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
        raise OptionError(
            f"the typicality fit needs at least {MIN_FIT_IMAGES} normal images; {where} has "
            f"{len(data)}: choose another --score"
        )
    return data, where


def fit(
    program,
    run_dir: Path,
    step: int,
    train: TaskData,
    data_root=None,
    samples: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> Fit:
    """The statistics of the run's normal images, saved as RUN/typicality.json; the density is
    fitted on them."""
    images, where = fit_images(program.config, data_root, seed)
    references = latent_references(program, run_dir, step, train, seed)
    stats = statistics(program, images.images, train, samples, seed, progress, references=references)
    names = list(stats)
    bad = [n for n in names if not torch.isfinite(stats[n]).all()]
    if bad:
        raise OptionError(
            f"the typicality fit met non-finite {', '.join(bad)} on {where}: is the run trained?"
        )
    result = Fit(
        names, [stats[n].tolist() for n in names], where, checkpoint_digest(run_dir), step, samples, seed
    )
    atomic_write_text(Path(run_dir) / FIT_FILE, json.dumps(asdict(result)) + "\n")
    return result


def load_fit(run_dir: Path, step: int, samples: int, seed: int) -> tuple[Fit | None, str]:
    """The saved fit if it belongs to this checkpoint and these settings, else (None, why not)."""
    path = Path(run_dir) / FIT_FILE
    if not path.is_file():
        return None, "no fit yet"
    try:
        saved = Fit(**json.loads(path.read_text()))
        ok = (
            len(saved.names) == len(saved.values)
            and saved.n >= MIN_FIT_IMAGES
            and all(len(v) == saved.n and all(map(math.isfinite, v)) for v in saved.values)
        )
    except (ValueError, TypeError, IndexError) as e:  # JSONDecodeError is a ValueError
        return None, f"{FIT_FILE} unreadable ({type(e).__name__})"
    if saved.version != VERSION:
        return None, f"{FIT_FILE} made by the detector's version {saved.version}"
    if not ok:
        return None, f"{FIT_FILE} damaged"
    if saved.step != step or saved.checkpoint != checkpoint_digest(run_dir):
        return None, f"{FIT_FILE} belongs to another checkpoint (step {saved.step})"
    if (saved.samples, saved.seed) != (samples, seed):
        return None, f"{FIT_FILE} fitted with --samples {saved.samples} --seed {saved.seed}"
    return saved, "reused"


def fitted(
    program,
    run_dir: Path,
    step: int,
    train: TaskData,
    data_root=None,
    samples: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Fit, str]:
    """The run's fit, reused when it still belongs to it, else refitted; and which it was."""
    saved, why = load_fit(run_dir, step, samples, seed)
    if saved is not None:
        return saved, why
    return fit(program, run_dir, step, train, data_root, samples, seed, progress), f"fitted ({why})"


def typicality_scores(
    program,
    run_dir: Path,
    step: int,
    images: torch.Tensor,
    train: TaskData,
    data_root=None,
    samples: int = 16,
    seed: int = 0,
    progress: bool = False,
    rate: float = NORMAL_RATE,
) -> tuple[torch.Tensor, dict]:
    """The score of each image (n, 1, 28, 28) under the run's fit (made or reused), and what
    `outliers --json` reports of that fit, its threshold flagging a share `rate` of normal images
    among it."""
    made, how = fitted(program, run_dir, step, train, data_root, samples, seed, progress)
    references = latent_references(program, run_dir, step, train, seed)
    return made.score(statistics(program, images, train, samples, seed, progress, references=references)), {
        **made.summary(rate),
        "how": how,
    }
