"""Background models for the likelihood-ratio outlier score (Ren et al., NeurIPS 2019).

A background model is a model of the same kind as a run, trained on the same normal data with a
share μ of every image's pixels flipped at random (`RunConfig.flip`, afresh each step): the noise
wipes out the shapes that make an image what it is, so the background learns what survives it,
the population's simple statistics (how much ink, where). The score −log p_model(x) +
log p_background(x) then keeps what only the model knows.

`train_backgrounds` trains one per candidate μ into the run's folder (`RUN/background-flipμ/`);
`choose` picks μ on normal data only (the run's validation part, or else 1,000 of its training
images), never on outliers: the μ whose ratio score is least tied to the amount of ink, by the
absolute Spearman correlation between the score and the number of pixels on. That tie is the
likelihood's blind spot (simple images score as most normal); a ratio that does not follow the
ink on normal data cannot be fooled by it. The choice goes to `RUN/background.json`, where
`outliers --score ratio` finds it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from .config import RunConfig
from .files import OptionError, atomic_write_text
from .outliers import datum_nll

# Down to 0.01: by the normal images' ρ alone, Fashion-MNIST runs favour the smallest flips offered.
FLIPS = (0.01, 0.02, 0.05, 0.1, 0.2)
CHOICE = "background.json"
CHOICE_IMAGES = 1000


def folder_of(run: Path, flip: float) -> Path:
    return Path(run) / f"background-flip{flip:g}"


def background_config(config: RunConfig, flip: float, steps: int | None = None) -> RunConfig:
    return replace(config, flip=flip, steps=steps or config.steps)


def choice_images(config: RunConfig, data_root=None, seed: int = 0):
    """The normal images μ is chosen on: the validation part, or 1,000 random training images."""
    if config.validation:
        return config.load_data("validation", data_root)
    train = config.load_data("train", data_root)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:CHOICE_IMAGES]
    return train.subset(pick)


def choose(run: Path, program, flips, data, samples: int = 16, seed: int = 0) -> dict:
    """Pick μ among the trained `flips` (module docstring) and write RUN/background.json."""
    from scipy.stats import spearmanr

    from .train import load_run

    ours = datum_nll(program, data, samples, seed)  # the same for every candidate
    ink = data.images.reshape(len(data), -1).sum(1)
    candidates = []
    for flip in flips:
        background, _ = load_run(folder_of(run, flip), program.device)
        ratio = ours - datum_nll(background, data, samples, seed)
        rho = float(spearmanr(ratio.numpy(), ink.numpy()).statistic)
        candidates.append({"flip": flip, "folder": folder_of(run, flip).name, "ink_spearman": rho})
    best = min(candidates, key=lambda c: abs(c["ink_spearman"]))
    choice = {
        **best,
        "criterion": "least |Spearman ρ| between the ratio score and the pixels on",
        "chosen_on": data.name,
        "n": len(data),
        "samples": samples,
        "candidates": candidates,
    }
    atomic_write_text(Path(run) / CHOICE, json.dumps(choice, indent=2) + "\n")
    return choice


def train_backgrounds(
    run: Path,
    program,
    flips=FLIPS,
    steps=None,
    samples=16,
    data_root=None,
    device="cpu",
    progress=True,
    seed: int = 0,
    log_every: int = 10,
) -> dict:
    """A background per μ of `flips`, trained like the run (going on where one was begun), then μ
    chosen on normal data (`choose`), drawn with `seed` where the run has no validation part."""
    from .train import CHECKPOINT, train

    for flip in flips:
        folder = folder_of(run, flip)
        config = background_config(program.config, flip, steps)
        resume = (folder / CHECKPOINT).exists()
        train(
            config,
            folder,
            data_root=data_root,
            device=device,
            resume=resume,
            progress=progress,
            tensorboard=False,
            log_every=log_every,
        )
    return choose(run, program, flips, choice_images(program.config, data_root, seed), samples)


def load_background(run: Path, device="cpu"):
    """The background program `choose` picked for a run, or a ValueError saying how to make it."""
    from .train import load_run

    path = Path(run) / CHOICE
    if not path.is_file():
        raise OptionError(f"{run} has no background model: train one with `background {run}` first")
    choice = json.loads(path.read_text())
    program, _ = load_run(Path(run) / choice["folder"], device)
    return program, choice
