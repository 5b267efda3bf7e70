"""Few-shot models: the main VAE θ(ū) of a task never trained on, from k images of it (the shots).

A guide that reads a set (`set-encoder`, `set-mean`) reads the k shots as the task. A guide that
reads one draw (the paper's `random-draw`) gives one q(u | d_i) per shot, combined:
- `product` (default): the Gaussian product of the k posteriors with the prior divided out k − 1
  times, q(u | d_1..k) ∝ Π_i q(u | d_i) / p(u)^(k−1), which is what Bayes' rule gives when each
  q(u | d_i) ∝ p(u) p(d_i | u) (normal prior only). Its precision is kept at least that of the
  sharpest single shot, where the division would leave less;
- `mean`: the mean of the k locations and of the k scales.

A few-shot model is written as a run folder of a plain VAE (`model: vae`) whose encoder and
decoder weights are θ(ū): `evaluate`, `sample` and every other command read it like a trained VAE.
Where θ(u) generates the prior p(z | u) = N(m, s) as well, the VAE gets the same model with a
N(0, I) prior: z = m + s·ε folded into the decoder's first layer and the encoder's heads, so
every ELBO and likelihood is unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .config import RunConfig
from .data import DataError
from .folders import IMAGE_EXTENSIONS, polarity, read_image, to_bits
from .importance import importance_scores
from .program import build

def task_shots(data, name: str, shots: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """`shots` random images of task `name` of `data` (chosen by `seed`), its other images, and a
    description."""
    if name not in data.task_names:
        known = ", ".join(data.task_names[:10]) + (", ..." if data.num_tasks > 10 else "")
        raise ValueError(f"{data.name} has no task {name!r} (tasks: {known})")
    members = data.task_members()[data.task_names.index(name)]
    if len(members) <= shots:
        raise ValueError(f"task {name!r} has {len(members)} images: too few for {shots} shots and a test image")
    members = members[torch.randperm(len(members), generator=torch.Generator().manual_seed(seed))]
    return (data.images[members[:shots]], data.images[members[shots:]],
            f"task {name!r} of {data.name}")


@torch.no_grad()
def per_image(task_model, images: torch.Tensor, samples: int = 1024, device="cpu", chunk: int = 100):
    """−ELBO and importance-sampled −log p(x), each (n,), of images (n, 1, 28, 28) under one fixed model."""
    nelbo, nll = [], []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].float().unsqueeze(0).to(device)
        s = importance_scores(task_model.model, task_model.guide, x, samples)
        nelbo.append((s["recon"] + s["kl_z"]).reshape(-1).cpu())
        nll.append(-s["log_p"].reshape(-1).cpu())
    return torch.cat(nelbo), torch.cat(nll)


def summary(nelbo: torch.Tensor, nll: torch.Tensor) -> dict:
    n = len(nll)
    return {"nelbo": float(nelbo.mean()), "nll": float(nll.mean()),
            "nll_stderr": float(nll.std() / math.sqrt(n)) if n > 1 else None, "n": n}


def score(task_model, images: torch.Tensor, samples: int = 1024, device="cpu") -> dict:
    """Mean −ELBO and −log p(x) of images under one fixed model, with the standard error."""
    return summary(*per_image(task_model, images, samples, device))


def compare(program, loc, scale, images: torch.Tensor, vae=None, samples: int = 1024, seed: int = 0) -> list[dict]:
    """`score` rows of `images` under the few-shot model q(u) = N(loc, scale), the prior-mean model
    θ(E[u]) and, given, a VAE run's program, each scored from the same random state."""
    import pyro

    device = loc.device
    models = {"fewshot": program.conditioned_on(loc, scale),
              "prior-mean": program.conditioned_on(program.prior_mean_u().to(device), torch.ones_like(scale))}
    if vae is not None:
        models["vae"] = vae.conditioned(None)
    rows = []
    for name, task_model in models.items():
        pyro.set_rng_seed(seed)
        rows.append({"model": name, **score(task_model, images, samples, device)})
    return rows


def save_samples(program, loc, path: Path, title: str, shots: int, seed: int = 0) -> None:
    """Ten samples (Bernoulli means) of the few-shot model θ(ū) above ten of θ(E[u]), same noise."""
    from .samples import save_grid

    eps = torch.randn(10, program.config.z_dim, generator=torch.Generator().manual_seed(seed)).to(loc.device)
    with torch.no_grad():
        means = torch.sigmoid(program.sample_logits(eps, torch.cat([loc, program.prior_mean_u().to(loc.device)])))
    save_grid(means.cpu(), [f"θ(ū), {shots} shot(s)", "θ(E[u]), the prior mean"], None, path,
              f"{title}: samples (Bernoulli means)")


def vae_of(program, u: torch.Tensor):
    """A plain VAE program whose encoder and decoder weights are θ(u), u (u_dim,)."""
    config = program.config
    vae = build(RunConfig(model="vae", dataset=config.dataset, split=config.split, task_by=config.task_by,
                          z_dim=config.z_dim, hidden=config.hidden, seed=config.seed,
                          train_tasks=config.train_tasks))
    with torch.no_grad():
        encoder = {k: v.detach().cpu() for k, v in program.theta.encoder(u).items()}
        decoder = {k: v.detach().cpu() for k, v in program.theta.decoder(u).items()}
        if "zprior.loc" in decoder:
            _fold_z_prior(encoder, decoder)
        vae.guide_nets.encoder.load_state_dict(encoder)
        vae.decoder.load_state_dict(decoder)
    return vae


def _fold_z_prior(encoder: dict, decoder: dict) -> None:
    """Rewrite a model with p(z) = N(m, s) as the same model in ε = (z − m) / s, with p(ε) = N(0, I)."""
    m, log_s = decoder.pop("zprior.loc"), decoder.pop("zprior.log_scale")
    s = log_s.exp()
    w, b = decoder["fc1.weight"], decoder["fc1.bias"]
    decoder["fc1.weight"], decoder["fc1.bias"] = w * s, b + w @ m
    encoder["loc.weight"] = encoder["loc.weight"] / s[:, None]
    encoder["loc.bias"] = (encoder["loc.bias"] - m) / s
    encoder["logvar.bias"] = encoder["logvar.bias"] - 2 * log_s


def save_model(program, u: torch.Tensor, out: Path, step: int, about: dict) -> Path:
    """Write θ(u) as a run folder of a plain VAE (config.json, checkpoint.pt); returns the folder."""
    from .train import CHECKPOINT, CONFIG

    vae = vae_of(program, u.reshape(-1))
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out / CHECKPOINT, {"config": vae.config.to_dict(), "step": step, "seconds": 0.0,
                                       "program": vae.state_dict(), "fewshot": about})
    vae.config.save(out / CONFIG)
    return out


def load_images(paths, invert: bool | None = None) -> tuple[torch.Tensor, list[str]]:
    """Image files, or folders of them, as binary 28x28 images (n, 1, 28, 28) and their names,
    processed as the images of a folder dataset are (`folders`): gray, padded square, box-filtered
    to 28x28, inverted when they are mostly light at their border (unless `invert` says), and
    statically binarized keyed by the file's bytes, so the same file always gives the same bits."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
            if not found:
                raise ValueError(f"{p}: no image files in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    try:
        read = [read_image(f) for f in files]
    except DataError as e:
        raise ValueError(str(e)) from None
    borders = np.array([r[1] for r in read])
    bits = to_bits(np.stack([r[0] for r in read]), [r[2] for r in read], polarity(borders) if invert is None else invert)
    return bits, [str(f) for f in files]
