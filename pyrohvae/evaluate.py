"""The paper's density protocol (§3.6, §4.1): score every test datum under the model of its task.

`task` mode, for each test task: a context set of the task's test data (up to 100 random items)
is the context from which the model of the task is chosen: for HyperVAE, d_t = one random draw of
it (the random-draw guide picks one), ū = the mean of q(u | d_t), θ(ū); for MetaVAE, the decoder of
that task and the context set as the encoder's D. Then, for every x of the task: −ELBO, its
reconstruction term E_q[−log p(x | z)], KL(q(z | x) || p(z)) and the importance-sampled −log p(x);
per task KL(q(u | d_t) || p(u)).

`datum` mode: every datum is its own task, summarised by itself (d_t = x), as outlier scoring does.

Data of a task MetaVAE has no decoder for are scored under every decoder: −ELBO, its terms and
KL(z) are averaged over the decoders (the paper's "mean negative ELBO"), and log p(x) is that of
their uniform mixture, each decoder getting an equal share of the samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pyro
import torch
from tqdm import tqdm

from .data import TaskData, context_set
from .importance import importance_scores, psis_khat


@dataclass
class Scores:
    """Per-datum scores (n,) in nats, and KL(u) per task."""

    nelbo: torch.Tensor
    recon: torch.Tensor
    nll: torch.Tensor
    kl_z: torch.Tensor
    kl_u: torch.Tensor | None  # (tasks,), or None for models without u
    u_loc: torch.Tensor | None  # (tasks, u_dim): q(u | d_t) of each task (or datum)
    u_scale: torch.Tensor | None
    task: torch.Tensor  # task index of each datum
    index: torch.Tensor  # position of each datum in the data

    def summary(self) -> dict:
        n = len(self.nll)
        return {
            "nelbo": float(self.nelbo.mean()),
            "recon": float(self.recon.mean()),
            "nll": float(self.nll.mean()),
            "nll_stderr": float(self.nll.std() / math.sqrt(n)) if n > 1 else None,
            "kl_z": float(self.kl_z.mean()),
            "kl_u": None if self.kl_u is None else float(self.kl_u.mean()),
            "n": n,
        }


def seed_stream(seed: int, stream: int) -> None:
    """Pyro's generators at stream `stream` of `seed`: a task (its d_t, its particles) scored from a
    stream of its own gives the same scores whatever else is scored, in whatever order."""
    pyro.set_rng_seed(seed * 100_003 + stream)


def evaluation_subset(data: TaskData, limit: int | None) -> list[torch.Tensor]:
    """The indices of each task's data to score: all, or about limit / tasks of each."""
    members = data.task_members()
    if limit is None or limit >= len(data):
        return members
    share = max(1, math.ceil(limit / data.num_tasks))
    return [m[:share] for m in members]


