"""Outlier detection (paper §3.6, §4.2): score each test vector by its description length.

Every datum is scored on its own, with no label: HyperVAE encodes x into q(u | x), decodes the
mean into θ and scores x under that VAE; MetaVAE under all its decoders; the VAE under its one.

Scores (higher = more outlying):
- `elbo`: −ELBO of x (Eq. 8), the paper's score for VAE and HyperVAE, and MetaVAE's "mean
  negative ELBO" over all trained decoders;
- `kl`: KL(q(z | x) || p(z)), MetaVAE's other score (defined for every model);
- `mdl`: HyperVAE only, −ELBO + KL(q(u | x) || p(u)): Eq. 7 with D = {x}, the model part of the
  code added to the data part.

A likelihood rewards simple images (Nalisnick et al. 2019), so the scores above fail where the
outliers are simpler than the normal data. The remedies: three with the importance-sampled
−log p(x) (K = `samples`, the same particles as the −ELBO) as a term, and two distances in a latent
space that read no likelihood:
- `complexity` (Serrà et al. 2020): −log p(x) − L(x), L(x) the length of x in nats under a generic
  lossless compressor: PNG through Pillow (default: the compressor of the paper, which codes the
  image's rows with 2-D filters), or `complexity-zlib`, zlib (level 9) of the packed bits;
- `ratio` (Ren et al. 2019): −log p(x) + log p_background(x), the background a model of the same
  kind trained on the normal data with a fraction μ of its pixels flipped (`background`), which
  learns the population's simple statistics and not its semantics;
- `model-space` (HyperVAE): min over the training tasks t of −log p(x | θ(ū_t)), minus −log p(x |
  θ(ū_x)): how much worse the best model of a known task explains x than the model x chooses for
  itself. Simplicity lowers both terms alike, as the compressor does in `complexity`, but here the
  "compressor" is the model family itself: a normal x is explained about as well by a known task's
  model as by its own, an outlier pulls q(u | x) to a model no training task has.
- `u-distance` (HyperVAE): how far q(u | x) lies from the training tasks in u-space: min over the
  training tasks t of the Mahalanobis distance² from ū_x to the ū of t's training images (each read
  alone, as x is), under a Gaussian per task with one covariance pooled over the tasks (the
  detector of Lee et al. 2018, in the space of models rather than of a classifier's features). It
  reads no likelihood, so an image's simplicity does not enter it; an outlier, unlike anything the
  hyper-encoder was trained on, is mapped off the regions the training tasks' images occupy.
- `z-distance` (every model): the same in z-space, with E[z | x] under the guide (HyperVAE's
  encoder θ(ū_x), MetaVAE's shared encoder reading x as its context): the control for `u-distance`,
  which tells what the task latent adds to a distance in the per-image latent.
- `regret` (HyperVAE): Likelihood Regret (Xiao et al. 2020) in the space of models: how many nats of
  x's description length (`mdl`) a model fitted to x alone saves over the one the hyper-encoder
  chooses for it, q(u | x) refined by REGRET_STEPS Adam steps on x's own ELBO (`fewshot.refine`).
  Simplicity lowers both, as in `complexity`; an image the hyper-encoder was not trained on is
  further from its best model. It costs REGRET_STEPS backward passes per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pyro import poutine

from .data import TaskData
from .evaluate import evaluate, evaluation_subset, seed_stream
from .files import OptionError, RequestError, pyplot, save_figure

SCORES = (
    "elbo",
    "mdl",
    "kl",
    "complexity",
    "complexity-zlib",
    "ratio",
    "model-space",
    "u-distance",
    "z-distance",
    "regret",
)
TRAINING_TASK_SCORES = ("model-space", "u-distance", "z-distance")  # scores that read the training data
TASK_LATENT_SCORES = ("mdl", "model-space", "u-distance", "regret")  # HyperVAE's alone
REGRET_STEPS = 30
COMPRESSORS = ("png", "zlib")


# Outliers made from a dataset's own test images, for shifts the other datasets do not test: the
# digits turned 180° (a semantic shift with the same ink and strokes), and garments' pixels scattered
# (each image's ink count kept, its shape gone).
SHIFTED = {"mnist-upside-down": "mnist", "fashion-mnist-scattered": "fashion-mnist"}


def shift(name: str, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`images` of SHIFTED[name] shifted as `name` says: turned upside down, or each image's ink
    count of pixels placed at random, in an order drawn from `generator`."""
    if name.endswith("upside-down"):
        return images.flip(-2, -1)
    flat = images.reshape(len(images), -1)
    rank = torch.rand(flat.shape, generator=generator).argsort(1).argsort(1)  # a random order of the pixels
    return (rank < flat.sum(1, keepdim=True)).to(images.dtype).reshape(images.shape)


