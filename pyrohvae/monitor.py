"""Watching a run: the terms of its loss, the hooks that log it (`metrics.jsonl`, TensorBoard, the
progress bar), and loss curves drawn from `metrics.jsonl`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from pyro import poutine

from .files import RequestError, pyplot, save_figure
from .trainer import Hook, Trainer


@torch.no_grad()
def loss_terms(program, x: torch.Tensor, task=None) -> dict[str, float]:
    """The −ELBO of a minibatch (tasks, items, 1, 28, 28) in its three terms, nats per image,
    unweighted (whatever the KL weights of training), from one draw of the guide: `recon`
    E_q[−log p(x | z)], `kl_z` and `kl_u` (the share of KL(q(u | D_t) ‖ p(u)) per image: KL per
    task over the task's items), so that the three add up to the −ELBO. The draw is made on a copy
    of the random state, so that watching a run does not change it."""
    devices = [x.device] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        guide = poutine.trace(program.guide).get_trace(x, task)
        model = poutine.trace(poutine.replay(program.model, trace=guide)).get_trace(x, task)
    n = x.shape[0] * x.shape[1]

    def log_prob(trace, name):
        site = trace.nodes[name]
        return site["fn"].log_prob(site["value"]).sum()

    terms = {"recon": -log_prob(model, "x") / n, "kl_z": (log_prob(guide, "z") - log_prob(model, "z")) / n}
    if "u" in guide.nodes:
        terms["kl_u"] = (log_prob(guide, "u") - log_prob(model, "u")) / n
    return {k: float(v) for k, v in terms.items()}


class MetricsFile(Hook):
    """A line in `metrics.jsonl` every `every` steps and at the last: the step's loss, `loss_avg`
    over the steps since the previous line, `seconds` of training, `skipped` steps, the learning
    rate and the loss's terms (`loss_terms`, on the step's minibatch). Each line is also handed to
    the `listeners` (their `on_log`): the progress bar, TensorBoard."""

    def __init__(self, path: Path, every: int, steps: int, listeners: list[Hook] = ()):
        self.file, self.every, self.steps, self.window = open(path, "a"), every, steps, []  # noqa: SIM115 (closed by close)
        self.listeners = list(listeners)

    def on_step(self, trainer: Trainer, step: int, loss: float | None) -> None:
        if loss is not None:
            self.window.append(loss)
        if step % self.every and step != self.steps:
            return
        line = {
            "step": step,
            "loss": loss,
            "loss_avg": sum(self.window) / len(self.window) if self.window else None,
            "seconds": round(trainer.seconds, 3),
            "skipped": trainer.skipped,
            "lr": trainer.config.lr_at(step),
            **loss_terms(trainer.program, *trainer.batch),
        }
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        self.window = []
        for listener in self.listeners:
            listener.on_log(trainer, line)

    def close(self) -> None:
        self.file.close()


class ProgressBar(Hook):
    """tqdm on stderr, with the average loss of the last metrics line (a `MetricsFile` listener)."""

    def __init__(self, config, start: int):
        from tqdm import tqdm

        self.bar = tqdm(
            total=config.steps,
            initial=start,
            desc=f"{config.model} {config.dataset}",
            mininterval=0.5 if sys.stderr.isatty() else 30,
            file=sys.stderr,
        )

    def on_log(self, trainer: Trainer, line: dict) -> None:
        self.bar.set_postfix(
            loss="nan" if line["loss_avg"] is None else f"{line['loss_avg']:.2f}", refresh=False
        )

    def on_step(self, trainer: Trainer, step: int, loss: float | None) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class TensorBoardHook(Hook):
    """Every metrics line's scalars (a `MetricsFile` listener), and a grid of samples every
    `image_every` steps and at the last (0: none), to TensorBoard's event files in `log_dir`."""

    def __init__(self, log_dir: Path, start: int, seconds: float, data, image_every: int):
        self.board, self.data, self.image_every = TensorBoard(log_dir, start, seconds), data, image_every

    def on_log(self, trainer: Trainer, line: dict) -> None:
        self.board.scalars(line)

    def on_step(self, trainer: Trainer, step: int, loss: float | None) -> None:
        if self.image_every and (step % self.image_every == 0 or step == trainer.config.steps):
            self.board.samples(step, trainer.program, self.data, trainer.config.seed)

    def close(self) -> None:
        self.board.close()


class TensorBoard:
    """A run's TensorBoard event files: the scalars of every metrics line, and now and then a grid
    of samples. A resumed run purges what a stopped one logged after its checkpoint, so every
    curve goes on without a step twice."""

    def __init__(self, log_dir: Path, start_step: int = 0, start_seconds: float = 0.0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step else None)
        self._last = (start_step, start_seconds)  # of the previous line, for the steps per second

    def scalars(self, line: dict) -> None:
        step = line["step"]
        for key in ("loss", "loss_avg", "recon", "kl_z", "kl_u", "lr"):
            if line.get(key) is not None:
                self.writer.add_scalar(f"train/{key}", line[key], step)
        if line["seconds"] > self._last[1]:
            self.writer.add_scalar(
                "train/steps_per_second", (step - self._last[0]) / (line["seconds"] - self._last[1]), step
            )
        self._last = (step, line["seconds"])

    def samples(self, step: int, program, data, seed: int) -> None:
        """Bernoulli means: rows of the training tasks' models and of the prior's (`sample_rows`)."""
        from torchvision.utils import make_grid

        from .samples import sample_rows

        # sample_rows draws on a copy of the generators' state: the run's own stream is untouched.
        means, _, _ = sample_rows(program, data, columns=8, prior_rows=2, max_tasks=8, seed=seed)
        self.writer.add_image(
            "samples", make_grid(means.flatten(0, 1), nrow=means.shape[1], pad_value=0.5), step
        )

    def close(self) -> None:
        self.writer.close()


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise RequestError(f"{run}: no metrics.jsonl (not a run folder?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_runs(runs: list[Path], out: Path, smooth: int = 10) -> list[str]:
    """Loss curves of one or several runs, from their metrics files, into a PNG: the training loss
    (a moving average over `smooth` lines) and, where the run logged them, its terms. Returns
    the panels drawn."""
    plt = pyplot()
    import numpy as np

    curves = {Path(r).name or str(r): read_metrics(r) for r in runs}
    panels = [
        k
        for k in ("loss_avg", "recon", "kl_z", "kl_u")
        if any(line.get(k) is not None for lines in curves.values() for line in lines)
    ]
    if not panels:
        raise RequestError("no logged losses in " + ", ".join(map(str, runs)))
    titles = {
        "loss_avg": "training loss (nats/image)",
        "recon": "reconstruction",
        "kl_z": "KL(z)",
        "kl_u": "KL(u), per image",
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, key in zip(axes[0], panels):
        for name, lines in curves.items():
            points = [(line["step"], line[key]) for line in lines if line.get(key) is not None]
            if not points:
                continue
            steps, values = map(np.asarray, zip(*points))
            if smooth > 1 and len(values) >= smooth:
                values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
                steps = steps[smooth - 1 :]
            ax.plot(steps, values, label=name, lw=1)
        ax.set_title(titles[key], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)
    return panels
