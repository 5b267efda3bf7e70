"""How much the models of a task model differ by task: the task-model matrix.

For every task j, the model of the task is chosen from a *context* of j's held-out images, as the
density protocol chooses it (`program.conditioned`: for HyperVAE ū_j = the mean of q(u | d_j), with
d_j what the guide reads of the context, one random draw for the paper's guide; for MetaVAE the
decoder of task j, the context as its D). Every held-out image i is then scored under the model
of every task j. The context of j never holds the image being scored: each task's images are
split at random into two halves, and an image of the first half is scored under the model its
task gets from a context drawn from the second half; every other image under the model from the
first half.

From the per-image −ELBO under each task's model, (n, T):
- the T×T matrix: mean −ELBO of the images of task i under the model of task j;
- task accuracy: the share of images whose own task's model gives the lowest −ELBO (chance 1/T);
- own-vs-other gap: per image, the mean −ELBO under the other tasks' models minus that under its
  own, averaged over the images, in nats;
- sample agreement: images sampled from each task's model (Bernoulli means, z from the model's
  prior) labelled by a classifier fitted on the training images; the share labelled as the task.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data import CONTEXT_SIZE, DATASETS, TaskData, cache_dir
from .evaluate import seed_stream
from .files import RequestError, atomic_path, pyplot, save_figure
from .importance import importance_scores

# Bump when the classifiers below change, so stale cached ones are not reused.
_CLASSIFIER_VERSION = 1


@dataclass
class Contexts:
    """Two disjoint contexts per task (`first`, `second`, each (1, m, 1, 28, 28)), and for every
    image whether it lies in its task's first half (and is scored under the second context)."""

    first: list[torch.Tensor]
    second: list[torch.Tensor]
    in_first: torch.Tensor  # bool (n,)


def contexts(data: TaskData, size: int = CONTEXT_SIZE, seed: int = 0) -> Contexts:
    """Each task's images split at random in two halves; up to `size` of each half as a context."""
    g = torch.Generator().manual_seed(seed)
    first, second = [], []
    in_first = torch.zeros(len(data), dtype=torch.bool)
    for t, members in enumerate(data.task_members()):
        if len(members) < 2:
            raise RequestError(
                f"task {data.task_names[t]!r} of {data.name} has {len(members)} image(s); "
                "its model needs a context of other images of the task: at least 2"
            )
        members = members[torch.randperm(len(members), generator=g)]
        half = (len(members) + 1) // 2
        a, b = members[:half], members[half:]
        in_first[a] = True
        first.append(data.images[a[:size]].float().unsqueeze(0))
        second.append(data.images[b[:size]].float().unsqueeze(0))
    return Contexts(first, second, in_first)


# A model whose p(z) reads shots (`--z-prior shots…`) reads this many of a context's images as its
# shots, the few-shot benchmark's largest k and within the sets it trains on; its ū is read from
# the whole context, as any model's. The context never holds the scored image, so neither do they.
CONTEXT_SHOTS = 19


def _reads_shots(program) -> bool:
    return getattr(program, "shot_prior", None) is not None


def _context_shots(program, context: torch.Tensor, shots: int = CONTEXT_SHOTS) -> torch.Tensor | None:
    """The first `shots` of the context (none: the model of no shot), for a model whose p(z) reads
    shots; else None."""
    return context[:, :shots] if _reads_shots(program) else None


def context_model(program, context: torch.Tensor, choice=None, shots: int = CONTEXT_SHOTS):
    """The model of the task that `context` (tasks, m, 1, 28, 28) shows, for images apart from the
    context: `program.conditioned`, and for a model whose p(z) reads shots, the first `shots` of the
    context as them (0: θ(ū) with p(z) reading none, where the task lives in u alone)."""
    return program.conditioned(context, choice, shots=_context_shots(program, context, shots))


def _model_choice(program, name: str):
    choices = program.choices(name)
    if len(choices) != 1:
        raise RequestError(f"the run has no model of its own for task {name!r}")
    return choices[0]