def shifted(name: str, root=None, seed: int = 0, binarization: str = "sample") -> TaskData:
    """The test images of SHIFTED[name], binarized as `binarization` says (`data.load`), shifted as
    its name says (`shift`)."""
    from . import data

    if name not in SHIFTED:
        raise RequestError(f"unknown shifted set {name!r}; choose one of {', '.join(SHIFTED)}")
    base = data.load(SHIFTED[name], "test", root, binarization=binarization)
    images = shift(name, base.images, torch.Generator().manual_seed(seed))
    return TaskData(images, base.tasks, base.task_names, name)


@dataclass
class MixedSet:
    data: TaskData  # tasks: 0 normal, 1 outlier
    source_index: torch.Tensor  # position of each datum in its own dataset's test split

    @property
    def labels(self) -> torch.Tensor:
        return self.data.tasks


def mixed_set(normal: TaskData, other: TaskData, fraction: float, seed: int = 0) -> MixedSet:
    """All of `normal`, plus random samples of `other` making up `fraction` of the mixed set."""
    n_out = round(fraction / (1 - fraction) * len(normal))
    if n_out > len(other):
        raise OptionError(f"--fraction {fraction} needs {n_out} outliers; {other.name} has {len(other)}")
    pick = torch.randperm(len(other), generator=torch.Generator().manual_seed(seed))[:n_out]
    images = torch.cat([normal.images, other.images[pick]])
    labels = torch.cat([torch.zeros(len(normal), dtype=torch.long), torch.ones(n_out, dtype=torch.long)])
    index = torch.cat([torch.arange(len(normal)), pick])
    return MixedSet(TaskData(images, labels, [normal.name, other.name], "mixed"), index)


def compressed_nats(images: torch.Tensor, compressor: str = "png") -> torch.Tensor:
    """L(x): the length in nats of each binary image (n, 1, 28, 28) under a lossless compressor."""
    import io
    import zlib

    from PIL import Image

    if compressor not in COMPRESSORS:
        raise ValueError(f"unknown compressor {compressor!r}; choose one of {', '.join(COMPRESSORS)}")
    bits = images.reshape(len(images), 28, 28).to(torch.uint8).numpy()
    lengths = []
    for b in bits:
        if compressor == "png":
            buffer = io.BytesIO()
            Image.fromarray(b * 255).convert("1").save(buffer, format="PNG", optimize=True)
            lengths.append(len(buffer.getvalue()))
        else:
            lengths.append(len(zlib.compress(np.packbits(b).tobytes(), 9)))
    return torch.tensor(lengths, dtype=torch.float64) * 8 * math.log(2)


@torch.no_grad()
def best_task_nll(
    program, train: TaskData, images: torch.Tensor, samples: int, seed: int = 0
) -> torch.Tensor:
    """min over the training tasks t of −log p(x | θ(ū_t)), per image; ū_t from a context of up
    to 100 training images of t, as the density protocol chooses it (HyperVAE), and the context's
    first images the shots of a model whose p(z) reads them (`taskmodels.context_model`)."""
    from .data import context_set
    from .fewshot import per_image
    from .taskmodels import context_model

    device = program.device
    g = torch.Generator().manual_seed(seed)
    best = torch.full((len(images),), math.inf)
    for t in range(train.num_tasks):
        seed_stream(seed, t)
        fixed = context_model(program, context_set(train, t, g).to(device))
        best = torch.minimum(best, per_image(fixed, images, samples, device)[1])
    return best


