"""Novelty discovery (paper §3.6, Eq. 9; §4.3): search the latent spaces of a trained model for the
design closest to a target exemplar, by Bayesian optimisation with BoTorch.

The objective is the cosine similarity between a generated design (the Bernoulli mean image) and
the target. Modes:
- `vae`: search z of a VAE (10 dims);
- `joint`: search u and z of a HyperVAE together (20 dims): the model θ(u) and the design in it;
- `iterative`: Eq. 9. d_1 = an empty image; at step t, u_t = the mean of q(u | d_t), θ_t = θ(u_t),
  BO over z for the fixed θ_t, x*_t its best design, d_{t+1} = x*_t. The evaluation budget is
  shared out evenly over the steps, so every mode spends the same number of evaluations.
Random search with the same budget, through the same mode, runs beside BO as the floor.

The BO loop: a `SingleTaskGP` on inputs normalised from the box [−5, 5]^d and standardised
outcomes, fitted with `fit_gpytorch_mll`, `LogExpectedImprovement` maximised by `optimize_acqf`,
started from a Sobol design; in float64. Refitting the GP from scratch every iteration dominates
the cost, so each fit starts from the previous iteration's hyperparameters and stops after a few
steps, with a full refit every `refit_every` iterations.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import some_tasks
from .files import OptionError, RequestError, atomic_write_text, pyplot, save_figure

BOX = 5.0
MODES = ("vae", "joint", "iterative")


@dataclass
class SearchTrace:
    """Every evaluation of one search, in order."""

    points: torch.Tensor  # (n, d)
    values: torch.Tensor  # (n,)
    seconds_per_iteration: list[float] = field(default_factory=list)  # BO only, after the start

    @property
    def best_so_far(self) -> torch.Tensor:
        return torch.cummax(self.values, 0).values

    @property
    def best(self) -> tuple[torch.Tensor, float]:
        i = int(self.values.argmax())
        return self.points[i], float(self.values[i])


def bounds(dim: int) -> torch.Tensor:
    return torch.tensor([[-BOX] * dim, [BOX] * dim], dtype=torch.float64)


def bayes_opt(
    objective,
    dim: int,
    budget: int,
    seed: int = 0,
    n_init: int | None = None,
    refit_every: int = 20,
    warm_start: bool = True,
    warm_fit_steps: int = 20,
    num_restarts: int = 10,
    raw_samples: int = 512,
    acq_maxiter: int = 50,
    on_eval=None,
) -> SearchTrace:
    """Maximise `objective` (a batch of points (n, dim) float64 -> values (n,)) over the box with
    `budget` evaluations, the first `n_init` from a Sobol design (default: 2 * dim, at most a third
    of the budget)."""
    with warnings.catch_warnings():  # gpytorch's import warns about torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from botorch.acquisition import LogExpectedImprovement
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Normalize, Standardize
        from botorch.optim import optimize_acqf
        from botorch.utils.sampling import draw_sobol_samples
        from gpytorch.mlls import ExactMarginalLogLikelihood

    box = bounds(dim)
    n_init = min(budget, n_init or max(2, min(2 * dim, budget // 3)))
    X = draw_sobol_samples(box, n=n_init, q=1, seed=seed).squeeze(1)
    Y = objective(X).double()
    if on_eval:
        on_eval(n_init)
    previous = None
    seconds = []
    for i in range(budget - n_init):
        tic = time.perf_counter()
        gp = SingleTaskGP(
            X,
            Y.unsqueeze(-1),
            input_transform=Normalize(d=dim, bounds=box),
            outcome_transform=Standardize(m=1),
        )
        warm = warm_start and previous is not None and i % refit_every
        if warm:  # start from the last fit and take a few steps from there
            gp.load_state_dict(previous, strict=False)
        mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
        with warnings.catch_warnings():  # a fit stopped early warns; the next full refit repairs it
            warnings.simplefilter("ignore")
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": warm_fit_steps}} if warm else None)
        previous = {k: v for k, v in gp.state_dict().items() if "transform" not in k}
        acquisition = LogExpectedImprovement(gp, best_f=Y.max())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # L-BFGS-B capped at 50 iterations per restart: the same maximum here as with scipy's
            # 200, in a third of the time (benchmarks/RESULTS.md)
            candidate, _ = optimize_acqf(
                acquisition,
                box,
                q=1,
                num_restarts=num_restarts,
                raw_samples=raw_samples,
                options={"maxiter": acq_maxiter},
            )
        y = objective(candidate).double()
        X, Y = torch.cat([X, candidate]), torch.cat([Y, y])
        seconds.append(time.perf_counter() - tic)
        if on_eval:
            on_eval(1)
    return SearchTrace(X, Y, seconds)


def random_search(objective, dim: int, budget: int, seed: int = 0, on_eval=None) -> SearchTrace:
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(budget, dim, generator=g, dtype=torch.float64) * 2 - 1) * BOX
    Y = objective(X).double()
    if on_eval:
        on_eval(budget)
    return SearchTrace(X, Y)


def cosine(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(images.flatten(1), target.reshape(1, -1), dim=1)


class Designs:
    """Decodes points of a latent space into designs (Bernoulli mean images) of one program."""

    def __init__(self, program):
        self.program = program
        self.device = program.device
        self.z_dim, self.u_dim = program.config.z_dim, program.config.u_dim

    @torch.no_grad()
    def vae(self, X):
        z = X.float().to(self.device)
        return torch.sigmoid(self.program.sample_logits(z)).cpu()

    @torch.no_grad()
    def joint(self, X):
        X = X.float().to(self.device)
        u, z = X[:, : self.u_dim], X[:, self.u_dim :].unsqueeze(1)
        return torch.sigmoid(self.program.sample_logits(z, u))[:, 0].cpu()

    @torch.no_grad()
    def fixed(self, u, X):
        z = X.float().to(self.device).unsqueeze(0)
        return torch.sigmoid(self.program.sample_logits(z, u.reshape(1, -1).to(self.device)))[0].cpu()

    @torch.no_grad()
    def posterior_mean_u(self, d: torch.Tensor) -> torch.Tensor:
        """Mean of q(u | d) for one image d (1, 28, 28)."""
        return self.program.inference.posterior(d.reshape(1, 1, 1, 28, 28).to(self.device))[0][0].cpu()


def _search(kind, objective, dim, budget, seed, on_eval, **bo):
    if kind == "bo":
        return bayes_opt(objective, dim, budget, seed, on_eval=on_eval, **bo)
    return random_search(objective, dim, budget, seed, on_eval)


def discover(
    program,
    target: torch.Tensor,
    mode: str,
    budget: int = 300,
    steps: int = 5,
    seed: int = 0,
    search: str = "bo",
    on_eval=None,
    **bo,
) -> dict:
    """One search (`search` "bo" or "random") in one mode; the best design and cosine per step."""
    model = program.config.model
    if mode == "vae" and program.models_by_task:
        raise OptionError(f"--mode vae searches a vae run's z; this run is a {model}")
    if mode in ("joint", "iterative") and not program.task_latent:
        raise OptionError(f"--mode {mode} needs a hypervae run; this run is a {model}")
    designs = Designs(program)
    target = target.reshape(-1).float()
    tic = time.perf_counter()
    steps_out = []
    if mode in ("vae", "joint"):
        decode = designs.vae if mode == "vae" else designs.joint
        dim = designs.z_dim if mode == "vae" else designs.u_dim + designs.z_dim
        trace = _search(search, lambda X: cosine(decode(X), target), dim, budget, seed, on_eval, **bo)
        point, value = trace.best
        steps_out.append({"best_cosine": value, "design": decode(point.unsqueeze(0))[0], "trace": trace})
    else:
        d = torch.zeros(1, 28, 28)  # d_1: an empty image
        per_step = [budget // steps + (1 if t < budget % steps else 0) for t in range(steps)]
        for t, n in enumerate(per_step):
            u = designs.posterior_mean_u(d)
            trace = _search(
                search,
                lambda X, u=u: cosine(designs.fixed(u, X), target),
                designs.z_dim,
                n,
                seed + t,
                on_eval,
                **bo,
            )
            point, value = trace.best
            d = designs.fixed(u, point.unsqueeze(0))[0]  # x*_t, the next step's d
            steps_out.append({"best_cosine": value, "design": d, "trace": trace, "u": u})
    values = torch.cat([s["trace"].values for s in steps_out])
    seconds_per_iteration = [x for s in steps_out for x in s["trace"].seconds_per_iteration]
    return {
        "mode": mode,
        "search": search,
        "best_cosine": [s["best_cosine"] for s in steps_out],
        "designs": [s["design"] for s in steps_out],
        "best_so_far": torch.cummax(values, 0).values.tolist(),
        "evaluations": len(values),
        "seconds": time.perf_counter() - tic,
        "seconds_per_iteration": seconds_per_iteration,
    }


def load_target(path) -> torch.Tensor:
    """A target exemplar from an image file: gray levels in [0, 1], 28x28, strokes bright."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path).convert("L").resize((28, 28), Image.Resampling.BOX)
    except (UnidentifiedImageError, OSError) as e:
        raise RequestError(f"{path}: not a readable image ({e})") from None
    return torch.tensor(np.asarray(img), dtype=torch.float32).reshape(28, 28) / 255.0