@dataclass
class TaskModelScores:
    nelbo: torch.Tensor  # (n, T): −ELBO of image i under the model of task j
    task: torch.Tensor  # (n,): each image's own task
    task_names: list[str]
    agreement: dict = field(default_factory=dict)  # sample agreement, if measured

    def matrix(self) -> torch.Tensor:
        """(T, T): mean −ELBO of the images of task i (row) under the model of task j (column)."""
        T = len(self.task_names)
        sums = torch.zeros(T, T, dtype=self.nelbo.dtype).index_add_(0, self.task, self.nelbo)
        counts = torch.bincount(self.task, minlength=T).clamp(min=1)
        return sums / counts[:, None]

    def own(self) -> torch.Tensor:
        return self.nelbo.gather(1, self.task[:, None])[:, 0]

    def accuracy(self, tasks: list[int] | None = None) -> float:
        """The share of images whose own task's model scores them best: of all, or of `tasks`'."""
        hit = (self.nelbo.argmin(1) == self.task).double()
        return float(hit.mean() if tasks is None else hit[torch.isin(self.task, torch.tensor(tasks))].mean())

    def accuracy_per_task(self) -> list[float]:
        """Per task, the share of its images that its own model scores best."""
        hit = (self.nelbo.argmin(1) == self.task).double()
        T = len(self.task_names)
        counts = torch.bincount(self.task, minlength=T).clamp(min=1)
        return (torch.zeros(T, dtype=hit.dtype).index_add_(0, self.task, hit) / counts).tolist()

    def gap(self) -> float:
        T = self.nelbo.shape[1]
        others = (self.nelbo.sum(1) - self.own()) / (T - 1)
        return float((others - self.own()).mean())

    def summary(self) -> dict:
        T = len(self.task_names)
        return {
            "tasks": T,
            "n": len(self.task),
            "chance": 1.0 / T,
            "task_accuracy": self.accuracy(),
            "task_accuracy_per_task": self.accuracy_per_task(),
            "own_other_gap": self.gap(),
            "nelbo_own": float(self.own().mean()),
            **self.agreement,
        }


@torch.no_grad()
def score_matrix(
    program,
    data: TaskData,
    samples: int = 8,
    context_size: int = CONTEXT_SIZE,
    seed: int = 0,
    chunk: int = 500,
    progress: bool = True,
    shots: int = CONTEXT_SHOTS,
) -> TaskModelScores:
    """Per-image −ELBO under every task's model (module docstring); `samples` draws of z per
    image for the reconstruction term, KL(z) analytic."""
    if len(data.task_names) < 2:
        raise RequestError(f"{data.name} has one task: nothing to tell apart")
    device = program.device
    ctx = contexts(data, context_size, seed)
    images = data.images.float()
    if _reads_shots(program) and shots:
        chunk = min(chunk, 100)  # each image's z also reads the shots' feature maps
    T, n = data.num_tasks, len(data)
    nelbo = torch.empty(n, T)
    bar = tqdm(total=n * T, desc=f"task models ({T} tasks)", unit="score", disable=not progress)
    for j, name in enumerate(data.task_names):
        choice = _model_choice(program, name)
        own_first = ctx.in_first & (data.tasks == j)
        for context, scored in ((ctx.first[j], ~own_first), (ctx.second[j], own_first)):
            index = scored.nonzero().squeeze(1)
            seed_stream(seed, 2 * j + int(context is ctx.second[j]))
            fixed = context_model(program, context.to(device), choice, shots)
            for i in range(0, len(index), chunk):
                part = index[i : i + chunk]
                s = importance_scores(fixed.model, fixed.guide, images[part].unsqueeze(0).to(device), samples)
                nelbo[part, j] = (s["recon"] + s["kl_z"]).reshape(-1).cpu()
                bar.update(len(part))
    bar.close()
    return TaskModelScores(nelbo, data.tasks.clone(), list(data.task_names))


@torch.no_grad()
def posterior_stats(program, data: TaskData, context_size: int = CONTEXT_SIZE, seed: int = 0) -> dict:
    """Where q(u | context) puts the tasks (HyperVAE): the mean distance of ū_t from the prior's
    centre, the spread of ū_t across tasks (std over tasks, averaged over u's dimensions), and
    q's own scale. Tasks apart by more than q's scale have models of their own; all of them far
    from 0 but close together means u codes something every task shares."""
    device = program.device
    ctx = contexts(data, context_size, seed)
    locs, scales = [], []
    for context in ctx.first:
        loc, scale = program.inference.posterior(context.to(device))
        locs.append(loc[0].cpu())
        scales.append(scale[0].cpu())
    loc, scale = torch.stack(locs), torch.stack(scales)
    return {
        "u_norm": float(loc.norm(dim=1).mean()),
        "u_between_tasks": float(loc.std(0).mean()),
        "q_scale": float(scale.mean()),
    }


# --- sample agreement -----------------------------------------------------------------------------


def _data_key(data: TaskData) -> str:
    h = hashlib.sha256(data.images.numpy().tobytes())
    h.update(data.tasks.numpy().tobytes())
    h.update("\n".join(data.task_names).encode())
    return h.hexdigest()[:16]


