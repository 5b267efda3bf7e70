"""A trained model as one plain file, to hand to someone: `export RUN --out model.pt`.

The file is a `torch.save` of a dict of plain types: `format` ("pyrohvae-model"), `version`, `config`
(the run's config.json, as JSON text), `step`, and `state_dict` (every trained parameter, by
name). It loads with `torch.load(path, weights_only=True)`, which unpickles tensors and plain
containers only, never code, so a file from someone else cannot run anything; no new dependency
is needed (safetensors, the other choice, would add one, and keeps no nested config). No optimizer
state, random state or metrics: to train on, use the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .config import RunConfig
from .files import atomic_path
from .program import build

FORMAT = "pyrohvae-model"
VERSION = 1


def export(program, step: int, out: Path) -> None:
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(program.config.to_dict()),
        "step": step,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in program.state_dict().items()},
    }
    with atomic_path(Path(out)) as tmp:
        torch.save(state, tmp)


def load(path: Path, device="cpu"):
    """(program in eval mode, {"step": ...}) from an exported file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a model exported by pyrohvae ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a model exported by pyrohvae")
    if state["version"] > VERSION:
        raise CheckpointError(
            f"{path}: export format {state['version']} is newer than this pyrohvae reads "
            f"({VERSION}); upgrade pyrohvae"
        )
    program = build(RunConfig.from_dict(json.loads(state["config"])))
    program.load_state_dict(state["state_dict"])
    return program.to(device).eval(), {"step": state["step"], "seconds": None}
