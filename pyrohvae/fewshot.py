"""Few-shot models: the main VAE θ(ū) of a task never trained on, from k images of it (the shots),
and the field's benchmark of them (`curve`).

A guide that reads a set (`set-encoder`, `set-mean`) reads the k shots as the task. A guide that
reads one draw (the paper's `random-draw`) gives one q(u | d_i) per shot, combined:
- `product` (default): the Gaussian product of the k posteriors with the prior divided out k − 1
  times, q(u | d_1..k) ∝ Π_i q(u | d_i) / p(u)^(k−1), which is what Bayes' rule gives when each
  q(u | d_i) ∝ p(u) p(d_i | u) (normal prior only). Its precision is kept at least that of the
  sharpest single shot, where the division would leave less;
- `mean`: the mean of the k locations and of the k scales.

A few-shot model is written as a run folder of a plain VAE (`model: vae`) whose encoder and
decoder weights are θ(ū): `evaluate`, `sample` and every other command read it like a trained VAE.
Where θ(u) generates the prior p(z | u) = N(m, s) as well, the VAE gets the same model with a
N(0, I) prior: z = m + s·ε folded into the decoder's first layer and the encoder's heads, so
every ELBO and likelihood is unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .config import RunConfig
from .data import CONTEXT_SIZE, DataError, some_tasks
from .files import RequestError, atomic_path, atomic_write_text, pyplot, save_figure
from .folders import IMAGE_EXTENSIONS, polarity, read_image, to_bits
from .importance import importance_scores
from .models import ADDRESSED
from .program import build

# The shots of the field's benchmark (Bartunov & Vetrov 2018, Table 1: k = 0, 1, 2, 3, 4, 9) and 19,
# all the other drawings of an Omniglot character.
SHOTS = (0, 1, 2, 3, 4, 9, 19)
# The set figure: the mean of the 0- to 4-shot conditionals, the per-image −log p of a set of five
# by the chain rule (Giannone & Winther 2022).
SET_SIZE = 5
ZERO_SHOT = ("training-mean", "prior-mean")  # the models of no shots: θ(mean training-task ū), θ(E[u])
REFINE_LR = 0.05  # Adam's step for `refine`, in u's units (p(u) = N(0, I))


def task_shots(data, name: str, shots: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """`shots` random images of task `name` of `data` (chosen by `seed`), its other images, and a
    description."""
    if name not in data.task_names:
        raise RequestError(f"{data.name} has no task {name!r} (tasks: {some_tasks(data.task_names)})")
    members = data.task_members()[data.task_names.index(name)]
    if len(members) <= shots:
        raise RequestError(
            f"task {name!r} has {len(members)} images: too few for {shots} shots and a test image"
        )
    members = members[torch.randperm(len(members), generator=torch.Generator().manual_seed(seed))]
    return (data.images[members[:shots]], data.images[members[shots:]], f"task {name!r} of {data.name}")


@torch.no_grad()
def per_image(task_model, images: torch.Tensor, samples: int = 1024, device="cpu", chunk: int = 100):
    """−ELBO and importance-sampled −log p(x), each (n,), of images (n, 1, 28, 28) under one fixed model."""
    nelbo, nll = [], []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].float().unsqueeze(0).to(device)
        s = importance_scores(task_model.model, task_model.guide, x, samples)
        nelbo.append((s["recon"] + s["kl_z"]).reshape(-1).cpu())
        nll.append(-s["log_p"].reshape(-1).cpu())
    return torch.cat(nelbo), torch.cat(nll)


def summary(nelbo: torch.Tensor, nll: torch.Tensor) -> dict:
    n = len(nll)
    return {
        "nelbo": float(nelbo.mean()),
        "nll": float(nll.mean()),
        "nll_stderr": float(nll.std() / math.sqrt(n)) if n > 1 else None,
        "n": n,
    }


def score(task_model, images: torch.Tensor, samples: int = 1024, device="cpu") -> dict:
    """Mean −ELBO and −log p(x) of images under one fixed model, with the standard error."""
    return summary(*per_image(task_model, images, samples, device))


def compare(
    program, loc, scale, images: torch.Tensor, vae=None, samples: int = 1024, seed: int = 0
) -> list[dict]:
    """`score` rows of `images` under the few-shot model q(u) = N(loc, scale), the prior-mean model
    θ(E[u]) and, given, a VAE run's program, each scored from the same random state."""
    import pyro

    device = loc.device
    models = {
        "fewshot": program.conditioned_on(loc, scale),
        "prior-mean": program.conditioned_on(program.prior_mean_u().to(device), torch.ones_like(scale)),
    }
    if vae is not None:
        models["vae"] = vae.conditioned(None)
    rows = []
    for name, task_model in models.items():
        pyro.set_rng_seed(seed)
        rows.append({"model": name, **score(task_model, images, samples, device)})
    return rows


