"""Training a run folder, with checkpoints that resume to the same parameters.

The loop and its update are `trainer.py`'s; this module opens the run folder, builds the trainer
from a config or a checkpoint, and gives it the run's hooks. A run folder holds `config.json`,
`checkpoint.pt` and `metrics.jsonl` (one JSON object per logged step: `step`, `loss` of that step,
`loss_avg` over the steps since the previous line, `seconds` of training so far, and the loss's
terms, `monitor.MetricsFile`).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

import pyro
import torch

from . import checkpoint, data, monitor
from .config import RunConfig
from .distributed import Ranks
from .files import (
    FolderInUse,
    FolderLock,
    UserError,
    atomic_write_bytes,
    atomic_write_text,
    ensure_writable_dir,
)
from .program import build, program_class
from .trainer import Hook, NonFiniteLoss, Trainer

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def kept_checkpoint(step: int) -> str:
    """The file name of the checkpoint of `step` kept by --keep-every."""
    return f"checkpoint-step{step}.pt"


class TrainError(UserError):
    """A run that cannot start or go on; the message says why."""


class Interrupted(TrainError):
    """SIGINT or SIGTERM stopped the run after a step, which is checkpointed. `signum` is the
    signal, whose shell convention 128 + signum the CLI exits with."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """While training, SIGINT (Ctrl-C) and SIGTERM (what a scheduler sends before it pre-empts a
    job) ask the loop to stop after the step in progress rather than kill it mid-step: `requested`
    says so, on every rank at the same step. A second signal acts as it did before (Ctrl-C raises
    KeyboardInterrupt, SIGTERM kills). Signal handlers can only be set in the main thread; in
    another, nothing is caught."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, ranks: Ranks):
        self.ranks, self.signum, self.previous = ranks, None, {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._caught) for s in self.SIGNALS}
        return self

    def _caught(self, signum, frame) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()

    def requested(self) -> bool:
        return self.ranks.flag(self.signum is not None)


@dataclass
class TrainSummary:
    out: Path
    start_step: int
    steps: int
    first_loss: float | None
    last_loss: float | None
    seconds: float
    skipped: int = 0

    def describe(self) -> str:
        """One line: the steps trained, the loss from first to last, the time."""
        if self.start_step >= self.steps:
            return f"{self.out}: already trained for {self.steps} steps"
        losses = (
            "no finite loss"
            if self.first_loss is None
            else f"loss {self.first_loss:.2f} -> {self.last_loss:.2f} nats/image"
        )
        skipped = f", {self.skipped} steps skipped (non-finite loss)" if self.skipped else ""
        return (
            f"{self.out}: steps {self.start_step + 1}-{self.steps}, {losses}{skipped}, "
            f"{self.seconds:.0f} s of training in all"
        )


