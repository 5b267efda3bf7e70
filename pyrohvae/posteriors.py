"""Task posteriors q(u | d_t) as an ArviZ InferenceData, and pictures of them.

The posterior group holds draws of u from q(u | d_t) for every test task (dims chain, draw, task,
u_dim; one chain, since variational draws are independent), with d_t chosen as the density
protocol chooses it (`pyrohvae.evaluate`). A sibling group `task_stats` holds, per task,
KL(q(u | d_t) || p(u)), the mean −ELBO of the task's data under θ(ū), and their number.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import xarray as xr

with warnings.catch_warnings():  # arviz 0.23 announces its 1.x rewrite on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from .evaluate import evaluate
from .files import RequestError, atomic_path, pyplot, save_figure


def task_posteriors(program, data, draws=500, seed=0, samples=16, limit=None, progress=True):
    """InferenceData of u for every task of `data` (HyperVAE runs only); the per-task −ELBO over
    all of a task's data, or about limit / tasks of them."""
    scores = evaluate(program, data, samples=samples, mode="task", limit=limit, seed=seed, progress=progress)
    if scores.u_loc is None:
        raise RequestError(f"a {program.config.model} run has no task latent u to inspect")
    tasks = torch.unique(scores.task)  # tasks with data, in the order evaluate scored them
    names = [data.task_names[t] for t in tasks.tolist()]
    eps = torch.randn(draws, *scores.u_loc.shape, generator=torch.Generator().manual_seed(seed))
    u = scores.u_loc + scores.u_scale * eps  # draws from q(u | d_t), (draw, task, u_dim)
    nelbo = torch.stack([scores.nelbo[scores.task == t].mean() for t in tasks])
    n = torch.stack([(scores.task == t).sum() for t in tasks])
    coords = {"task": names, "u_dim": np.arange(u.shape[-1])}
    config = program.config
    idata = az.from_dict(
        posterior={"u": u[None].numpy()},
        coords=coords,
        dims={"u": ["task", "u_dim"]},
        attrs={
            "inference": "SVI",
            "model": config.model,
            "guide": config.guide,
            "prior": config.prior,
            "dataset": config.dataset,
            "data": data.name,
        },
    )
    stats = xr.Dataset(
        {
            "kl_u": ("task", scores.kl_u.numpy()),
            "nelbo": ("task", nelbo.numpy()),
            "n": ("task", n.numpy()),
            "u_loc": (("task", "u_dim"), scores.u_loc.numpy()),
            "u_scale": (("task", "u_dim"), scores.u_scale.numpy()),
        },
        coords=coords,
    )
    idata.add_groups({"task_stats": stats})
    return idata


def save_netcdf(idata, path: Path) -> None:
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp))


def forest_plot(idata, path: Path, max_tasks: int = 12) -> None:
    """Forest plot of u by task (the first `max_tasks` tasks; every u dimension)."""
    names = list(idata.posterior.task.values)[:max_tasks]
    pyplot()  # a backend that needs no display, before arviz draws
    axes = az.plot_forest(
        idata, var_names=["u"], coords={"task": names}, combined=True, figsize=(7, 0.22 * 10 * len(names) + 1)
    )
    axes[0].set_title(f"q(u | d_t) by task ({idata.attrs.get('guide')} guide): 94% HDI", fontsize=9)
    save_figure(axes[0].figure, path, bbox_inches="tight")


def pca_map(idata, path: Path) -> None:
    """The tasks' posterior means in the plane of their first two principal components."""
    from sklearn.decomposition import PCA

    loc = idata.task_stats.u_loc.values
    names = list(idata.task_stats.task.values)
    k = min(2, *loc.shape)
    xy = PCA(n_components=k).fit_transform(loc) if len(loc) > 1 else np.zeros((1, 2))
    if xy.shape[1] == 1:
        xy = np.concatenate([xy, np.zeros_like(xy)], 1)
    fig, ax = pyplot().subplots(figsize=(7, 6))
    kl = idata.task_stats.kl_u.values
    points = ax.scatter(xy[:, 0], xy[:, 1], c=kl, cmap="viridis")
    for (px, py), name in zip(xy, names):
        ax.annotate(str(name)[:18], (px, py), fontsize=6, xytext=(2, 2), textcoords="offset points")
    fig.colorbar(points, ax=ax, label="KL(q(u|d_t) || p(u)), nats")
    ax.set_xlabel("PC 1 of E[u | d_t]")
    ax.set_ylabel("PC 2")
    ax.set_title(f"tasks of {idata.attrs.get('data')} by their posterior mean", fontsize=9)
    save_figure(fig, path, bbox_inches="tight")


def summary(idata):
    return az.summary(idata, kind="stats")