def class_exemplar(test, name: str, seed: int = 0) -> tuple[torch.Tensor, int]:
    """A random test image of class `name` (chosen by `seed`), and its index."""
    if name not in test.task_names:
        raise RequestError(f"{test.name} has no class {name!r} (classes: {some_tasks(test.task_names)})")
    members = test.task_members()[test.task_names.index(name)]
    i = int(members[torch.randint(len(members), (1,), generator=torch.Generator().manual_seed(seed))])
    return test.images[i, 0].float(), i


def save_image(image: torch.Tensor, path) -> None:
    plt = pyplot()

    fig = plt.figure(figsize=(1, 1))
    fig.figimage(image.reshape(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
    save_figure(fig, path, bbox_inches="tight")


def save_designs(target, designs, path, title) -> None:
    """The target, then the best design of every step, with their cosine to the target."""
    plt = pyplot()

    images = [target.reshape(28, 28)] + [d.reshape(28, 28) for d in designs]
    fig, axes = plt.subplots(1, len(images), figsize=(1.3 * len(images), 1.7))
    for i, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        c = float(cosine(img.reshape(1, -1), target))
        ax.set_title("target" if i == 0 else f"step {i}\n{c:.3f}", fontsize=7)
    fig.suptitle(title, fontsize=8)
    save_figure(fig, path, bbox_inches="tight")


def trace_figure(traces: dict, path, title) -> None:
    """Best cosine so far against evaluations, one line per search."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, best in traces.items():
        ax.plot(range(1, len(best) + 1), best, label=label)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best cosine similarity so far")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    save_figure(fig, path, bbox_inches="tight")


def searches(program, target, mode, iterations, steps=1, seed=0, refit_every=20, progress=False) -> dict:
    """BO (`discover`) and random search with the same budget for the design closest to `target`,
    with a progress bar each: {"bo": ..., "random": ...}."""
    from tqdm import tqdm

    results = {}
    for search in ("bo", "random"):
        with tqdm(total=iterations, desc=f"{mode} {search}", unit="eval", disable=not progress) as bar:
            results[search] = discover(
                program,
                target,
                mode,
                iterations,
                steps,
                seed,
                search,
                on_eval=bar.update,
                refit_every=refit_every,
            )
    return results


def target_of(program, path=None, name: str | None = None, seed: int = 0, data_root=None):
    """The target exemplar and a description: an image file (`path`), or a random test image of
    the run's class `name` (`class_exemplar`). A ValueError says why not."""
    if path is not None:
        return load_target(path), str(path)
    image, index = class_exemplar(program.config.load_data("test", data_root), name, seed)
    return image, f"test image {index} of class {name}"


def describe(results: dict, summary: dict) -> str:
    """Two searches (`searches`) and what `write_searches` returned, in one line."""
    bo = results["bo"]
    return (
        f"{bo['mode']}: best cosine per step {', '.join(f'{v:.4f}' for v in bo['best_cosine'])}; random "
        f"search {summary['random_search_best']:.4f} ({bo['evaluations']} evaluations, {bo['seconds']:.0f} s)"
    )


def write_searches(results: dict, target, described: str, out: Path, about: dict) -> dict:
    """What `discover` writes of two searches (`searches`) into `out`: the best design of every BO
    step (each alone and in one figure with the target), the trace of both searches, and
    discovery.json, whose content is returned. `about`: the run, its model, the seed, refit_every."""
    bo, rnd = results["bo"], results["random"]
    model, mode = about["model"], bo["mode"]
    save_designs(target, bo["designs"], out / "designs.png", f"{model} {mode}: target, best per step")
    for t, design in enumerate(bo["designs"]):
        save_image(design, out / f"best_step{t + 1}.png")
    trace_figure(
        {"BO": bo["best_so_far"], "random search": rnd["best_so_far"]},
        out / "trace.png",
        f"{mode} search for {described}",
    )
    summary = {
        "run": about["run"],
        "model": model,
        "mode": mode,
        "target": described,
        "best_cosine": bo["best_cosine"],
        "random_search_best": max(rnd["best_so_far"]),
        "evaluations": bo["evaluations"],
        "seconds": round(bo["seconds"], 1),
        "random_search_seconds": round(rnd["seconds"], 1),
        "seed": about["seed"],
        "refit_every": about["refit_every"],
        "bo_best_so_far": bo["best_so_far"],
        "random_best_so_far": rnd["best_so_far"],
    }
    atomic_write_text(out / "discovery.json", json.dumps(summary, indent=2) + "\n")
    return summary