def set_deterministic() -> None:
    """PyTorch's deterministic algorithms (what CUDA needs; the CPU path already is)."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name} asked for, but torch sees no CUDA GPU on this machine")
    return device


def load_run(out: Path, device="cpu", checkpoint_name: str = CHECKPOINT):
    """The program of a finished or stopped run, with its trained parameters, in eval mode: those
    of its last checkpoint, or of one kept by `keep_every` (`checkpoint_name`, a file in `out`).
    `out` may also be a file written by `export`."""
    out = Path(out)
    if out.is_file():
        from . import export

        return export.load(out, device)
    config = RunConfig.load(out / CONFIG)
    path = out / checkpoint_name
    if Path(checkpoint_name).name != checkpoint_name or not path.is_file():
        kept = ", ".join(sorted(p.name for p in out.glob("checkpoint*.pt"))) or "none"
        raise TrainError(f"{out} holds no checkpoint {checkpoint_name!r} (it holds: {kept})")
    state = checkpoint.load(path)
    _check_same_run(path, state, config, ignore=("steps",))
    program = build(config)
    program.load_state_dict(state["program"])
    return program.to(device).eval(), state


def train(config: RunConfig, out: Path, **options) -> TrainSummary:
    """Train `config` into the run folder `out`. A non-finite loss stops the run (`on_nan="stop"`,
    the last checkpoint kept) or skips that step's update (`"skip"`, counted in the metrics as
    `skipped`); either way no non-finite update reaches the parameters. `keep_every` > 0 also keeps
    the checkpoint of every `keep_every`-th step as `checkpoint-step{N}.pt`. With `ranks` from
    `Ranks.start`, this process is one rank of a data-parallel run (see `distributed.py`).
    Every `log_every` steps a line goes to `metrics.jsonl` and, with `tensorboard` (True: into
    `out`; or a folder), to TensorBoard, which also gets a grid of samples every `image_every`
    steps (0: none). `hooks` are more `trainer.Hook`s, run after the run's own. One process at a
    time per run folder: another gets a TrainError naming the holder's PID (`FolderLock`).
    Options: those of `_train`."""
    with contextlib.ExitStack() as lock:  # the run folder's lock, once taken: dropped however the run ends
        return _train(config, out, lock=lock, **options)


def _train(
    config: RunConfig,
    out: Path,
    *,
    data_root=None,
    device: str = "cpu",
    resume: bool = False,
    checkpoint_every: int = 500,
    keep_every: int = 0,
    log_every: int = 10,
    progress: bool = True,
    on_nan: str = "stop",
    deterministic: bool = False,
    ranks: Ranks | None = None,
    tensorboard: Path | bool = True,
    image_every: int = 1000,
    hooks: tuple[Hook, ...] = (),
    lock: contextlib.ExitStack,
) -> TrainSummary:
    """`train`, the run folder's lock entered into `lock` once taken."""
    ranks, out = ranks or Ranks(), Path(out)
    dev = resolve_device(ranks.device(device))  # before the run folder is made
    config, state, data, batches = _open(config, out, resume, data_root, ranks, lock)
    if deterministic:
        set_deterministic()
    trainer = _trainer(config, state, batches, dev, ranks)
    if config.kl_u_scale == "task":  # KL(u) weighed by a minibatch's share of its task
        trainer.program.task_sizes = data.task_sizes()
    start = trainer.step
    checkpoints = Checkpoints(out, config, batches, keep_every, saved=start if state else None)
    own: list[Hook] = [checkpoints, losses := LossRange()]
    if ranks.writer:
        _begin_files(out, config, state, checkpoints)
        listeners = []  # of every metrics line
        if tensorboard:
            log_dir = out if tensorboard is True else Path(tensorboard)
            listeners.append(monitor.TensorBoardHook(log_dir, start, trainer.seconds, data, image_every))
        if progress:
            listeners.append(monitor.ProgressBar(config, start))
        own += [monitor.MetricsFile(out / METRICS, log_every, config.steps, listeners), *listeners]
    try:
        with StopSignals(ranks) as signals:
            finished = trainer.run(
                batches, own + list(hooks), checkpoints.due(checkpoint_every), on_nan, signals.requested
            )
    except NonFiniteLoss as e:
        raise TrainError(f"{e}; stopped ({checkpoints.said()})") from None
    if not finished:
        signum = signals.signum or signal.SIGTERM  # another rank's signal
        raise Interrupted(
            f"{signal.Signals(signum).name} at step {trainer.step} of {config.steps}: {checkpoints.said()}; "
            f"go on with: train --out {out} --resume",
            signum,
        )
    return TrainSummary(out, start, config.steps, losses.first, losses.last, trainer.seconds, trainer.skipped)