@torch.no_grad()
def sample_means(program, u: torch.Tensor, n: int = 10, seed: int = 0, shots=None) -> torch.Tensor:
    """`HyperVAEProgram.sample_models` from the noise of `seed`, on the CPU: (models, n, 1, 28, 28)."""
    return program.sample_models(u, n, torch.Generator().manual_seed(seed), shots).cpu()


def save_samples(program, loc, path: Path, title: str, shots: int, seed: int = 0) -> None:
    """Ten samples (Bernoulli means) of the few-shot model θ(ū) above ten of θ(E[u]), same noise."""
    from .samples import save_grid

    means = sample_means(program, torch.cat([loc, program.prior_mean_u().to(loc.device)]), 10, seed)
    save_grid(
        means,
        [f"θ(ū), {shots} shot(s)", "θ(E[u]), the prior mean"],
        None,
        path,
        f"{title}: samples (Bernoulli means)",
    )


def check_exportable(program) -> None:
    """A ValueError where the program's few-shot model is not a plain VAE θ(ū)."""
    if not program.task_latent:
        raise RequestError(f"a {program.config.model} run has no task latent u: use a hypervae run")
    if program.config.reads_shots:
        raise RequestError(
            f"this run's p(z) reads its shots (--z-prior {program.config.z_prior}), so its few-shot model "
            "is no plain VAE: score it with `fewshot-curve`"
        )


def given_shots(program, images, task: str | None, shots: int, tests, invert=None, seed=0, data_root=None):
    """The shots, the test images (None: none) and a description, from image files and folders
    (`images`, `tests`: `load_images`) or from a task of the run's test data (`task_shots`: `shots`
    of its images, the others the test images), whichever is given. A ValueError says what is
    wrong."""
    if task is not None:
        shot_images, test_images, described = task_shots(
            program.config.load_data("test", data_root), task, shots, seed
        )
    else:
        shot_images, names = load_images(images, invert)
        test_images, described = None, f"{len(names)} image file(s)"
    if tests:
        test_images = load_images(tests, invert)[0]
    return shot_images, test_images, described


def row_lines(rows: list[dict], samples: int) -> list[str]:
    """`compare`'s rows, a line each."""
    return [
        f"  {row['model']:<10}  -ELBO {row['nelbo']:.2f}  -log p(x) {row['nll']:.2f} ± "
        f"{row['nll_stderr'] or 0:.2f}  (n={row['n']}, K={samples})"
        for row in rows
    ]


def vae_of(program, u: torch.Tensor):
    """A plain VAE program whose encoder and decoder weights are θ(u), u (u_dim,)."""
    check_exportable(program)
    config = program.config
    vae = build(
        RunConfig(
            model="vae",
            dataset=config.dataset,
            split=config.split,
            task_by=config.task_by,
            z_dim=config.z_dim,
            hidden=config.hidden,
            seed=config.seed,
            pixel_bias=config.pixel_bias,
            train_tasks=config.train_tasks,
        )
    )
    with torch.no_grad():
        encoder = {k: v.detach().cpu() for k, v in program.theta.encoder(u).items()}
        decoder = {k: v.detach().cpu() for k, v in program.theta.decoder(u).items()}
        if "zprior.loc" in decoder:
            _fold_z_prior(encoder, decoder)
        vae.inference.encoder.load_state_dict(encoder)
        vae.decoder.load_state_dict(decoder)
    return vae


def _fold_z_prior(encoder: dict, decoder: dict) -> None:
    """Rewrite a model with p(z) = N(m, s) as the same model in ε = (z − m) / s, with p(ε) = N(0, I)."""
    m, log_s = decoder.pop("zprior.loc"), decoder.pop("zprior.log_scale")
    s = log_s.exp()
    w, b = decoder["fc1.weight"], decoder["fc1.bias"]
    decoder["fc1.weight"], decoder["fc1.bias"] = w * s, b + w @ m
    encoder["loc.weight"] = encoder["loc.weight"] / s[:, None]
    encoder["loc.bias"] = (encoder["loc.bias"] - m) / s
    encoder["logvar.bias"] = encoder["logvar.bias"] - 2 * log_s


