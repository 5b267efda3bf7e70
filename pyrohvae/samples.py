"""Sample grids: what each task's model, and models drawn from the prior, generate."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid

from .files import RequestError, pyplot, save_figure


@torch.no_grad()
def sample_rows(program, test_data, columns=10, prior_rows=4, max_tasks=50, seed=0):
    """Rows of Bernoulli means, with a label and (for task rows) the draw d_t that chose θ.

    HyperVAE: one row per task, θ from the mean of q(u | d_t) for one random test draw d_t of the
    task (for a guide that reads a set: q(u | D_t), D_t up to 100 random test images of the task,
    d_t the first of them), then `prior_rows` rows with u ~ p(u). Every row decodes the same z's, so
    rows differ by their model only. MetaVAE: one row per training task's decoder. VAE: `prior_rows` rows of
    z ~ p(z).
    """
    # The prior's rows and a guide's random draw come from the global generators: seeded here, on a
    # copy of their state, so that the same seed gives the same grid and the caller's state is kept.
    device = program.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        if program.task_latent:
            return _model_space_rows(program, test_data, columns, prior_rows, max_tasks, g)
        z_dim = program.config.z_dim
        if program.models_by_task:  # a MetaVAE: a row per training task's decoder, z ~ p(z)
            names = program.config.train_tasks
            shown = _spread(len(names), max_tasks)
            z = torch.randn(columns, z_dim, generator=g).to(device)
            means = torch.stack([torch.sigmoid(program.sample_logits(z, t)) for t in shown])
            return means.cpu(), [names[t] for t in shown], None
        z = torch.randn(prior_rows, columns, z_dim, generator=g).to(device)
        return (
            torch.sigmoid(program.sample_logits(z)).cpu(),
            [f"z ~ p(z), row {i + 1}" for i in range(prior_rows)],
            None,
        )


def _spread(n: int, most: int) -> list[int]:
    """Up to `most` of 0 .. n - 1, spread evenly from the first to the last."""
    return torch.linspace(0, n - 1, min(most, n)).round().long().unique().tolist()


def _model_space_rows(program, test_data, columns, prior_rows, max_tasks, g):
    """A row per task of `test_data` (θ(ū), ū from a context of its test images), then `prior_rows`
    rows of u ~ p(u), all decoding the same z. A p(z) that reads shots reads a task's context as its
    shots, the same uniforms picking each column's component in every task row."""
    from .data import context_set
    from .models import shots_sample_logits

    z = torch.randn(columns, program.config.z_dim, generator=g).to(program.device)
    shown = _spread(len(test_data.task_members()), max_tasks)
    contexts = [context_set(test_data, t, g)[0] for t in shown]
    draws = torch.stack([c[:1] for c in contexts])  # (tasks, 1, 1, 28, 28): the first of each context
    if program.inference.one_draw:  # the paper's guide reads one draw: d_t, shown
        u_tasks = program.task_u(draws.to(program.device))
    else:  # a set guide reads the whole context, of which d_t is one
        u_tasks = torch.cat([program.task_u(c.unsqueeze(0).to(program.device)) for c in contexts])
    u = torch.cat([u_tasks, program.prior().sample((prior_rows,)).to(program.device)])
    labels = [test_data.task_names[t] for t in shown] + [f"u ~ p(u), row {i + 1}" for i in range(prior_rows)]
    means = torch.sigmoid(program.sample_logits(z, u))
    if program.shot_prior is not None:
        r = torch.rand(columns, generator=g).to(program.device)
        for i, c in enumerate(contexts):
            given = c.unsqueeze(0).to(program.device)
            logits = shots_sample_logits(program.theta, program.shot_prior, u_tasks[i : i + 1], given, z, r)
            means[i] = torch.sigmoid(logits)[0]
    return means.cpu(), labels, draws[:, 0].cpu()


@torch.no_grad()
def interpolation_rows(program, data, source: str, target: str, steps=8, columns=8, seed=0):
    """Models θ(u) along the line between two tasks' posterior means, one row each, all rows
    decoding the same z's. The means are those of q(u | d_t) with d_t chosen as the density
    protocol chooses it."""
    import pyro

    from .data import context_set

    if not program.task_latent:
        raise RequestError(f"a {program.config.model} run has no model space to walk: use a hypervae run")
    index = {name: i for i, name in enumerate(data.task_names)}
    for name in (source, target):
        if name not in index:
            known = ", ".join(data.task_names[:8]) + (", ..." if len(data.task_names) > 8 else "")
            raise RequestError(f"no task {name!r} in {data.name} (tasks: {known})")
    device = program.device
    pyro.set_rng_seed(seed)
    g = torch.Generator().manual_seed(seed)
    ends = [
        program.conditioned(context_set(data, index[name], g).to(device)).q_u.base_dist.loc[0]
        for name in (source, target)
    ]
    alphas = torch.linspace(0, 1, steps, device=device)
    u = (1 - alphas[:, None]) * ends[0] + alphas[:, None] * ends[1]
    z = torch.randn(columns, program.config.z_dim, generator=g).to(device)
    means = torch.sigmoid(program.sample_logits(z, u))
    labels = [f"{source}" if a == 0 else f"{target}" if a == 1 else f"α = {a:.2f}" for a in alphas.tolist()]
    return means.cpu(), labels


def save_grid(means, labels, draws, path: Path, title: str) -> None:
    plt = pyplot()
    rows, columns = means.shape[:2]
    blank = torch.ones(1, 1, 28, 28) * 0.5
    cells = []
    for r in range(rows):
        if draws is not None:
            cells.append(draws[r : r + 1] if r < len(draws) else blank)
        cells.append(means[r])
    grid = make_grid(torch.cat(cells), nrow=columns + (draws is not None), padding=2, pad_value=0.5)
    fig, ax = plt.subplots(figsize=(1 + 0.45 * (columns + 1), 0.5 + 0.42 * rows))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([16 + 30 * r for r in range(rows)], labels, fontsize=7)
    ax.set_xticks([])
    if draws is not None:
        ax.set_xticks([16], ["d_t"], fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, bbox_inches="tight")