@dataclass
class Labeller:
    """A classifier of images into the tasks of a dataset, with its accuracy on held-out data."""

    estimator: object
    kind: str
    task_names: list[str]
    test_accuracy: float | None = None

    def predict(self, images: torch.Tensor) -> np.ndarray:
        return self.estimator.predict(images.reshape(len(images), -1).cpu().numpy().astype(np.float32))


def measure(
    program,
    scored: TaskData,
    samples: int = 8,
    context_size: int = CONTEXT_SIZE,
    agreement_samples: int = 100,
    seed: int = 0,
    progress: bool = False,
    data_root=None,
    shots: int = CONTEXT_SHOTS,
) -> TaskModelScores:
    """The task-model matrix of a run on `scored` (`score_matrix`) and, unless `agreement_samples`
    is 0, the sample agreement of that many samples of each task's model (`sample_agreement`)."""
    scores = score_matrix(program, scored, samples, context_size, seed, progress=progress, shots=shots)
    if agreement_samples:
        label = labeller(program.config.dataset, *_labeller_data(program.config, scored, data_root))
        scores.agreement = sample_agreement(
            program, scored, label, agreement_samples, context_size, seed, shots=shots
        )
    return scores


def _labeller_data(config, scored: TaskData, data_root=None) -> tuple[TaskData, TaskData]:
    """The training and test images of the tasks `scored` holds, for the labeller. A run trained
    with --exclude-classes has models of its held-out classes too (a HyperVAE's, from their
    images): the labeller learns them from their training images, which the run never saw."""
    every_class = replace(config, exclude_classes=[]) if config.exclude_classes else config
    train, test = every_class.load_data("train", data_root), config.load_data("test", data_root)
    names = set(scored.task_names)
    return tuple(
        d if set(d.task_names) == names else d.without_tasks(sorted(set(d.task_names) - names))
        for d in (train, test)
    )


def result(
    program,
    step: int,
    split: str,
    checkpoint: str,
    samples: int = 8,
    context_size: int = CONTEXT_SIZE,
    agreement_samples: int = 100,
    seed: int = 0,
    progress: bool = False,
    data_root=None,
    shots: int = CONTEXT_SHOTS,
) -> tuple[dict, TaskModelScores]:
    """`measure` on the run's `split` (its tasks the run trained on), as the result the
    `task-models` command writes, and the scores, for the heatmap. A RequestError says why not."""
    config = program.config
    if not program.models_by_task:
        raise RequestError(
            f"a {config.model} run has one model for all tasks: there is nothing to tell apart"
        )
    if _reads_shots(program) and shots > context_size:
        raise RequestError(f"--shots {shots} is more than the context's {context_size} images")
    scored = program.known_tasks(config.load_data(split, data_root))
    scores = measure(
        program, scored, samples, context_size, agreement_samples, seed, progress, data_root, shots
    )
    about = {"model": config.model, "dataset": config.dataset, "guide": config.guide, "split": split}
    if _reads_shots(program):
        about["shots"] = shots
    held_out = [t for t, name in enumerate(scores.task_names) if name in config.exclude_classes]
    if held_out:  # how the run's models of tasks it never saw compare with those of its own
        trained = [t for t in range(len(scores.task_names)) if t not in held_out]
        about.update(
            held_out_tasks=[scores.task_names[t] for t in held_out],
            task_accuracy_trained=scores.accuracy(trained),
            task_accuracy_held_out=scores.accuracy(held_out),
        )
    return {
        **about,
        "step": step,
        "checkpoint": checkpoint,
        "samples": samples,
        "context_size": context_size,
        "seed": seed,
        **scores.summary(),
        "task_names": scores.task_names,
        "matrix": rounded(scores.matrix().tolist()),
    }, scores


def describe(result: dict) -> str:
    """A `task-models` result in one line."""
    agreement = ""
    if "sample_agreement" in result:
        agreement = (
            f"  sample agreement {result['sample_agreement']:.3f} ({result['labeller']}, test accuracy "
            f"{result['labeller_test_accuracy']:.3f})"
        )
    return (
        f"{result['model']} {result['dataset']} {result['split']}: task accuracy "
        f"{result['task_accuracy']:.3f} (chance {result['chance']:.3f})  own-vs-other gap "
        f"{result['own_other_gap']:.2f} nats{agreement}{_held_out(result)}  "
        f"(n={result['n']}, {result['tasks']} tasks)"
    )


def _held_out(result: dict) -> str:
    if "held_out_tasks" not in result:
        return ""
    return (
        f"  task accuracy on the tasks trained on {result['task_accuracy_trained']:.3f}, on those held out "
        f"({', '.join(result['held_out_tasks'])}) {result['task_accuracy_held_out']:.3f}"
    )