def write_task_model(
    program, step: int, loc, scale, out: Path, about: dict, test_images=None, vae=None, samples=1024, seed=0
) -> dict:
    """The few-shot model θ(ū) of q(u | shots) = N(loc, scale) into `out`: the model as a VAE run
    folder (`out/model`), its samples (`out/samples.png`) and `out/fewshot.json`, whose content is
    returned: `about` (what the shots were), ū and its scale and, with `test_images`, their scores
    under θ(ū), θ(E[u]) and a `vae` (`compare`)."""
    about = {**about, "u_loc": loc[0].tolist(), "u_scale": scale[0].tolist()}
    save_model(program, loc, out / "model", step, about)
    save_samples(
        program, loc, out / "samples.png", f"few-shot model of {about['source']}", about["shots"], seed
    )
    result = dict(about, rows=[])
    if test_images is not None:
        result["rows"] = compare(program, loc, scale, test_images, vae, samples, seed)
    atomic_write_text(out / "fewshot.json", json.dumps(result, indent=2) + "\n")
    return result


def save_model(program, u: torch.Tensor, out: Path, step: int, about: dict) -> Path:
    """Write θ(u) as a run folder of a plain VAE (config.json, checkpoint.pt); returns the folder."""
    from .train import CHECKPOINT, CONFIG

    vae = vae_of(program, u.reshape(-1))
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(
        out / CHECKPOINT,
        {
            "config": vae.config.to_dict(),
            "step": step,
            "seconds": 0.0,
            "program": vae.state_dict(),
            "fewshot": about,
        },
    )
    vae.config.save(out / CONFIG)
    return out


def load_images(paths, invert: bool | None = None) -> tuple[torch.Tensor, list[str]]:
    """Image files, or folders of them, as binary 28x28 images (n, 1, 28, 28) and their names,
    processed as the images of a folder dataset are (`folders`): gray, padded square, box-filtered
    to 28x28, inverted when they are mostly light at their border (unless `invert` says), and
    statically binarized keyed by the file's bytes, so the same file always gives the same bits."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
            )
            if not found:
                raise RequestError(f"{p}: no image files in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise RequestError(f"{p}: no such file or folder")
    try:
        read = [read_image(f) for f in files]
    except DataError as e:
        raise RequestError(str(e)) from None
    borders = np.array([r[1] for r in read])
    bits = to_bits(
        np.stack([r[0] for r in read]), [r[2] for r in read], polarity(borders) if invert is None else invert
    )
    return bits, [str(f) for f in files]


# --- the benchmark: conditional −log p(x | k other images of its task) ---------------------------


def result_shots(model: str) -> int:
    """The shots of a curve's model named `model` ("k=3": 3; the models of no shots: 0)."""
    return int(model[2:]) if model.startswith("k=") else 0


@dataclass
class Curve:
    """Per-image scores of a benchmark: `nelbo[m]` and `nll[m]` (n,) under each model m, named by
    `models` (`"k=3"`: θ(ū) from 3 other images of the task; `ZERO_SHOT`'s names for k = 0; `"vae"`
    for a model without u), and the task of each scored image."""

    models: list[str]
    nelbo: dict[str, torch.Tensor]
    nll: dict[str, torch.Tensor]
    task: torch.Tensor
    task_names: list[str]
    samples: int

    shots_of = staticmethod(result_shots)

    def rows(self) -> list[dict]:
        """One row per model: {model, shots, nelbo, nll, nll_stderr, n}."""
        return [
            {"model": m, "shots": self.shots_of(m), **summary(self.nelbo[m], self.nll[m])}
            for m in self.models
        ]

    def paired(self, a: str, b: str, other: Curve | None = None) -> tuple[float, float]:
        """Mean of −log p under `a` minus under `b` (of `other`'s, given: the same images), with the
        standard error of that paired difference."""
        d = self.nll[a] - (other or self).nll[b]
        return float(d.mean()), float(d.std() / math.sqrt(len(d))) if len(d) > 1 else float("nan")

    def set_figure(self, zero: str = "training-mean") -> float | None:
        """Mean of the 0- to 4-shot conditionals (`SET_SIZE`), k = 0 by the model `zero`; None
        where a shot count is missing."""
        wanted = [zero] + [f"k={k}" for k in range(1, SET_SIZE)]
        if not all(m in self.nll for m in wanted):
            return None
        return float(torch.stack([self.nll[m] for m in wanted]).mean())