def min_mahalanobis(points: torch.Tensor, reference: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """min over the groups g of (p − μ_g)ᵀ Σ⁻¹ (p − μ_g) for each point (n, d): μ_g the mean of the
    reference rows (m, d) of group g, Σ their covariance about their own group's mean, pooled."""
    reference = reference.double()
    names, groups = torch.unique(groups, return_inverse=True)
    means = torch.zeros(len(names), reference.shape[1], dtype=reference.dtype).index_add_(
        0, groups, reference
    )
    means /= torch.bincount(groups, minlength=len(names)).unsqueeze(1)
    centred = reference - means[groups]
    covariance = centred.T @ centred / len(reference)
    covariance += 1e-6 * covariance.diagonal().mean() * torch.eye(len(covariance), dtype=covariance.dtype)
    factor = torch.linalg.cholesky(covariance)
    # with Σ = L Lᵀ the distance² is the squared Euclidean distance between the L⁻¹-images
    white = torch.linalg.solve_triangular(factor, points.double().T, upper=False).T
    white_means = torch.linalg.solve_triangular(factor, means.T, upper=False).T
    return torch.cdist(white, white_means).pow(2).min(1).values


@torch.no_grad()
def latent_means(program, images: torch.Tensor, site: str, batch: int = 500) -> torch.Tensor:
    """The mean of q(site | x), (n, dims), each image read alone as a task of one and its own
    context: ū_x for site "u" (HyperVAE), E[z | x] under the guide for site "z"."""
    device = program.device
    means = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].float().unsqueeze(1).to(device)  # (n, 1, 1, 28, 28)
        if site == "u":
            means.append(program.task_u(x).cpu())
            continue
        means.append(z_posterior(program, x).mean.reshape(len(x), -1).cpu())
    return torch.cat(means)


def z_posterior(program, x: torch.Tensor):
    """q(z | x) of images x (n, 1, 1, 28, 28), each read alone as a task of one and its own
    context, as `latent_means` and `reconstruction_logits` read it."""
    guide = program.conditioned(x, program.choices(None)[0]).guide
    return poutine.trace(guide).get_trace(x).nodes["z"]["fn"]


@torch.no_grad()
def reconstruction_logits(program, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The Bernoulli logits of p(x | z) at z = E[z | x] (n, 1, 28, 28), each image read alone as a
    task of one and its own context, as `latent_means` reads it: the model's drawing of x."""
    device = program.device
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].float().unsqueeze(1).to(device)  # (n, 1, 1, 28, 28)
        task = program.conditioned(x, program.choices(None)[0])
        z = poutine.trace(task.guide).get_trace(x).nodes["z"]["fn"].mean
        drawn = poutine.trace(poutine.condition(task.model, data={"z": z})).get_trace(x)
        out.append(drawn.nodes["x"]["fn"].base_dist.logits.reshape(len(x), *images.shape[1:]).cpu())
    return torch.cat(out)


