"""A run's configuration: everything needed to rebuild its model, guide and data."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from . import data

MODELS = ("hypervae", "vae", "metavae")
PARTS = ("train", "validation", "test")
DEFAULT_GUIDE = {"hypervae": "random-draw", "vae": "encoder", "metavae": "context-encoder"}
# MetaVAE holds one decoder (336,589 parameters) per training task.
MAX_METAVAE_TASKS = 200


class ConfigError(ValueError):
    pass


@dataclass
class RunConfig:
    dataset: str = "omniglot"
    model: str = "hypervae"
    guide: str | None = None  # None: the model's default, DEFAULT_GUIDE
    prior: str = "normal"  # prior on u (hypervae)
    split: str = "drawers"  # omniglot: "drawers" or "background"
    task_by: str | None = None  # omniglot: "alphabet" (default) or "character"
    steps: int = 10_000
    batch_size: int = 100
    tasks_per_step: int = 1
    lr: float = 3e-4
    lr_half_life: int = 0  # steps in which the learning rate halves (0: constant, the paper)
    seed: int = 0
    z_dim: int = 10
    u_dim: int = 10
    h_dim: int = 20
    hidden: int = 100
    theta_init_scale: float = 0.1
    kl_u_warmup: int = 0  # steps over which the weight of KL(u) rises linearly from 0 to 1
    exclude_classes: list[str] = dataclasses.field(default_factory=list)  # tasks held out of training
    validation: float = 0.0  # fraction of each training task's images held out as the validation part
    train_tasks: list[str] | None = None  # filled in from the training data when a run starts

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.dataset not in data.DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}")
        if self.guide is None:
            self.guide = DEFAULT_GUIDE[self.model]
        if self.dataset == "omniglot" and self.task_by is None:
            self.task_by = "alphabet"
        if self.dataset != "omniglot" and (self.split != "drawers" or self.task_by not in (None, "class")):
            raise ConfigError("--split and --task-by apply to omniglot only")
        if not 0 <= self.validation < 1:
            raise ConfigError(f"--validation {self.validation}: a fraction in [0, 1)")
        if self.model != "hypervae" and self.kl_u_warmup:
            raise ConfigError("--kl-u-warmup applies to hypervae only")
        if self.model == "vae" and self.tasks_per_step != 1:
            raise ConfigError("--tasks-per-step applies to task models (hypervae, metavae), not vae")
        if self.model == "metavae" and self.train_tasks and len(self.train_tasks) > MAX_METAVAE_TASKS:
            raise ConfigError(
                f"metavae keeps one decoder per training task: {len(self.train_tasks)} tasks are more "
                f"than {MAX_METAVAE_TASKS}; use --task-by alphabet"
            )

    def lr_at(self, step: int) -> float:
        """The learning rate of `step`: a function of the step alone, so a resumed run, or one
        given more steps, follows the same schedule as an uninterrupted one."""
        return self.lr * 0.5 ** (step / self.lr_half_life) if self.lr_half_life else self.lr

    def load_data(self, part: str, root=None) -> data.TaskData:
        """One part of the run's data: "train" (without the held-out classes and the validation
        images), "validation" (the images --validation held out of the training tasks) or "test"
        (all classes: discovery and evaluation look at the unseen tasks too)."""
        if part not in PARTS:
            raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
        if part == "validation" and not self.validation:
            raise ConfigError("this run holds no validation part (it was trained with --validation 0)")
        loaded = data.load(self.dataset, "test" if part == "test" else "train", root,
                           split=self.split, task_by=self.task_by)
        if part == "test":
            return loaded
        if self.exclude_classes:
            loaded = loaded.without_tasks(self.exclude_classes)
        if self.validation:
            kept, held = loaded.hold_out(self.validation)
            loaded = kept if part == "train" else held
        return loaded

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        from .files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"{path}: not a readable run config ({e})") from None
