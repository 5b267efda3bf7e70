"""A run's configuration: everything needed to rebuild its model, guide and data."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from . import data, folders
from .nets import THETA_LAYOUTS

MODELS = ("hypervae", "vae", "metavae")
PARTS = ("train", "validation", "test", "held-out")
DEFAULT_GUIDE = {"hypervae": "random-draw", "vae": "encoder", "metavae": "context-encoder"}
# MetaVAE holds one decoder (336,589 parameters) per training task.
MAX_METAVAE_TASKS = 200
Z_PRIORS = ("normal", "task")
# A HyperVAE's training settings, by name; each is used unless given on its own. `paper`: the
# paper's (§3.2, §4), which Table 1's paper-configuration rows use. `task-specific`: the
# configuration chosen on a validation split for models that differ by task
# (experiments/results/task_models.md): q(u | D_t) reads the mean image of the task's minibatch,
# 4 tasks a step, U·H·V starts at B's spread, and KL(z) weighs 10 at the start, falling to 1 over
# 1,000 steps, so that what the images of a task share is coded in u, where it costs least, not z.
PRESETS = {
    "paper": {"guide": "random-draw", "tasks_per_step": 1, "theta_init_scale": 0.1, "u_scale_init": 1.0,
              "kl_z_start": 1.0, "kl_z_anneal": 0},
    "task-specific": {"guide": "set-mean", "tasks_per_step": 4, "theta_init_scale": 1.0, "u_scale_init": 1.0,
                      "kl_z_start": 10.0, "kl_z_anneal": 1000},
}
DEFAULT_PRESET = "task-specific"


class ConfigError(ValueError):
    pass


def excluded_tasks(names: list[str], patterns: list[str]) -> list[str]:
    """The task names that `--exclude-classes` names, each given as a name or a shell-style
    pattern (`'Korean/*'`: every character of an Omniglot alphabet); a pattern that matches no
    task is an error, not a silent no-op."""
    out = []
    for pattern in patterns:
        matched = fnmatch.filter(names, pattern) if pattern not in names else [pattern]
        if not matched:
            known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise data.DataError(f"--exclude-classes {pattern!r} matches no task (tasks: {known})")
        out += [n for n in matched if n not in out]
    return out


@dataclass
class RunConfig:
    dataset: str = "omniglot"  # a built-in dataset (data.DATASETS), or the path of a folder of task folders
    model: str = "hypervae"
    preset: str = DEFAULT_PRESET  # hypervae: fills the settings below left at None (PRESETS)
    guide: str | None = None  # None: the preset's (hypervae) or the model's default, DEFAULT_GUIDE
    prior: str = "normal"  # prior on u (hypervae)
    split: str = "drawers"  # omniglot: "drawers" or "background"
    task_by: str | None = None  # omniglot: "alphabet" (default) or "character"
    steps: int = 10_000
    batch_size: int = 100
    tasks_per_step: int | None = None  # None: the preset's (hypervae), else 1
    lr: float = 3e-4
    lr_half_life: int = 0  # steps in which the learning rate halves (0: constant, the paper)
    seed: int = 0
    z_dim: int = 10
    u_dim: int = 10
    h_dim: int = 20
    hidden: int = 100
    theta_init_scale: float | None = None  # hypervae: spread of U·H·V at the start, as a factor on B's
    kl_u_warmup: int = 0  # steps over which the weight of KL(u) rises linearly from 0 to 1
    kl_z_start: float | None = None  # weight of KL(z) at step 0 (hypervae), falling linearly to 1 ...
    kl_z_anneal: int | None = None  # ... over this many steps (0: weight 1 throughout, the paper)
    u_scale_init: float | None = None  # hypervae: q(u | d)'s scale at the start, times PyTorch's default init
    z_prior: str = "normal"  # hypervae: p(z) = N(0, I) (the paper), or "task": p(z | u) generated with θ(u)
    random_context: bool = False  # set guides: q(u) reads a random share of each task's minibatch in training
    theta_layout: str = "paper"  # hypervae: the matrices θ(u)'s tensors are generated as (nets.THETA_LAYOUTS)
    split_context: bool = False  # hypervae: q(u) reads the first k of a task's minibatch, the model scores the rest
    flip: float = 0.0  # share of the pixels of every training image flipped at random, afresh each step (background models)
    exclude_classes: list[str] = dataclasses.field(default_factory=list)  # tasks held out of training: names or globs
    validation: float = 0.0  # fraction of each training task's images held out as the validation part
    train_tasks: list[str] | None = None  # filled in from the training data when a run starts
    # A folder dataset (`folders`): the share of each task's images in the test part where the
    # folder is one tree, and the seed that draws them; inversion (None: detected); and the
    # fingerprint of its files, filled in when a run starts and checked by every later load.
    test_fraction: float = folders.DEFAULT_TEST_FRACTION
    test_seed: int = 0
    invert: bool | None = None
    data_fingerprint: str | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.is_folder:
            self.dataset = str(Path(self.dataset).expanduser().absolute())
        elif (self.test_fraction, self.test_seed, self.invert) != (folders.DEFAULT_TEST_FRACTION, 0, None):
            raise ConfigError("--test-fraction, --test-seed and --invert apply to a folder dataset")
        if not 0 <= self.flip < 0.5:
            raise ConfigError(f"--flip {self.flip}: a share of pixels in [0, 0.5)")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test-fraction {self.test_fraction}: a fraction in (0, 1)")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        # Other models take the paper's values, which leave them as they were before presets.
        for key, value in PRESETS[self.preset if self.model == "hypervae" else "paper"].items():
            if getattr(self, key) is None:
                setattr(self, key, DEFAULT_GUIDE[self.model] if key == "guide" and self.model != "hypervae" else value)
        if self.dataset == "omniglot" and self.task_by is None:
            self.task_by = "alphabet"
        if self.dataset != "omniglot" and (self.split != "drawers" or self.task_by not in (None, "class")):
            raise ConfigError("--split and --task-by apply to omniglot only")
        if not 0 <= self.validation < 1:
            raise ConfigError(f"--validation {self.validation}: a fraction in [0, 1)")
        if self.model != "hypervae" and self.kl_u_warmup:
            raise ConfigError("--kl-u-warmup applies to hypervae only")
        if self.model != "hypervae" and (self.kl_z_anneal or self.z_prior != "normal"):
            raise ConfigError("--kl-z-anneal and --z-prior apply to hypervae only")
        if self.random_context and self.model != "hypervae":  # and a set guide: TaskGuide checks
            raise ConfigError("--random-context applies to hypervae only")
        if self.split_context and self.model != "hypervae":
            raise ConfigError("--split-context applies to hypervae only")
        if self.split_context and self.random_context:
            raise ConfigError("--split-context and --random-context are two ways to choose q(u)'s context: give one")
        if self.split_context and self.batch_size < 2:
            raise ConfigError("--split-context needs --batch-size 2 or more: a context and an image to score")
        if self.model != "hypervae" and (self.u_dim, self.h_dim, self.theta_layout) != (10, 20, "paper"):
            raise ConfigError("--u-dim, --h-dim and --theta-layout apply to hypervae only")
        if self.theta_layout not in THETA_LAYOUTS:
            raise ConfigError(f"unknown θ layout {self.theta_layout!r}; choose one of {', '.join(THETA_LAYOUTS)}")
        if self.z_prior not in Z_PRIORS:
            raise ConfigError(f"unknown z prior {self.z_prior!r}; choose one of {', '.join(Z_PRIORS)}")
        if self.u_scale_init <= 0:
            raise ConfigError(f"--u-scale-init {self.u_scale_init}: a factor above 0")
        if self.kl_z_start <= 0:
            raise ConfigError(f"--kl-z-start {self.kl_z_start}: a weight above 0")
        if self.model == "vae" and self.tasks_per_step != 1:
            raise ConfigError("--tasks-per-step applies to task models (hypervae, metavae), not vae")
        if self.model == "metavae" and self.train_tasks and len(self.train_tasks) > MAX_METAVAE_TASKS:
            raise ConfigError(
                f"metavae keeps one decoder per training task: {len(self.train_tasks)} tasks are more "
                f"than {MAX_METAVAE_TASKS}; use --task-by alphabet"
            )

    @property
    def is_folder(self) -> bool:
        return self.dataset not in data.DATASETS

    def lr_at(self, step: int) -> float:
        """The learning rate of `step`: a function of the step alone, so a resumed run, or one
        given more steps, follows the same schedule as an uninterrupted one."""
        return self.lr * 0.5 ** (step / self.lr_half_life) if self.lr_half_life else self.lr

    def kl_weights(self, step: int) -> tuple[float, float]:
        """The weights of KL(u) and KL(z) in the loss of `step` (1 and 1: the paper's objective)."""
        u = min(1.0, step / self.kl_u_warmup) if self.kl_u_warmup else 1.0
        z = self.kl_z_start + (1.0 - self.kl_z_start) * min(1.0, step / self.kl_z_anneal) if self.kl_z_anneal else 1.0
        return u, z

    def load_data(self, part: str, root=None) -> data.TaskData:
        """One part of the run's data: "train" (without the held-out classes and the validation
        images), "validation" (the images --validation held out of the training tasks), "test"
        (all classes: discovery and evaluation look at the unseen tasks too) or "held-out" (the
        training part's images of the classes --exclude-classes held out: tasks never trained on,
        for choosing a configuration without the test set)."""
        if part not in PARTS:
            raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
        if part == "validation" and not self.validation:
            raise ConfigError("this run holds no validation part (it was trained with --validation 0)")
        if part == "held-out" and not self.exclude_classes:
            raise ConfigError("this run holds no held-out tasks (it was trained without --exclude-classes)")
        if self.is_folder:
            folder = self.scan_folder()
            loaded = folder.part("test" if part == "test" else "train", self.invert, self.test_fraction, self.test_seed)
        else:
            loaded = data.load(self.dataset, "test" if part == "test" else "train", root,
                               split=self.split, task_by=self.task_by)
        if part == "test":
            return loaded
        excluded = excluded_tasks(loaded.task_names, self.exclude_classes)
        if part == "held-out":
            return loaded.without_tasks(sorted(set(loaded.task_names) - set(excluded)))
        if excluded:
            loaded = loaded.without_tasks(excluded)
        if self.validation:
            kept, held = loaded.hold_out(self.validation)
            loaded = kept if part == "train" else held
        return loaded

    def scan_folder(self) -> folders.Folder:
        """The run's folder dataset, scanned; a DataError where its files changed since the run
        recorded their fingerprint."""
        folder = folders.scan(self.dataset)
        if self.data_fingerprint is not None and folder.fingerprint != self.data_fingerprint:
            raise data.DataError(
                f"{self.dataset}: its images changed since the run was trained (fingerprint {folder.fingerprint}, "
                f"the run's {self.data_fingerprint}); restore them, or train a new run on them")
        return folder

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def unknown_keys(cls, d: dict) -> list[str]:
        return sorted(set(d) - {f.name for f in dataclasses.fields(cls)})

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        unknown = cls.unknown_keys(d)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        # A config written before presets existed holds the paper's settings.
        return cls(**{"preset": "paper", **d})

    @classmethod
    def read_file(cls, path: Path) -> dict:
        """The settings of a config file, for a new run: a run's config.json or one written by
        hand with some of the keys. What describes the data a run was trained on (its tasks and
        their fingerprint) is left out, to be read from the data of the new run."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: a config file holds one JSON object of settings")
        unknown = cls.unknown_keys(d)
        if unknown:
            raise ConfigError(f"{path}: unknown config keys {', '.join(unknown)}")
        return {k: v for k, v in d.items() if k not in ("train_tasks", "data_fingerprint")}

    def save(self, path: Path) -> None:
        from .files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"{path}: not a readable run config ({e})") from None