def reference_latents(
    program, train: TaskData, site: str, per_task: int = 1000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent means (n, dims) of up to `per_task` random training images of each task, and
    their tasks (n,): what `latent_distance` measures to."""
    g = torch.Generator().manual_seed(seed)
    index = torch.cat([m[torch.randperm(len(m), generator=g)[:per_task]] for m in train.task_members()])
    return latent_means(program, train.images[index], site), train.tasks[index]


def latent_distance(
    program,
    train: TaskData,
    images: torch.Tensor,
    site: str,
    per_task: int = 1000,
    seed: int = 0,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """`u-distance` / `z-distance` of each image: min_mahalanobis of its latent mean among those of
    up to `per_task` random training images of each task (`reference_latents`, or `reference`
    where a caller kept them)."""
    means, tasks = (
        reference if reference is not None else reference_latents(program, train, site, per_task, seed)
    )
    return min_mahalanobis(latent_means(program, images, site), means, tasks).float()


def datum_scores(program, data: TaskData, samples: int = 16, seed: int = 0, progress=False) -> dict:
    """−ELBO (`nelbo`), `recon`, `kl_z`, importance-sampled −log p(x) (`nll`) and, for a model with
    u, `kl_u` of every datum scored alone (d_t = x), each (n,) in the data's order."""
    s = evaluate(program, data, samples=samples, mode="datum", seed=seed, progress=progress, label_free=True)
    scores = {"nelbo": s.nelbo, "recon": s.recon, "kl_z": s.kl_z, "nll": s.nll}
    if s.kl_u is not None:
        scores["kl_u"] = s.kl_u
    ordered = {}
    for name, v in scores.items():
        ordered[name] = torch.empty(len(data), dtype=v.dtype)
        ordered[name][s.index] = v
    return ordered


def regret(
    program,
    images: torch.Tensor,
    samples: int = 16,
    seed: int = 0,
    steps: int = REGRET_STEPS,
    batch: int = 100,
) -> torch.Tensor:
    """`regret` of each image (n, 1, 28, 28), each read alone as a task of one: its `mdl` (−ELBO by
    `samples` particles, plus KL(u)) under q(u | x) less its `mdl` under q(u | x) refined by `steps`
    Adam steps on its own ELBO. Each chunk of `batch` images draws from a stream of its own."""
    from .fewshot import refine
    from .importance import importance_scores

    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].float().unsqueeze(1).to(program.device)  # (n, 1, 1, 28, 28)
        seed_stream(seed, i)
        loc, scale = program.inference.shots_posterior(x)
        mdl = []
        for q in ((loc, scale), refine(program, x, loc, scale, steps)):
            model = program.conditioned_on(*q)
            seed_stream(seed, i)  # the same particles' noise for both
            s = importance_scores(model.model, model.guide, x, samples)
            mdl.append((s["recon"] + s["kl_z"]).reshape(-1) + model.kl_u)
        out.append((mdl[0] - mdl[1]).cpu())
    return torch.cat(out)


def datum_nll(program, data: TaskData, samples: int = 16, seed: int = 0, progress=False) -> torch.Tensor:
    """Importance-sampled −log p(x) of every datum, scored alone (d_t = x), in the data's order."""
    return datum_scores(program, data, samples, seed, progress)["nll"]


def outlier_scores(
    program,
    mixed: MixedSet,
    samples: int = 16,
    seed: int = 0,
    progress=True,
    background=None,
    train: TaskData | None = None,
    wanted=TRAINING_TASK_SCORES,
    references: dict | None = None,
) -> dict:
    """Every score the program has, one per datum of the mixed set in its order: `elbo`, `kl`,
    `complexity`, `complexity-zlib`; `mdl` for HyperVAE; given its training data `train`, those of
    TRAINING_TASK_SCORES that are `wanted` (and apply), the distances measured to `references`
    where a caller kept them (`typicality.latent_references`); `ratio` given a `background` program."""
    references = references or {}
    d = datum_scores(program, mixed.data, samples, seed, progress)
    ordered = {"elbo": d["nelbo"], "kl": d["kl_z"]}
    if "kl_u" in d:
        ordered["mdl"] = d["nelbo"] + d["kl_u"]
    nll = d["nll"]
    for compressor in COMPRESSORS:
        name = "complexity" if compressor == "png" else f"complexity-{compressor}"
        ordered[name] = nll - compressed_nats(mixed.data.images, compressor).float()
    if background is not None:
        ordered["ratio"] = nll - datum_nll(background, mixed.data, samples, seed, progress)
    if train is not None and "kl_u" in d:
        if "model-space" in wanted:  # decodes x under every training task's model: the slow one
            ordered["model-space"] = best_task_nll(program, train, mixed.data.images, samples, seed) - nll
        if "u-distance" in wanted:
            ordered["u-distance"] = latent_distance(
                program, train, mixed.data.images, "u", seed=seed, reference=references.get("u")
            )
    if "regret" in wanted and "kl_u" in d:
        ordered["regret"] = regret(program, mixed.data.images, samples, seed)
    if train is not None and "z-distance" in wanted:
        ordered["z-distance"] = latent_distance(
            program, train, mixed.data.images, "z", seed=seed, reference=references.get("z")
        )
    return ordered


