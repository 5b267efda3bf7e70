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
from pyro.infer.util import zero_grads
from tqdm import tqdm

from . import checkpoint
from .batches import MixedBatches, TaskBatches
from .config import RunConfig
from .files import atomic_write_text, ensure_writable_dir
from .program import build

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


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


def svi_step(svi: SVI, *args, skip_nonfinite: bool = False) -> tuple[float, bool]:
    """`SVI.step`, with the check for a non-finite loss between the gradients and the update:
    returns the loss and whether the parameters were updated."""
    with poutine.trace(param_only=True) as param_capture:
        loss = svi.loss_and_grads(svi.model, svi.guide, *args)
    params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
    loss = float(loss)
    update = math.isfinite(loss) or not skip_nonfinite
    if update:
        svi.optim(params)
    zero_grads(params)
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


def batches_for(config: RunConfig, data):
    if config.model == "vae":
        return MixedBatches(data, config.batch_size, config.seed)
    return TaskBatches(data, config.batch_size, config.tasks_per_step, config.seed)


def load_run(out: Path, device="cpu"):
    """The program of a finished or stopped run, with its trained parameters, in eval mode."""
    out = Path(out)
    config = RunConfig.load(out / CONFIG)
    state = checkpoint.load(out / CHECKPOINT)
    _check_same_run(out / CHECKPOINT, state, config, ignore=("steps",))
    program = build(config)
    program.load_state_dict(state["program"])
    return program.to(device).eval(), state


def train(
    config: RunConfig,
    out: Path,
    *,
    data_root=None,
    device: str = "cpu",
    resume: bool = False,
    checkpoint_every: int = 500,
    log_every: int = 10,
    progress: bool = True,
    on_nan: str = "stop",
    deterministic: bool = False,
) -> TrainSummary:
    """Train `config` into the run folder `out`. A non-finite loss stops the run (`on_nan="stop"`,
    the last checkpoint kept) or skips that step's update (`"skip"`, counted in the metrics as
    `skipped`); either way no non-finite update reaches the parameters."""
    out = Path(out)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise TrainError(f"{out} already holds a run; pass --resume to go on with it or choose another --out")
    if resume and not ckpt_path.exists():
        raise TrainError(f"--resume: {out} holds no {CHECKPOINT}")
    dev = resolve_device(device)
    state = checkpoint.load(ckpt_path) if resume else None
    if state is not None:
        _check_same_run(ckpt_path, state, config, ignore=("steps",))
    data = config.load_data("train", data_root)
    if config.train_tasks is None:
        config = replace(config, train_tasks=data.task_names)
    elif config.train_tasks != data.task_names:
        raise TrainError(f"--resume: the training tasks of {data.name} are not those the run was trained on")
    try:
        ensure_writable_dir(out)
    except OSError as e:
        raise TrainError(f"cannot write to --out {out}: {e.strerror or e}") from None

    for stale in out.glob(f".{CHECKPOINT}.*.tmp"):  # left by a process killed mid-write
        stale.unlink()
    if deterministic:
        set_deterministic()
    pyro.set_rng_seed(config.seed)
    program = build(config).to(dev)
    batches = batches_for(config, data)
    pyro.clear_param_store()
    optim = pyro.optim.Adam({"lr": config.lr})
    svi = SVI(program.model, program.guide, optim, Trace_ELBO(max_plate_nesting=2))

    start, seconds, saved_step, skipped = 0, 0.0, None, 0
    if state is not None:
        program.load_state_dict(state["program"])
        optim.set_state(state["optim"])
        checkpoint.set_rng_state(state["rng"])
        batches.generator.set_state(state["batches"])
        start, seconds, skipped = state["step"], state["seconds"], state.get("skipped", 0)
        saved_step = start
        _truncate_metrics(out / METRICS, start)
    else:
        (out / METRICS).write_text("")
    config.save(out / CONFIG)

    def save_checkpoint(step):
        nonlocal saved_step
        checkpoint.save(
            ckpt_path,
            {
                "config": config.to_dict(),
                "step": step,
                "seconds": seconds,
                "skipped": skipped,
                "program": program.state_dict(),
                "optim": optim.get_state(),
                "rng": checkpoint.rng_state(),
                "batches": batches.generator.get_state(),
            },
        )
        saved_step = step

    first = last = None
    window = []
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc=f"{config.model} {config.dataset}",
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 30,
        file=sys.stderr,
    )
    with open(out / METRICS, "a") as metrics:
        for step in range(start + 1, config.steps + 1):
            tic = time.perf_counter()
            x, task = next(batches)
            weight = min(1.0, step / config.kl_u_warmup) if config.kl_u_warmup else 1.0
            loss, updated = svi_step(svi, x.to(dev, torch.float32), task, weight, skip_nonfinite=True)
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
                line = {"step": step, "loss": loss if updated else None, "loss_avg": avg,
                        "seconds": round(seconds, 3), "skipped": skipped}
                metrics.write(json.dumps(line) + "\n")
                metrics.flush()
                bar.set_postfix(loss=f"{avg:.2f}" if window else "nan", refresh=False)
                window = []
            bar.update(1)
            if step % checkpoint_every == 0 or step == config.steps:
                save_checkpoint(step)
    bar.close()
    return TrainSummary(out, start, config.steps, first, last, seconds, skipped)


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
