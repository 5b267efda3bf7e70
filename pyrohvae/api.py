"""The Python API: what a notebook or a script calls. Re-exported by `pyrohvae`.

    import pyrohvae as ph

    run = ph.fit(ph.RunConfig(dataset="mnist", steps=500), "runs/mnist-api")  # or ph.load(folder or file)
    run.evaluate(limit=200, samples=64)           # the `evaluate` command's figures, as a dict
    x = run.prior_predictive(tasks=4, items=8)    # (1, 4, 8, 1, 28, 28): Predictive, no data needed
    images = run.data("test").images[:20]         # or ph.load_images(["my-task/"])
    task = run.task_model(images[:5])             # the main VAE θ(ū) of the task these show
    task.sample(16)                               # (16, 1, 28, 28) Bernoulli means
    task.score(images[5:], samples=256)           # per image: −ELBO and −log p(x)
    run.export("mnist.pt")                        # one plain file; ph.load("mnist.pt") reads it

Every method works on the CPU or on `run.program`'s device; nothing here writes a file unless
asked to (`train`, `export`, `TaskModel.save`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import fewshot
from .config import RunConfig
from .data import TaskData
from .program import TaskModel


@dataclass
class Run:
    """A trained program (model, guide and networks), its config and the step it was trained to."""

    program: torch.nn.Module
    step: int
    source: Path

    @property
    def config(self) -> RunConfig:
        return self.program.config

    @property
    def device(self) -> torch.device:
        return self.program.device

    def data(self, part: str = "test", data_dir=None) -> TaskData:
        """The run's data: "train", "validation" (where it holds one) or "test"."""
        return self.config.load_data(part, data_dir)

    def evaluate(
        self,
        part: str = "test",
        samples: int = 1024,
        mode: str = "task",
        limit: int | None = None,
        seed: int = 0,
        data_dir=None,
        progress: bool = False,
    ) -> dict:
        """What `evaluate` prints and writes: −ELBO, recon, IS −log p(x), KL(z), KL(u), PSIS k̂."""
        from .evaluate import run_evaluation

        return run_evaluation(self.program, self.data(part, data_dir), samples, mode, limit, seed, progress)

    def fewshot_curve(
        self,
        part: str = "test",
        shots=None,
        per_task: int = 4,
        samples: int = 1024,
        seed: int = 0,
        vae: Run | None = None,
        folder=None,
        data_dir=None,
        progress: bool = False,
        keep_in=None,
        refine_steps: int = 0,
    ) -> dict:
        """What `fewshot-curve` prints and writes: −log p(x | k other images of its task) of images of
        tasks the run never trained on, for each k, the set figure and, given a VAE run, the gains.
        With `keep_in` (a folder), each model's scores are kept there as they are done, and the same
        call, stopped, resumes. `refine_steps`: q(u | shots) refined on the shots (`fewshot.refine`)."""
        from .fewshot import SHOTS, run_curve

        return run_curve(
            self.program,
            self.step,
            part,
            folder,
            shots or SHOTS,
            per_task,
            samples,
            seed,
            data_root=data_dir,
            vae=vae.program if vae is not None else None,
            progress=progress,
            keep_in=keep_in,
            refine_steps=refine_steps,
        )

    @torch.no_grad()
    def prior_predictive(self, tasks: int = 4, items: int = 8, num_samples: int = 1) -> torch.Tensor:
        """Binary images drawn from the model alone, (num_samples, tasks, items, 1, 28, 28): for a
        HyperVAE one u ~ p(u) per task, then z and x per item; `pyro.infer.Predictive` on the model
        called with the numbers of tasks and items instead of data."""
        from pyro.infer import Predictive

        if not self.program.generative_prior:
            raise ValueError(f"a {self.config.model} has no prior over its models")
        return Predictive(self.program.model, num_samples=num_samples)(None, tasks=tasks, items=items)["x"]

    def task_model(self, images: torch.Tensor, combine: str = "product") -> TaskVAE:
        """The model of the task that `images` (k, 1, 28, 28) show: for a HyperVAE the main VAE
        θ(ū), ū the mean of q(u | the images) (a guide that reads one draw combines the k
        posteriors, `TaskGuide.shots_posterior`); for a VAE its one model."""
        return TaskVAE(self, *self.program.task_model(images.float().to(self.device), combine))

    def prior_mean_model(self) -> TaskVAE:
        """θ(E[u]): the model that knows nothing of the task (HyperVAE)."""
        u = self.program.prior_mean_u().to(self.device)
        return TaskVAE(self, self.program.conditioned_on(u, torch.ones_like(u)), u)

    def export(self, path) -> Path:
        """One plain file with the parameters and config (`pyrohvae.export`)."""
        from .export import export

        export(self.program, self.step, Path(path))
        return Path(path)


@dataclass
class TaskVAE:
    """One fixed model of a task: sample from it, score images under it, save it."""

    run: Run
    fixed: TaskModel
    u: torch.Tensor | None  # (1, u_dim): ū, for a HyperVAE

    @torch.no_grad()
    def sample(self, n: int = 16, seed: int = 0) -> torch.Tensor:
        """n Bernoulli means (n, 1, 28, 28), z ~ p(z | ū)."""
        program = self.run.program
        eps = torch.randn(n, program.config.z_dim, generator=torch.Generator().manual_seed(seed)).to(
            self.run.device
        )
        logits = program.sample_logits(eps) if self.u is None else program.sample_logits(eps, self.u[0])
        return torch.sigmoid(logits).cpu()

    def score(self, images: torch.Tensor, samples: int = 1024) -> dict[str, torch.Tensor]:
        """Per image (n,): −ELBO and importance-sampled −log p(x) (K = `samples`), in nats."""
        nelbo, nll = fewshot.per_image(self.fixed, images, samples, self.run.device)
        return {"nelbo": nelbo, "nll": nll}

    def save(self, folder) -> Path:
        """θ(ū) as the run folder of a plain VAE, which every command reads (HyperVAE)."""
        if self.u is None:
            raise ValueError("a VAE's model is its run already")
        return fewshot.save_model(
            self.run.program, self.u, Path(folder), self.run.step, {"source": str(self.run.source)}
        )


def load(path, device: str = "cpu", checkpoint: str | None = None) -> Run:
    """A run folder (its last checkpoint, or `checkpoint`, one kept by --keep-every) or a model
    file written by `export`."""
    from .train import CHECKPOINT, load_run, resolve_device

    program, state = load_run(Path(path), resolve_device(device), checkpoint or CHECKPOINT)
    return Run(program, state["step"], Path(path))


def fit(config: RunConfig, out, **options) -> Run:
    """Train `config` into the run folder `out` (options as `pyrohvae.train.train`: data_root,
    device, resume, progress, tensorboard, ...) and load the result."""
    from .train import train as run_training

    run_training(config, Path(out), **options)
    return load(out, options.get("device", "cpu"))


def load_images(paths, invert: bool | None = None) -> torch.Tensor:
    """Image files, or folders of them, as binary 28x28 images (n, 1, 28, 28), processed as a
    folder dataset's are (`pyrohvae.folders`)."""
    return fewshot.load_images(paths, invert)[0]