def outlier_data(other: str, seed: int = 0, data_root=None, binarization: str = "sample") -> TaskData:
    """The outliers `other` names: a dataset's test images, a set shifted from one (`SHIFTED`), both
    binarized as the normal images are (`binarization`), or every image of a folder."""
    from . import data, folders

    if other in data.DATASETS:
        return data.load(other, "test", data_root, binarization=binarization)
    if other in SHIFTED:
        return shifted(other, data_root, seed, binarization)
    return folders.scan(other).every_image()


def run_scores(
    program,
    run_dir: Path,
    step: int,
    mixed: MixedSet,
    scores,
    samples: int = 16,
    seed: int = 0,
    progress: bool = False,
    data_root=None,
    normal_rate: float | None = None,
) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The `scores` of every image of `mixed` under the run in `run_dir` (trained `step` steps),
    each image on its own: {score: (n,)}, and what the typicality fit reports where it is asked
    for (`typicality.typicality_scores`, its threshold flagging `normal_rate` of normal images). What
    a score needs is read here: the training data, the run's background model (`ratio`). A
    ValueError says why a score cannot be had."""
    from .background import load_background
    from .typicality import NORMAL_RATE, latent_references, typicality_scores

    if not_here := [s for s in scores if s in TASK_LATENT_SCORES and not program.task_latent]:
        raise OptionError(f"--score {not_here[0]} needs a task latent u: use a hypervae run")
    background = load_background(run_dir, program.device)[0] if "ratio" in scores else None
    wants_train = {*TRAINING_TASK_SCORES, "typicality"} & set(scores)
    train = program.config.load_data("train", data_root) if wants_train else None
    values, fit = {}, None
    if set(scores) - {"typicality"}:
        distances = {"u-distance", "z-distance"} & set(scores)
        references = latent_references(program, run_dir, step, train, seed) if distances else None
        values = outlier_scores(
            program, mixed, samples, seed, progress, background, train, scores, references
        )
    if "typicality" in scores:  # the run's own fit, made once and reused
        rate = NORMAL_RATE if normal_rate is None else normal_rate
        values["typicality"], fit = typicality_scores(
            program, run_dir, step, mixed.data.images, train, data_root, samples, seed, progress, rate
        )
    return values, fit


@dataclass
class Detection:
    """What `detect` found: the result a command writes (`result`), and the mixed set, its scores
    and the metrics with their ROC curve, for a figure or a CSV."""

    result: dict
    mixed: MixedSet
    values: torch.Tensor
    metrics: dict

    def lines(self) -> list[str]:
        r, fit = self.result, self.result.get("fit")
        head = []
        if fit is not None:
            statistics = ", ".join(fit["statistics"])
            head.append(f"typicality of {statistics}: {fit['how']}, on {fit['n']} images of {fit['fit_on']}")
        line = (
            f"{r['model']} ({r['score']}) {r['normal']} vs {r['outliers']}: AUC {100 * r['auc']:.1f}  "
            f"FPR {100 * r['fpr']:.1f}  FNR {100 * r['fnr']:.1f} at {r['threshold_rule']} (threshold "
            f"{r['threshold']:.2f}; {r['n_normal']} normal, {r['n_outliers']} outliers)"
        )
        return [*head, line]


def detect(
    program,
    run_dir: Path,
    step: int,
    other: str,
    fraction: float,
    score: str = "typicality",
    flag_rate: float | None = None,
    samples: int = 16,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = False,
    data_root=None,
    normal_rate: float | None = None,
) -> Detection:
    """The detector of the run in `run_dir` (trained `step` steps) on its test data as normal,
    (about `limit` images of it, spread over the tasks) mixed with `other`'s images as outliers,
    `fraction` of the set: AUC, and FPR and FNR at the threshold (`detection_metrics`): the
    equal-error point, the top `flag_rate`, or with `normal_rate` the typicality fit's threshold
    that flags that share of its normal images, which reads no label. A ValueError says why it
    cannot run."""
    config = program.config
    if other == config.dataset:
        raise OptionError(f"--outliers must name another dataset than the run's ({config.dataset})")
    if normal_rate is not None and (score != "typicality" or flag_rate is not None):
        raise OptionError(
            "--normal-rate sets the typicality fit's threshold: not with --flag-rate or another --score"
        )
    normal = config.load_data("test", data_root)
    kept = torch.cat(evaluation_subset(normal, limit)) if limit is not None else torch.arange(len(normal))
    outliers = outlier_data(other, seed, data_root, config.binarize)
    mixed = mixed_set(normal.subset(kept), outliers, fraction, seed)
    mixed.source_index[: len(kept)] = kept  # positions in the normal test split
    values, fit = run_scores(
        program, run_dir, step, mixed, (score,), samples, seed, progress, data_root, normal_rate
    )
    fixed = None
    if normal_rate is not None:
        fixed = (fit["normal_threshold"]["threshold"], f"the fit's normal images' top {normal_rate:g}")
    metrics = detection_metrics(values[score].numpy(), mixed.labels.numpy(), flag_rate, fixed)
    result = {
        "model": config.model,
        "normal": config.dataset,
        "outliers": other,
        "score": score,
        **{k: metrics[k] for k in ("auc", "fpr", "fnr", "threshold", "threshold_rule")},
        "n_normal": int((mixed.labels == 0).sum()),
        "n_outliers": int((mixed.labels == 1).sum()),
        "fraction": fraction,
        "samples": samples,
        "seed": seed,
        "step": step,
    }
    if fit is not None:
        result["fit"] = fit
    return Detection(result, mixed, values[score], metrics)


def detection_metrics(
    scores, labels, flag_rate: float | None = None, fixed: tuple[float, str] | None = None
) -> dict:
    """AUC, and FPR and FNR at a threshold: the equal-error point, flagging the top `flag_rate` of
    the scores, or a `fixed` one (threshold, how it was chosen). A datum is flagged as an outlier
    when its score >= threshold."""
    from sklearn.metrics import roc_auc_score, roc_curve  # here: a second of every command's start

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    if fixed is not None:
        threshold, rule = fixed
    elif flag_rate is None:
        i = int(np.argmin(np.abs(fpr - (1 - tpr))[1:])) + 1  # skip the +inf threshold
        threshold, rule = float(thresholds[i]), "equal error"
    else:
        threshold, rule = float(np.quantile(scores, 1 - flag_rate)), f"flag top {flag_rate:g}"
    flagged = scores >= threshold
    normal, outlier = labels == 0, labels == 1
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "fpr": float((flagged & normal).sum() / normal.sum()),
        "fnr": float((~flagged & outlier).sum() / outlier.sum()),
        "threshold": threshold,
        "threshold_rule": rule,
        "roc": _thin_roc(fpr, tpr),
    }


def write_scores(path, mixed: MixedSet, values: torch.Tensor, normal_name: str, outlier_name: str) -> None:
    """Every image's score as CSV (index, dataset, source_index, outlier, score), whole or not at all."""
    from .files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("index,dataset,source_index,outlier,score\n")
        f.writelines(
            f"{i},{outlier_name if label else normal_name},{src},{label},{v:.6f}\n"
            for i, (label, src, v) in enumerate(
                zip(mixed.labels.tolist(), mixed.source_index.tolist(), values.tolist())
            )
        )


def _thin_roc(fpr, tpr, points: int = 201) -> dict:
    """The ROC curve at `points` evenly spaced false positive rates (enough for a figure)."""
    grid = np.linspace(0, 1, points)
    best = tpr[np.searchsorted(fpr, grid, side="right") - 1]  # the highest TPR reached by each FPR
    return {"fpr": grid.round(4).tolist(), "tpr": best.round(4).tolist()}


def roc_figure(curves: dict, path, title: str) -> None:
    """curves: label -> metrics of detection_metrics; one ROC curve each, AUC in the legend."""
    roc_panels({title: curves}, path)


def roc_panels(panels: dict, path, title: str | None = None, columns: int | None = None) -> None:
    """panels: panel title -> curves (as for roc_figure); the panels in rows of `columns` (all side by
    side where None) in one PNG."""
    plt = pyplot()

    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 5 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (panel, curves) in zip(axes.flat, panels.items()):
        for label, m in curves.items():
            ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], label=f"{label} (AUC {100 * m['auc']:.1f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path, bbox_inches="tight")
