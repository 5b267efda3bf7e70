"""Training by SVI with Trace_ELBO, with checkpoints that resume to the same parameters.

A run folder holds `config.json`, `checkpoint.pt` and `metrics.jsonl` (one JSON object per logged
step: `step`, `loss` of that step, `loss_avg` over the steps since the previous line, `seconds` of
training so far).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from tqdm import tqdm

from . import checkpoint, monitor
from .batches import MixedBatches, TaskBatches
from .config import RunConfig
from .distributed import Ranks
from .files import FolderInUse, FolderLock, atomic_write_bytes, atomic_write_text, ensure_writable_dir
from .optim import Adam
from .program import build

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def kept_checkpoint(step: int) -> str:
    """The file name of the checkpoint of `step` kept by --keep-every."""
    return f"checkpoint-step{step}.pt"


class TrainError(Exception):
    """A run that cannot start or go on; the message says why."""


@dataclass
class TrainSummary:
    out: Path
    start_step: int
    steps: int
    first_loss: float | None
    last_loss: float | None
    seconds: float
    skipped: int = 0


def svi_step(svi: SVI, *args, skip_nonfinite: bool = False, ranks: Ranks | None = None) -> tuple[float, bool]:
    """`SVI.step`, with two things between the gradients and the update: the gradients averaged
    across the ranks of a data-parallel run, and the check for a non-finite loss. Returns the
    loss (the mean over ranks) and whether the parameters were updated."""
    with poutine.trace(param_only=True) as param_capture:
        loss = svi.loss_and_grads(svi.model, svi.guide, *args)
    named = sorted((name, site["value"].unconstrained()) for name, site in param_capture.trace.nodes.items())
    params = [p for _, p in named]  # by name: the same order on every rank
    ranks = ranks or Ranks()
    ranks.average_grads(params)
    loss = ranks.mean(float(loss))
    update = math.isfinite(loss) or not skip_nonfinite
    if update:
        svi.optim(params)
    for p in params:  # None, not zeros: a parameter no later step touches is not moved
        p.grad = None
    return loss, update


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


def batches_for(config: RunConfig, data, world: int = 1):
    """The minibatch sampler; with `world` ranks, of the global batch they share out."""
    if config.model == "vae":
        return MixedBatches(data, config.batch_size * world, config.seed)
    return TaskBatches(data, config.batch_size, config.tasks_per_step * world, config.seed)


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


# A caller's torch.no_grad() (a notebook cell, an evaluation loop around it) would make Trace_ELBO
# skip its backward pass without a word, and the run would "train" without moving a parameter.
@torch.enable_grad()
def train(config: RunConfig, out: Path, **options) -> TrainSummary:
    """Train `config` into the run folder `out`. A non-finite loss stops the run (`on_nan="stop"`,
    the last checkpoint kept) or skips that step's update (`"skip"`, counted in the metrics as
    `skipped`); either way no non-finite update reaches the parameters. `keep_every` > 0 also keeps
    the checkpoint of every `keep_every`-th step as `checkpoint-step{N}.pt`. With `ranks` from
    `Ranks.start`, this process is one rank of a data-parallel run (see `distributed.py`).
    Every `log_every` steps a line goes to `metrics.jsonl` and, with `tensorboard` (True: into
    `out`; or a folder), to TensorBoard, which also gets a grid of samples every `image_every`
    steps (0: none). One process at a time per run folder: another gets a TrainError
    naming the holder's PID (`FolderLock`). Options: those of `_train`."""
    held = []  # the run folder's lock, once taken: dropped however the run ends
    try:
        return _train(config, out, held=held, **options)
    finally:
        for lock in held:
            lock.release()


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
    held: list,
) -> TrainSummary:
    """`train`, the run folder's lock appended to `held` once taken."""
    ranks = ranks or Ranks()
    out = Path(out)
    ckpt_path = out / CHECKPOINT
    if ranks.writer and out.is_dir():  # first: "in use" says more than what a run in progress left so far
        _lock(out, held)
    if ckpt_path.exists() and not resume:
        raise TrainError(f"{out} already holds a run; pass --resume to go on with it or choose another --out")
    if resume and not ckpt_path.exists():
        raise TrainError(f"--resume: {out} holds no {CHECKPOINT}")
    if ranks.parallel and config.model == "metavae":
        raise TrainError("--distributed: metavae's ranks would step different decoders; train it in one process")
    dev = resolve_device(ranks.device(device))
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
        batches = batches_for(config, data, ranks.world)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if ranks.writer:
        try:
            ensure_writable_dir(out)
        except OSError as e:
            raise TrainError(f"cannot write to --out {out}: {e.strerror or e}") from None
        if not held:  # before anything is written, or a stale file removed: it may be another process's
            _lock(out, held)
        for stale in out.glob(".checkpoint*.pt.*.tmp"):  # left by a process killed mid-write
            stale.unlink()
    if deterministic:
        set_deterministic()

    pyro.set_rng_seed(config.seed)  # the same initial parameters on every rank
    program = build(config).to(dev)
    pyro.clear_param_store()
    optim = Adam({"lr": config.lr})
    svi = SVI(program.model, program.guide, optim, Trace_ELBO(max_plate_nesting=2))

    start, seconds, saved_step, skipped = 0, 0.0, None, 0
    if state is not None:
        program.load_state_dict(state["program"])
        optim.set_state(state["optim"])
        rng = state["rng"]
        if isinstance(rng, list) and len(rng) != ranks.world:
            raise TrainError(f"--resume: {ckpt_path} was written by {len(rng)} ranks; resume it with as many")
        checkpoint.set_rng_state(rng[ranks.rank] if isinstance(rng, list) else rng)
        if ranks.parallel and not isinstance(rng, list):  # a one-process checkpoint, shared out
            pyro.set_rng_seed(config.seed + 1_000_003 * ranks.rank + state["step"])
        batches.generator.set_state(state["batches"])
        start, seconds, skipped = state["step"], state["seconds"], state.get("skipped", 0)
        saved_step = start
    elif ranks.parallel:
        pyro.set_rng_seed(config.seed + 1_000_003 * ranks.rank)  # but each rank its own noise
    ranks.broadcast(program)

    def kept(step) -> bool:
        return bool(keep_every) and step % keep_every == 0

    def keep(step):  # the last checkpoint, copied under its step's name
        atomic_write_bytes(out / kept_checkpoint(step), ckpt_path.read_bytes())

    if ranks.writer:
        if state is not None:
            _truncate_metrics(out / METRICS, start)
            if kept(start) and not (out / kept_checkpoint(start)).exists():  # killed before it was copied
                keep(start)
        else:
            (out / METRICS).write_text("")
        config.save(out / CONFIG)

    def save_checkpoint(step):
        nonlocal saved_step
        rng = ranks.gather(checkpoint.rng_state())  # every rank's noise, to resume each exactly
        digests = ranks.gather(_digest(program))
        if len(set(digests)) > 1:
            raise TrainError(f"the ranks' parameters differ at step {step}; not checkpointed")
        if ranks.writer:
            checkpoint.save(
                ckpt_path,
                {
                    "config": config.to_dict(),
                    "step": step,
                    "seconds": seconds,
                    "skipped": skipped,
                    "world": ranks.world,
                    "rank_digests": digests,
                    "program": program.state_dict(),
                    "optim": optim.get_state(),
                    "rng": rng if ranks.parallel else rng[0],
                    "batches": batches.generator.get_state(),
                },
            )
            if kept(step):
                keep(step)
        saved_step = step

    first = last = None
    window = []
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc=f"{config.model} {config.dataset}",
        disable=not (progress and ranks.writer),
        mininterval=0.5 if sys.stderr.isatty() else 30,
        file=sys.stderr,
    )
    metrics = open(out / METRICS, "a") if ranks.writer else None
    board = None
    if ranks.writer and tensorboard:
        board = monitor.TensorBoard(out if tensorboard is True else Path(tensorboard), start, seconds)
    try:
        for step in range(start + 1, config.steps + 1):
            tic = time.perf_counter()
            x, task = ranks.shard(*next(batches))
            if config.flip:  # a background model's noise, drawn by the minibatches' own generator
                x = x ^ (torch.rand(x.shape, generator=batches.generator) < config.flip).to(x.dtype)
            weights = config.kl_weights(step) if config.model == "hypervae" else ()
            optim.set_lr(config.lr_at(step))
            loss, updated = svi_step(svi, x.to(dev, torch.float32), task, *weights, skip_nonfinite=True, ranks=ranks)
            seconds += time.perf_counter() - tic
            if not updated and on_nan == "stop":
                kept = f"{ckpt_path} keeps step {saved_step}" if saved_step else "no checkpoint was written yet"
                raise TrainError(f"loss is {loss} at step {step}; stopped ({kept})")
            if not updated:
                skipped += 1
            else:
                first = loss if first is None else first
                last = loss
                window.append(loss)
            if step % log_every == 0 or step == config.steps:
                avg = sum(window) / len(window) if window else None
                if metrics is not None:
                    line = {"step": step, "loss": loss if updated else None, "loss_avg": avg,
                            "seconds": round(seconds, 3), "skipped": skipped, "lr": config.lr_at(step),
                            **monitor.loss_terms(program, x.to(dev, torch.float32), task)}
                    metrics.write(json.dumps(line) + "\n")
                    metrics.flush()
                    if board is not None:
                        board.scalars(line)
                bar.set_postfix(loss=f"{avg:.2f}" if window else "nan", refresh=False)
                window = []
            bar.update(1)
            if board is not None and image_every and (step % image_every == 0 or step == config.steps):
                board.samples(step, program, data, config.seed)
            if step % checkpoint_every == 0 or step == config.steps or kept(step):
                save_checkpoint(step)
    finally:
        if metrics is not None:
            metrics.close()
        if board is not None:
            board.close()
        bar.close()
    return TrainSummary(out, start, config.steps, first, last, seconds, skipped)


def _lock(out: Path, held: list) -> None:
    try:
        held.append(FolderLock(out))
    except FolderInUse as e:
        raise TrainError(str(e)) from None


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