def _score(fixed, x, samples, device, max_images):
    """Scores of x (tasks, items, ...) under each fixed (model, guide) pair, combined."""
    per_choice = []
    k = max(1, samples // len(fixed))
    for model, guide in fixed:
        per_choice.append(importance_scores(model, guide, x.to(device), k, max_images))
    log_p = torch.stack([s["log_p"] for s in per_choice])
    mean = {key: torch.stack([s[key] for s in per_choice]).mean(0) for key in ("recon", "kl_z")}
    nll = -(torch.logsumexp(log_p, 0) - math.log(len(fixed)))
    return mean["recon"] + mean["kl_z"], mean["recon"], nll, mean["kl_z"]


def _fix(program, context, choices, posteriors: list):
    """The (model, guide) of each choice for this context; q(u | context) and its KL into
    `posteriors`."""
    fixed = []
    for choice in choices:
        task_model = program.conditioned(context, choice)
        fixed.append((task_model.model, task_model.guide))
        if task_model.q_u is not None and len(fixed) == 1:
            q = task_model.q_u.base_dist
            posteriors.append((task_model.kl_u.reshape(-1).cpu(), q.loc.cpu(), q.scale.cpu()))
    return fixed


@torch.no_grad()
def evaluate(
    program,
    data: TaskData,
    samples: int = 1024,
    mode: str = "task",
    limit: int | None = None,
    seed: int = 0,
    chunk: int = 100,
    max_images: int = 8192,
    progress: bool = True,
    label_free: bool = False,
) -> Scores:
    """Scores of `data` by the density protocol (module docstring). `label_free` scores every
    datum as one of no known task (MetaVAE: under all its decoders), as outlier scoring must."""
    device = program.device
    g = torch.Generator().manual_seed(seed)  # the context sets
    subsets = evaluation_subset(data, limit)
    total = sum(len(s) for s in subsets)
    out = {k: [] for k in ("nelbo", "recon", "nll", "kl_z", "task", "index")}
    posteriors = []
    bar = tqdm(total=total, desc=f"evaluate ({samples} samples)", unit="img", disable=not progress)
    for t, idx in enumerate(subsets):
        if len(idx) == 0:
            continue
        choices = program.choices(None if label_free else data.task_names[t])
        seed_stream(seed, t)
        images = data.images[idx].float()
        if mode == "task":
            context = context_set(data, t, g).to(device)
            fixed = _fix(program, context, choices, posteriors)
            batches = [(images[i : i + chunk].unsqueeze(0), fixed) for i in range(0, len(images), chunk)]
        else:
            batches = []
            for i in range(0, len(images), chunk):
                x = images[i : i + chunk].unsqueeze(1)  # every datum a task, d_t = x
                batches.append((x, _fix(program, x.to(device), choices, posteriors)))
        for x, fixed in batches:
            scores = _score(fixed, x, samples, device, max_images)
            for key, value in zip(("nelbo", "recon", "nll", "kl_z"), scores):
                out[key].append(value.reshape(-1).cpu())
            bar.update(x.shape[0] * x.shape[1])
        out["task"].append(torch.full((len(idx),), t))
        out["index"].append(idx)
    bar.close()
    cat = {k: torch.cat(v) for k, v in out.items()}
    if posteriors:
        kl_u, u_loc, u_scale = (torch.cat(parts) for parts in zip(*posteriors))
    else:
        kl_u = u_loc = u_scale = None
    return Scores(kl_u=kl_u, u_loc=u_loc, u_scale=u_scale, **cat)


def khat_sample(program, data: TaskData, samples: int, n: int = 10, seed: int = 0) -> list[float]:
    """PSIS k̂ of `n` test data, spread over the tasks, each scored under its task's model (the
    first choice of generative network) with the datum itself as the context."""
    pyro.set_rng_seed(seed)
    device = program.device
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    khats = []
    for i in pick.tolist():
        x = data.images[i].float().reshape(1, 1, 1, 28, 28).to(device)
        choice = program.choices(data.task_names[int(data.tasks[i])])[0]
        task_model = program.conditioned(x, choice)
        khats.append(psis_khat(task_model.model, task_model.guide, x, samples))
    return khats


def run_evaluation(program, data, samples, mode, limit, seed, progress=True) -> dict:
    """`evaluate` plus PSIS k̂ and timing, as the dict written to eval.json."""
    tic = time.perf_counter()
    scores = evaluate(program, data, samples, mode, limit, seed, progress=progress)
    khats = khat_sample(program, data, samples, seed=seed)
    result = scores.summary()
    result.update(
        samples=samples,
        mode=mode,
        psis_khat_median=float(torch.tensor(khats).median()),
        psis_khat_max=max(khats),
        psis_khat_n=len(khats),
        seconds=round(time.perf_counter() - tic, 1),
    )
    return result


def evaluate_run(program, step: int, checkpoint: str, split="test", data_root=None, **scoring) -> dict:
    """What `evaluate` writes: the run's `split` scored (`run_evaluation`'s `scoring`), and which
    model, data and checkpoint it was."""
    config = program.config
    about = {"model": config.model, "dataset": config.dataset, "split": split, "step": step}
    scored = run_evaluation(program, config.load_data(split, data_root), **scoring)
    return {**about, "checkpoint": checkpoint, **scored}


def result_name(result: dict, last_checkpoint: bool) -> str:
    """eval.json for the test part scored as the paper does; eval-SPLIT-MODE[-stepN].json else."""
    name = (
        "eval.json" if (result["split"], result["mode"]) == ("test", "task") else "eval-{split}-{mode}.json"
    )
    name = name.format(**result)
    return name if last_checkpoint else name.replace(".json", f"-step{result['step']}.json")


def describe(result: dict) -> str:
    """What `evaluate` prints of its result, in one line."""
    kl_u = "" if result["kl_u"] is None else f"  KL(u) {result['kl_u']:.2f}"
    return (
        f"{result['model']} {result['dataset']} {result['split']}: -ELBO {result['nelbo']:.2f}  recon "
        f"{result['recon']:.2f}  -log p(x) {result['nll']:.2f} ± {result['nll_stderr'] or 0:.2f}  KL(z) "
        f"{result['kl_z']:.2f}{kl_u}  (n={result['n']}, K={result['samples']}, PSIS k̂ median "
        f"{result['psis_khat_median']:.2f})"
    )