def _open(config: RunConfig, out: Path, resume: bool, data_root, ranks: Ranks, lock: contextlib.ExitStack):
    """Check that the run can start or go on, and take the folder's lock (into `lock`): the config
    (train_tasks and the data's fingerprint filled in), the checkpoint to resume or None, the data,
    the minibatches."""
    ckpt_path = out / CHECKPOINT
    locked = ranks.writer and out.is_dir()
    if locked:  # first: "in use" says more than what a run in progress left so far
        _lock(out, lock)
    if ckpt_path.exists() and not resume:
        raise TrainError(f"{out} already holds a run; pass --resume to go on with it or choose another --out")
    if resume and not ckpt_path.exists():
        raise TrainError(f"--resume: {out} holds no {CHECKPOINT}")
    if ranks.parallel and not program_class(config).data_parallel:
        raise TrainError(
            f"--distributed: a {config.model}'s ranks would not stay identical; train it in one process"
        )
    state = checkpoint.load(ckpt_path) if resume else None
    if state is not None:
        _check_same_run(ckpt_path, state, config, ignore=("steps",))
    if config.is_folder and config.data_fingerprint is None:  # checked by every later load of the folder
        config = replace(config, data_fingerprint=config.scan_folder().fingerprint)
    data = config.load_data("train", data_root)
    if config.train_tasks is None:
        config = replace(config, train_tasks=data.task_names)
    elif config.train_tasks != data.task_names:
        raise TrainError(f"--resume: the training tasks of {data.name} are not those the run was trained on")
    try:
        batches = program_class(config).minibatches(config, data, ranks.world)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if ranks.writer:
        try:
            ensure_writable_dir(out)
        except OSError as e:
            raise TrainError(f"cannot write to --out {out}: {e.strerror or e}") from None
        if not locked:  # before anything is written, or a stale file removed: it may be another process's
            _lock(out, lock)
        for stale in out.glob(".checkpoint*.pt.*.tmp"):  # left by a process killed mid-write
            stale.unlink()
    return config, state, data, batches


def _trainer(config: RunConfig, state: dict | None, batches, device: torch.device, ranks: Ranks) -> Trainer:
    """The program built from the seed (the same initial parameters on every rank), on `device`,
    and where the checkpoint `state` left off, random state and minibatches too."""
    pyro.set_rng_seed(config.seed)
    program = build(config).to(device)
    if state is not None:
        rng = state["rng"]
        if isinstance(rng, list) and len(rng) != ranks.world:
            raise TrainError(
                f"--resume: the checkpoint was written by {len(rng)} ranks; resume it with as many"
            )
    try:
        trainer = Trainer(
            program, ranks, [device.index] if device.type == "cuda" and ranks.parallel else None
        )
    except ValueError as e:  # an estimator DistributedDataParallel cannot take
        raise TrainError(str(e)) from None
    if state is None:
        if ranks.parallel:
            pyro.set_rng_seed(config.seed + 1_000_003 * ranks.rank)  # but each rank its own noise
        return trainer
    trainer.load_state(state)
    checkpoint.set_rng_state(rng[ranks.rank] if isinstance(rng, list) else rng)
    if ranks.parallel and not isinstance(rng, list):  # a one-process checkpoint, shared out
        pyro.set_rng_seed(config.seed + 1_000_003 * ranks.rank + state["step"])
    batches.generator.set_state(state["batches"])
    return trainer


def _begin_files(out: Path, config: RunConfig, state: dict | None, checkpoints: Checkpoints) -> None:
    """config.json, and a metrics file that starts empty or at the checkpoint's step."""
    if state is not None:
        _truncate_metrics(out / METRICS, state["step"])
        checkpoints.keep_missing(state["step"])
    else:
        (out / METRICS).write_text("")
    config.save(out / CONFIG)


