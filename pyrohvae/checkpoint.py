"""Checkpoint files: a header with format version and SHA-256, then a torch.save payload.

Written to a temporary file and renamed, so a checkpoint on disk is always a whole one; the
checksum catches a file damaged afterwards.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
import torch

from .files import UserError, atomic_write_bytes

# 2: the optimizer's and the schedule's torch state dicts (`trainer.Trainer.state`); 1: Adam's
# state per Pyro param-store name, no schedule (read by `load_format1_optimizer`).
FORMAT_VERSION = 2
_MAGIC = b"PYROHVAE-CHECKPOINT"


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file."""


def save(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = b"%s %d %s\n" % (_MAGIC, FORMAT_VERSION, hashlib.sha256(payload).hexdigest().encode())
    atomic_write_bytes(path, header + payload)


def load(path: Path) -> dict:
    try:
        blob = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None
    header, _, payload = blob.partition(b"\n")
    fields = header.split(b" ")
    if len(fields) != 3 or fields[0] != _MAGIC or not fields[1].isdigit():
        raise CheckpointError(f"{path}: not a pyrohvae checkpoint")
    version = int(fields[1])
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this pyrohvae reads "
            f"({FORMAT_VERSION}); upgrade pyrohvae"
        )
    if hashlib.sha256(payload).hexdigest().encode() != fields[2]:
        raise CheckpointError(f"{path}: checksum mismatch, the file is damaged")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot unpack checkpoint ({e})") from None


# Format 1 named a parameter by the `pyro.module` it was registered under, then its name there.
_FORMAT1_MODULES = {
    "theta": "theta.",
    "prior": "prior.",
    "guide": "inference.",
    "encoder": "inference.encoder.",
    "decoder": "decoder.",
}


def format1_moments(optim: dict) -> dict[str, dict]:
    """A format-1 optimizer state as torch Adam's per-parameter state (step, exp_avg, exp_avg_sq),
    keyed by the program's parameter names; parameters never stepped are left out."""
    moments = {}
    for store_name, saved in optim.items():
        module, _, name = store_name.partition("$$$")
        prefix = f"decoders.{module[7:]}." if module[7:].isdigit() else _FORMAT1_MODULES[module]
        if saved["state"].get(0):
            moments[prefix + name] = saved["state"][0]
    return moments


def load_format1_optimizer(optimizer, scheduler, params: dict, optim: dict, step: int, lr: float) -> None:
    """Where a format-1 checkpoint left torch's Adam and schedule: format 1 (before the torch
    optimizer) kept Adam's state per Pyro param-store name, and no schedule. Its moments go to the
    parameters they belong to (`params`, by name), the schedule is put at `step`, the rate at `lr`."""
    for name, moments in format1_moments(optim).items():
        p = params[name]
        optimizer.state[p] = {
            k: torch.as_tensor(v, dtype=torch.float32, device=p.device) if k == "step" else v.to(p.device)
            for k, v in moments.items()
        }
    scheduler.last_epoch = step
    for group in optimizer.param_groups:
        group["lr"] = lr


def rng_state() -> dict:
    """Every random number generator a training step draws from."""
    version, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (version, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    version, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((version, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