def curve_plan(data, shots, per_task: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which images are scored and which shots each gets: for every task, `per_task` random images
    (all, where it has fewer), each with the other images of its task in a random order of its own,
    of which its k-shot model reads the first k, so a model of more shots reads those of fewer and
    more. Returns the scored indices (n,), their shot pools (n, max k) and tasks (n,).

    A task must have more images than the most shots asked, and at least two."""
    most = max(shots)
    g = torch.Generator().manual_seed(seed)
    scored, pools, tasks = [], [], []
    for t, members in enumerate(data.task_members()):
        if len(members) < 2 or len(members) <= most:
            raise RequestError(
                f"task {data.task_names[t]!r} of {data.name} has {len(members)} image(s): "
                f"{most} shot(s) and an image to score need {max(most + 1, 2)}"
            )
        order = members[torch.randperm(len(members), generator=g)]
        for j in range(min(per_task, len(members))):
            others = torch.cat([order[:j], order[j + 1 :]])
            pools.append(others[torch.randperm(len(others), generator=g)][:most])
            scored.append(order[j])
            tasks.append(t)
    return torch.stack(scored), torch.stack(pools), torch.tensor(tasks)


@torch.no_grad()
def training_mean_u(program, train_data, seed: int = 0) -> torch.Tensor:
    """The mean over the training tasks of ū_t, each task's from up to `CONTEXT_SIZE` random
    images of it as shots, (1, u_dim): the model of a typical training task."""

    g = torch.Generator().manual_seed(seed)
    locs = []
    for members in train_data.task_members():
        pick = members[torch.randperm(len(members), generator=g)[:CONTEXT_SIZE]]
        loc, _ = program.inference.shots_posterior(
            train_data.images[pick].float().unsqueeze(0).to(program.device)
        )
        locs.append(loc)
    return torch.cat(locs).mean(0, keepdim=True)


@torch.no_grad()
def shots_posteriors(program, source: torch.Tensor, pools: torch.Tensor, combine="product", chunk: int = 50):
    """q(u | shots) of every scored image, its shots the images `source[pools[i]]` (pools (n, k)):
    location and scale, each (n, u_dim), read `chunk` images at a time."""
    parts = [
        program.inference.shots_posterior(source[pools[i : i + chunk]].float().to(program.device), combine)
        for i in range(0, len(pools), chunk)
    ]
    return tuple(torch.cat(p) for p in zip(*parts))


def refined_posteriors(
    program, source, pools, posterior, steps: int, seed: int = 0, chunk: int = 50, loo: bool = False
):
    """`posterior` (location and scale, each (n, u_dim)), q(u) of each image's shots `source[pools[i]]`
    (pools (n, k)), refined by `refine` on those shots (`loo`: each scored among the others), `chunk`
    images' tasks at a time, from the random state `seed`: the same posteriors for the same call."""
    import pyro

    pyro.set_rng_seed(seed)
    parts = [
        refine(
            program,
            source[pools[i : i + chunk]].float().to(program.device),
            *(p[i : i + chunk] for p in posterior),
            steps,
            loo=loo,
        )
        for i in range(0, len(pools), chunk)
    ]
    return tuple(torch.cat(p) for p in zip(*parts))


@torch.no_grad()
def scores_given_shots(
    program, images, posterior=None, source=None, pools=None, samples=1024, seed=0, chunk=50, done=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """−ELBO and importance-sampled −log p(x), each (n,), of images (n, 1, 28, 28), each under a model
    of its own: θ(u) of q(u) = `posterior` (location and scale, each (n, u_dim)), whose p(z) reads
    the image's shots `source[pools[i]]` where it reads shots (pools (n, k), k ≥ 0); with no
    `posterior`, under the program's one model (a VAE). Scored from the random state `seed`, `chunk`
    images at a time, `done(images)` called after each."""
    import pyro

    device = program.device
    pyro.set_rng_seed(seed)
    nelbo, nll = [], []
    for i in range(0, len(images), chunk):
        batch = images[i : i + chunk]
        x = batch.float().to(device)
        if posterior is None:
            task_model, x = program.conditioned(None), x.unsqueeze(0)
        else:
            shots = source[pools[i : i + chunk]].float().to(device) if pools.shape[1] else None
            task_model = program.conditioned_on(*(p[i : i + chunk] for p in posterior), shots=shots)
            x = x.unsqueeze(1)
        # an addressing template decodes every image once for each address (its shots and none)
        per_pass = (
            32768 // (pools.shape[1] + 1)
            if posterior is not None and program.theta.template in ADDRESSED
            else 32768
        )
        s = importance_scores(task_model.model, task_model.guide, x, samples, max_images=per_pass)
        nelbo.append((s["recon"] + s["kl_z"]).reshape(-1).cpu())
        nll.append(-s["log_p"].reshape(-1).cpu())
        if done is not None:
            done(len(batch))
    return torch.cat(nelbo), torch.cat(nll)


def _fingerprint(program, images: torch.Tensor) -> str:
    """SHA-256 of the program's weights and of the task images (those scored and their shots):
    stored scores are read back only for the very model and images they were scored on, not for a
    run trained on or anew in the same folder, nor for another dataset of as many images."""
    h = hashlib.sha256()
    for name, t in sorted(program.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(images.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _stored_scores(store: Path | None, plan: dict) -> dict:
    """The models' scores that `store` keeps for this `plan`, by model name; none where the file is
    missing, unreadable or of another plan (it is then written anew)."""
    if store is None or not Path(store).exists():
        return {}
    try:
        kept = torch.load(store, weights_only=True)
        same = kept["plan"].keys() == plan.keys() and all(
            torch.equal(v, kept["plan"][k]) if torch.is_tensor(v) else v == kept["plan"][k]
            for k, v in plan.items()
        )
    except Exception:  # a damaged or foreign file is a cache miss, never a wrong score
        return {}
    return dict(kept["scores"]) if same else {}


@torch.no_grad()
def curve(
    program,
    data,
    shots=SHOTS,
    per_task: int = 4,
    samples: int = 1024,
    seed: int = 0,
    train_data=None,
    combine: str = "product",
    chunk: int = 50,
    progress: bool = True,
    store: Path | None = None,
    refine_steps: int = 0,
    refine_loo: bool = False,
) -> Curve:
    """The benchmark on `data`, tasks the program never trained on: each scored image (`curve_plan`)
    gets −ELBO and importance-sampled −log p(x) (`samples` draws) under the model of each k in
    `shots`, made from k other images of its task (never itself); k = 0 under θ(E[u]) and, given
    `train_data`, θ(mean training-task ū). A program without u has one model, scored once. With
    `refine_steps`, q(u | k shots) is refined by that many Adam steps on the shots' ELBO (`refine`)
    before its model is scored: semi-amortized inference, the hyper-encoder's estimate its start;
    with `refine_loo` on each shot scored among the others (`refine`'s `loo`).

    With `store` (a file), each model's scores are written there as soon as they are done, and a
    later call with the same weights, images, shots and settings reads them back instead of scoring
    them again: a benchmark of hours stopped part way goes on where it stopped. Each model is scored
    from the random state `seed` alone, so a resumed curve is the one an unbroken call gives."""
    from tqdm import tqdm

    device = program.device
    index, pools, tasks = curve_plan(data, shots, per_task, seed)
    images = data.images[index].float()
    plan = {"index": index, "pools": pools, "samples": samples, "seed": seed, "combine": combine}
    if refine_steps and program.task_latent:  # absent otherwise, so that earlier stores still match
        plan["refine_steps"] = refine_steps
        if refine_loo:
            plan["refine_loo"] = True
    if store is not None:
        plan["fingerprint"] = _fingerprint(program, data.images)
    kept = _stored_scores(store, plan)
    posteriors = {}  # model name -> (loc, scale), each (n, u_dim)
    if program.task_latent:
        n = len(index)
        for k in sorted(shots):
            if k == 0:
                ones = torch.ones(n, program.config.u_dim, device=device)
                if train_data is not None:
                    posteriors["training-mean"] = (
                        training_mean_u(program, train_data, seed).expand(n, -1),
                        ones,
                    )
                posteriors["prior-mean"] = (program.prior_mean_u().to(device).expand(n, -1), ones)
                continue
            posteriors[f"k={k}"] = shots_posteriors(program, data.images, pools[:, :k], combine, chunk)
    else:
        posteriors["vae"] = None
    nelbo, nll = {}, {}
    bar = tqdm(
        total=len(posteriors) * len(images),
        desc=f"few-shot curve ({samples} samples)",
        unit="img",
        disable=not progress,
    )
    for name, posterior in posteriors.items():
        if name in kept:
            nelbo[name], nll[name] = kept[name]
            bar.update(len(images))
            continue
        k = result_shots(name)
        if refine_steps and k:
            bar.set_description(f"refining q(u) of {name} ({refine_steps} steps)")
            posterior = refined_posteriors(
                program, data.images, pools[:, :k], posterior, refine_steps, seed, chunk, refine_loo
            )
            bar.set_description(f"few-shot curve ({samples} samples)")
        nelbo[name], nll[name] = scores_given_shots(
            program, images, posterior, data.images, pools[:, :k], samples, seed, chunk, bar.update
        )
        if store is not None:
            kept[name] = (nelbo[name], nll[name])
            Path(store).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(store) as tmp:
                torch.save({"plan": plan, "scores": kept}, tmp)
    bar.close()
    return Curve(list(posteriors), nelbo, nll, tasks, data.task_names, samples)


def curve_report(result: Curve, vae: Curve | None = None) -> dict:
    """What a benchmark says: a row per model; the change of −log p from each shot count to the
    next (k = 0 by θ(mean training-task ū) where scored, else θ(E[u])) with the standard error of
    the paired difference; the set figure; and, given the VAE's curve on the same images, each
    model's gain over it (VAE minus model, paired)."""
    rows = result.rows()
    curve_models = [m for m in result.models if m.startswith("k=")]
    zero = next((m for m in ZERO_SHOT if m in result.nll), None)
    chain = ([zero] if zero else []) + curve_models
    changes = []
    for a, b in itertools.pairwise(chain):
        change, stderr = result.paired(b, a)
        changes.append(
            {
                "from": result.shots_of(a),
                "to": result.shots_of(b),
                "change": change,
                "stderr": stderr,
                "falls": change < 0 and -change > stderr,
            }
        )
    report = {
        "rows": rows,
        "changes": changes,
        "set_figure": result.set_figure(zero) if zero else None,
        "set_zero_shot": zero,
    }
    if vae is not None:
        report["vae"] = vae.rows()[0]
        report["gains"] = []
        for m in result.models:
            gain, stderr = vae.paired("vae", m, result)
            report["gains"].append({"model": m, "shots": result.shots_of(m), "gain": gain, "stderr": stderr})
        if report["set_figure"] is not None:
            report["set_gain"] = float(vae.nll["vae"].mean()) - report["set_figure"]
    return report


def curve_lines(report: dict) -> list[str]:
    """The report as text: a line per model, the step from the previous shot count, the gain over
    the VAE."""
    gains = {g["model"]: g for g in report.get("gains", [])}
    changes = {s["to"]: s for s in report["changes"]}
    lines = [
        (
            f"  {'model':<14} {'shots':>5} {'-ELBO':>8} {'-log p(x)':>17}  {'vs fewer shots':>16}"
            f"  {'gain over VAE':>15}"
        )
    ]
    for r in report["rows"]:
        step = changes.get(r["shots"]) if r["model"].startswith("k=") else None
        step = f"{step['change']:+.2f} ± {step['stderr']:.2f}" if step else ""
        gain = gains.get(r["model"])
        gain = f"{gain['gain']:+.2f} ± {gain['stderr']:.2f}" if gain else ""
        lines.append(
            f"  {r['model']:<14} {r['shots']:>5} {r['nelbo']:>8.2f} {r['nll']:>8.2f}"
            f" ± {r['nll_stderr'] or 0:<6.2f}  {step:>16}  {gain:>15}"
        )
    if "vae" in report:
        v = report["vae"]
        lines.append(
            f"  {'vae':<14} {'':>5} {v['nelbo']:>8.2f} {v['nll']:>8.2f} ± {v['nll_stderr'] or 0:<6.2f}"
        )
    if report["set_figure"] is not None:
        gain = f", {report['set_gain']:+.2f} over the VAE" if "set_gain" in report else ""
        lines.append(
            f"  set of {SET_SIZE} (mean of the 0- to {SET_SIZE - 1}-shot conditionals, k = 0 by "
            f"{report['set_zero_shot']}): {report['set_figure']:.2f}{gain}"
        )
    return lines


def plot_curve(result: dict, label: str, path: Path) -> None:
    """One run's `run_curve` result as `plot_curves` draws it, titled by the data it scored."""
    title = f"{result['data']}: {result['tasks']} tasks never trained on, {result['images']} images"
    plot_curves({label: result}, path, title, result.get("vae", {}).get("nll"))


def plot_curves(
    curves: dict,
    path: Path,
    title: str,
    vae: float | None = None,
    published: dict | None = None,
    references: dict | None = None,
) -> None:
    """−log p(x) against shots: `curves` {label: report}, each model's k ≥ 1 points joined and its
    k = 0 models as open marks; `vae` a horizontal line, and one dotted line for each of
    `references` {label: −log p(x)} (other VAEs on the same images). With `published` {label: (shots, gains)},
    a second panel sets each model's gain over our VAE beside published gains over their own VAE,
    the comparison that does not depend on preprocessing."""
    plt = pyplot()

    fig, axes = plt.subplots(
        1, 2 if published else 1, figsize=(11.5 if published else 6.4, 4.2), squeeze=False
    )
    ax = axes[0, 0]
    # The scale follows the curves and the VAE; a k = 0 model far above them (θ(E[u]) often is)
    # is written at the top edge instead of squashing the rest.
    near = [r["nll"] for rep in curves.values() for r in rep["rows"] if r["model"] != "prior-mean"]
    near += ([vae] if vae is not None else []) + list((references or {}).values())
    top = max(near) + 0.1 * (max(near) - min(near)) + 1
    off = []
    for i, (label, report) in enumerate(curves.items()):
        color = f"C{i}"
        pts = [
            (r["shots"], r["nll"], r["nll_stderr"] or 0)
            for r in report["rows"]
            if r["model"].startswith("k=")
        ]
        if pts:
            k, y, e = zip(*pts)
            ax.errorbar(k, y, yerr=e, color=color, marker="o", ms=4, capsize=2, label=label)
        for r in report["rows"]:
            if r["model"] == "vae":  # a VAE run's curve: one model, whatever the shots
                ax.axhline(r["nll"], color=color, lw=1, label=f"{label} (reads no shots)")
            if r["model"] in ZERO_SHOT:
                ax.plot(
                    [0],
                    [min(r["nll"], top)],
                    color=color,
                    marker="s" if r["model"] == "training-mean" else "^",
                    fillstyle="none",
                    ms=6,
                    ls="none",
                )
                if r["nll"] > top:
                    off.append(f"{label}: {r['nll']:.1f}")
    if vae is not None:
        ax.axhline(vae, color="k", ls="--", lw=1, label="our VAE")
    dashes = (":", "-.", (0, (5, 2)), (0, (1, 3)))  # grey lines told apart by their dashes
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="0.4", ls=dashes[i % len(dashes)], lw=1, label=label)
    ax.set_ylim(top=top)
    if off:
        ax.text(0.01, 0.06, "θ(E[u]), off the scale: " + "; ".join(off), transform=ax.transAxes, fontsize=6)
    ax.set_xlabel("shots k (other images of the task the model is made from)")
    ax.set_ylabel("−log p(x | k shots), nats")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.text(0.01, 0.01, "k = 0: □ θ(mean training-task ū), △ θ(E[u])", transform=ax.transAxes, fontsize=7)
    if published:
        ax = axes[0, 1]
        for i, (label, report) in enumerate(curves.items()):
            pts = [
                (g["shots"], g["gain"], g["stderr"])
                for g in report.get("gains", [])
                if g["model"].startswith("k=")
            ]
            if pts:
                k, y, e = zip(*pts)
                ax.errorbar(k, y, yerr=e, color=f"C{i}", marker="o", ms=4, capsize=2, label=label)
        for j, (label, (k, y)) in enumerate(published.items()):
            ax.plot(k, y, marker="x", ls=":", color=f"C{len(curves) + j}", label=label)
        ax.axhline(0, color="k", ls="--", lw=1)
        ax.set_xlabel("shots k")
        ax.set_ylabel("gain over the VAE trained on the same tasks, nats")
        ax.set_title("gains over each model's own VAE", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def unseen_tasks(config, part: str, root=None, folder=None, invert=None):
    """The tasks of a run's data part (or of an image folder) that the run never trained on; a
    ValueError where there are none."""
    from . import folders

    if folder is not None:
        data = folders.scan(folder).every_image(invert)
    else:
        if config.train_tasks is None:  # a config not read from a run folder: every task would pass as new
            raise RequestError("this config records no training tasks: use the run's own (RunConfig.load)")
        data = config.load_data(part, root)
    seen = [n for n in data.task_names if n in set(config.train_tasks or [])]
    if len(seen) == data.num_tasks:
        where = str(folder) if folder is not None else f"the {part} part of {config.dataset}"
        raise RequestError(
            f"{where} holds no task the run was not trained on: train with --exclude-classes or "
            f"(omniglot) --split background, or give a folder of new tasks with --dataset"
        )
    return data.without_tasks(seen) if seen else data


def run_curve(
    program,
    step: int,
    split: str = "test",
    folder=None,
    shots=SHOTS,
    per_task: int = 4,
    samples: int = 1024,
    seed: int = 0,
    combine: str = "product",
    data_root=None,
    vae=None,
    progress: bool = True,
    keep_in: Path | None = None,
    refine_steps: int = 0,
) -> dict:
    """`curve` of a run on its tasks never trained on (`unseen_tasks`), with the VAE's on the same
    images given one, as the dict `fewshot-curve` writes (`curve_report` and what was scored). With
    `keep_in` (a folder), each model's scores are kept there as they are done (`scores-run.pt`,
    `scores-vae.pt`), so the same call stopped part way resumes. `refine_steps`: `curve`'s, the run's
    alone (the VAE has no q(u))."""
    config = program.config
    if refine_steps and not program.task_latent:
        raise RequestError(f"--refine-steps refines q(u | shots): a {config.model} run has no u")
    data = unseen_tasks(config, split, data_root, folder, config.invert if config.is_folder else None)
    train_data = config.load_data("train", data_root) if program.task_latent and 0 in shots else None
    stores = (
        (None, None)
        if keep_in is None
        else (Path(keep_in) / "scores-run.pt", Path(keep_in) / "scores-vae.pt")
    )
    result = curve(
        program,
        data,
        shots,
        per_task,
        samples,
        seed,
        train_data,
        combine,
        progress=progress,
        store=stores[0],
        refine_steps=refine_steps,
    )
    vae_curve = (
        curve(vae, data, shots, per_task, samples, seed, progress=progress, store=stores[1])
        if vae is not None
        else None
    )
    return {
        "model": config.model,
        "guide": config.guide if program.task_latent else None,
        "step": step,
        "data": data.name if folder is None else str(folder),
        "tasks": data.num_tasks,
        "images": len(result.task),
        "per_task": per_task,
        "samples": samples,
        "seed": seed,
        "shots": list(shots),
        "combine": combine if program.task_latent and program.inference.one_draw else None,
        "refine_steps": refine_steps,
        **curve_report(result, vae_curve),
    }


def leave_one_out(shots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tasks of k ≥ 2 shots (tasks, k, 1, 28, 28) as tasks × k rows of one scored shot each, (tasks ·
    k, 1, 1, 28, 28), and the k − 1 other shots of its task, (tasks · k, k − 1, 1, 28, 28): row t·k + i
    is shot i of task t."""
    tasks, k = shots.shape[:2]
    others = torch.stack([torch.cat([shots[:, :i], shots[:, i + 1 :]], 1) for i in range(k)], 1)
    return shots.reshape(tasks * k, 1, *shots.shape[2:]), others.reshape(tasks * k, k - 1, *shots.shape[2:])


def refine(
    program,
    shots: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    steps: int = 50,
    lr: float = REFINE_LR,
    loo: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q(u) of tasks of k shots each (tasks, k, 1, 28, 28), refined by `steps` Adam steps on the
    shots' ELBO (`Trace_ELBO` of the program's model and guide, q(u) = N(loc, scale) free), from
    the amortized (loc, scale), each (tasks, u_dim): semi-amortized inference (Kim et al. 2018),
    which reads k shots as k observations of the task however the guide was trained to read them.
    The program's weights stay as they are.

    Where p(z) reads shots, the shots' ELBO scores them under the model of none. With `loo`, each
    shot is scored as the k-shot model scores a new image, under p(z | u, shots) of the k − 1 others
    (`leave_one_out`), KL(u) counted once per task: the objective of the model that will be used."""
    from pyro.infer import Trace_ELBO

    kwargs, rows = {}, 1  # rows: how many rows of `shots` each task's q(u) scores
    if loo and program.shot_prior is not None and shots.shape[1] > 1:
        rows = shots.shape[1]
        shots, others = leave_one_out(shots)
        kwargs = {"shots": others, "kl_u_weight": 1.0 / rows}
    loc = loc.detach().clone().requires_grad_()
    log_scale = scale.detach().log().clone().requires_grad_()
    optimizer = torch.optim.Adam([loc, log_scale], lr=lr)
    elbo = Trace_ELBO(max_plate_nesting=2)
    frozen = [p for p in program.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                q_u = (loc.repeat_interleave(rows, 0), log_scale.exp().repeat_interleave(rows, 0))
                loss = elbo.differentiable_loss(program.model, program.guide, shots, q_u=q_u, **kwargs)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return loc.detach(), log_scale.detach().exp()