class Checkpoints(Hook):
    """checkpoint.pt at every checkpoint step, written whole or not at all: the parameters, the
    optimizer and schedule, every rank's random state and the minibatches' generator, so that a
    resumed run goes on bit for bit; with `keep_every`, a copy of every `keep_every`-th step's
    (`kept_checkpoint`). Every rank takes part (the gathers); only the writer writes."""

    def __init__(self, out: Path, config: RunConfig, batches, keep_every: int, saved: int | None):
        self.out, self.path, self.config = out, out / CHECKPOINT, config
        self.batches, self.keep_every, self.saved = batches, keep_every, saved

    def due(self, every: int):
        return lambda step: step % every == 0 or step == self.config.steps or self.kept(step)

    def kept(self, step: int) -> bool:
        return bool(self.keep_every) and step % self.keep_every == 0

    def keep_missing(self, step: int) -> None:
        if self.kept(step) and not (self.out / kept_checkpoint(step)).exists():  # killed before it was copied
            self._keep(step)

    def _keep(self, step: int) -> None:  # the last checkpoint, copied under its step's name
        atomic_write_bytes(self.out / kept_checkpoint(step), self.path.read_bytes())

    def said(self) -> str:
        return f"{self.path} keeps step {self.saved}" if self.saved else "no checkpoint was written yet"

    def on_checkpoint(self, trainer: Trainer, step: int) -> None:
        ranks = trainer.ranks
        rng = ranks.gather(checkpoint.rng_state())  # every rank's noise, to resume each exactly
        digests = ranks.gather(_digest(trainer.program))
        if len(set(digests)) > 1:
            raise TrainError(f"the ranks' parameters differ at step {step}; not checkpointed")
        if ranks.writer:
            checkpoint.save(
                self.path,
                {
                    "config": self.config.to_dict(),
                    **trainer.state(),
                    "world": ranks.world,
                    "rank_digests": digests,
                    "rng": rng if ranks.parallel else rng[0],
                    "batches": self.batches.generator.get_state(),
                },
            )
            if self.kept(step):
                self._keep(step)
        self.saved = step


class LossRange(Hook):
    """The first and the last finite loss of the run, for its summary."""

    first = last = None

    def on_step(self, trainer: Trainer, step: int, loss: float | None) -> None:
        if loss is not None:
            self.first = loss if self.first is None else self.first
            self.last = loss


def _lock(out: Path, lock: contextlib.ExitStack) -> None:
    try:
        lock.enter_context(FolderLock(out))
    except FolderInUse as e:
        raise TrainError(str(e)) from None


def run_config(
    settings: dict, given: dict, config_file: Path | None, resume: bool, out: Path | None
) -> tuple[RunConfig, Path]:
    """The config `train` runs and its run folder (`out`, or runs/DATASET-MODEL): with `resume`,
    the folder's own config (`resume_config`); else `settings` over the keys of a config file
    where one is given, and over both the settings `given` on the command line."""
    if config_file is not None and not resume:
        settings = {**settings, **RunConfig.read_file(config_file), **given}
    out = out or Path("runs") / f"{data.short_name(settings['dataset'])}-{settings['model']}"
    return (resume_config(out, given) if resume else RunConfig(**settings)), out


def resume_config(out: Path, explicit: dict) -> RunConfig:
    """The config saved in a run folder, with `steps` taken from `explicit` when given there.
    Any other option given explicitly must agree with the saved one."""
    if not (Path(out) / CHECKPOINT).exists():
        raise TrainError(f"--resume: {out} holds no {CHECKPOINT}")
    saved = RunConfig.load(Path(out) / CONFIG)
    clashes = {
        k: (v, getattr(saved, k))
        for k, v in explicit.items()
        if k != "steps" and hasattr(saved, k) and getattr(saved, k) != v
    }
    if clashes:
        said = ", ".join(f"{k}={v[0]!r} (run has {v[1]!r})" for k, v in clashes.items())
        raise TrainError(f"--resume: {out} was trained with other settings: {said}")
    return replace(saved, steps=explicit.get("steps", saved.steps))


def _digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in name order."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_same_run(path, state, config: RunConfig, ignore=()):
    try:  # settings added since the checkpoint was written take their defaults
        saved = RunConfig.from_dict(state.get("config", {})).to_dict()
    except (TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{path}: checkpoint of an unknown configuration ({e})") from None
    ours = config.to_dict()
    diff = [k for k in ours if k not in ignore and saved.get(k) != ours[k]]
    if diff:
        said = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, run {ours[k]!r}" for k in diff)
        raise checkpoint.CheckpointError(f"{path}: checkpoint belongs to another run ({said})")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint, so a resumed run repeats no step."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