def labeller(
    dataset: str, train: TaskData, test: TaskData | None = None, limit: int | None = None
) -> Labeller:
    """The classifier that labels samples, fitted once on the training images and cached.

    MNIST and Fashion-MNIST: a scikit-learn multilayer perceptron (one hidden layer of 256).
    Omniglot: the nearest alphabet (task) centroid in pixel space, since a classifier of 50
    alphabets from one character is beyond what samples should be held to; its accuracy on the
    test images is low and says how far apart the alphabets' pixel means are.
    `limit` fits on the first `limit` training images only (for tests)."""
    from sklearn.neighbors import NearestCentroid
    from sklearn.neural_network import MLPClassifier

    if limit is not None:
        train = train.subset(torch.arange(min(limit, len(train))))
    kind = "nearest-centroid" if dataset == "omniglot" else "mlp-256"
    named = (
        dataset if dataset in DATASETS else "folder"
    )  # a folder's path is no file name; the key is its content
    path = cache_dir() / f"labeller-{named}-{kind}-v{_CLASSIFIER_VERSION}-{_data_key(train)}.pkl"
    if path.exists():
        try:
            with open(path, "rb") as f:
                cached = pickle.load(f)
            if isinstance(cached, Labeller) and (test is None or cached.test_accuracy is not None):
                return cached
        except Exception:  # noqa: S110
            pass  # a damaged cache entry is refitted below
    x = train.images.reshape(len(train), -1).numpy().astype(np.float32)
    y = train.tasks.numpy()
    if kind == "nearest-centroid":
        estimator = NearestCentroid()
    else:
        estimator = MLPClassifier(hidden_layer_sizes=(256,), early_stopping=True, max_iter=60, random_state=0)
    estimator.fit(x, y)
    fitted = Labeller(estimator, kind, list(train.task_names))
    if test is not None:
        fitted.test_accuracy = float((fitted.predict(test.images.float()) == test.tasks.numpy()).mean())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            pickle.dump(fitted, f)
    except OSError:
        pass  # caching only saves time
    return fitted


@torch.no_grad()
def sample_agreement(
    program,
    data: TaskData,
    label: Labeller,
    per_task: int = 100,
    context_size: int = CONTEXT_SIZE,
    seed: int = 0,
    shots: int = CONTEXT_SHOTS,
) -> dict:
    """Sample `per_task` images (Bernoulli means) from the model of each task, chosen from the
    same first-half context as in `score_matrix`, and label them: the share labelled as their
    task, overall and per task."""
    if label.task_names != list(data.task_names):
        raise ValueError("the classifier was fitted on other tasks than the data's")
    device = program.device
    ctx = contexts(data, context_size, seed)
    g = torch.Generator().manual_seed(seed)
    per = []
    for j, name in enumerate(data.task_names):
        seed_stream(seed, 2 * j)
        context = ctx.first[j].to(device)
        means = program.sample_task(
            context,
            per_task,
            g,
            choice=_model_choice(program, name),
            shots=_context_shots(program, context, shots),
        )
        per.append(float((label.predict(means) == j).mean()))
    return {
        "sample_agreement": float(np.mean(per)),
        "sample_agreement_per_task": per,
        "labeller": label.kind,
        "labeller_test_accuracy": label.test_accuracy,
        "samples_per_task": per_task,
    }


# --- figure -------------------------------------------------------------------------------------


def heatmap(scores: TaskModelScores, path: Path, title: str) -> None:
    """The matrix, each row minus its mean (what a task's images gain or lose under each model)."""
    plt = pyplot()

    m = scores.matrix().numpy()
    centred = m - m.mean(1, keepdims=True)
    T = len(scores.task_names)
    size = min(14.0, 3.0 + 0.22 * T)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    limit = float(np.abs(centred).max()) or 1.0
    im = ax.imshow(centred, cmap="RdBu_r", vmin=-limit, vmax=limit)
    font = 8 if T <= 12 else max(3, int(8 - T / 10))
    ax.set_xticks(range(T), scores.task_names, rotation=90, fontsize=font)
    ax.set_yticks(range(T), scores.task_names, fontsize=font)
    ax.set_xlabel("model of task j, θ(ū_j)")
    ax.set_ylabel("test images of task i")
    if T <= 12:
        for i in range(T):
            for j in range(T):
                ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046, label="mean −ELBO minus the row's mean (nats)")
    s = scores.summary()
    ax.set_title(
        f"{title}\ntask accuracy {s['task_accuracy']:.3f} (chance {s['chance']:.3f}), "
        f"own-vs-other gap {s['own_other_gap']:.2f} nats",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, path)


def rounded(values, digits: int = 3) -> list:
    return [[round(float(v), digits) for v in row] for row in values]
