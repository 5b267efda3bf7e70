"""Milliseconds per training step, as ratios to a hand-written PyTorch VAE timed in the same process.

(a) plain: the paper's conv VAE written the way a PyTorch user would, inside this file: nn.Modules,
    the reparameterisation trick, Bernoulli log-likelihood and analytic KL, torch.optim.Adam;
(b) pyrohvae's VAE, the training step of `pyrohvae.trainer.Trainer` (Trace_ELBO's ELBO module and
    torch.optim.Adam, fused), the same network;
(c) pyrohvae's HyperVAE, the same step, with 1, 4 and 16 tasks of 100 images per step, in the paper's
    configuration; for 4 and 16 the time per item (per 100 images) is what compares with (a); and
    the default configuration, task-specific (4 tasks, its set-mean guide and KL(z) weight), per item.

Each figure is the median of repeated timed steps after warm-up; the candidates are timed in
turns (a, b, c1, c4, c16, a, b, ...) so that a change in machine load falls on all of them alike.

    python benchmarks/step_time.py [--quick] [--json] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro

from pyrohvae.config import RunConfig
from pyrohvae.program import build
from pyrohvae.train import TrainError, resolve_device
from pyrohvae.trainer import Trainer


class PlainVAE(nn.Module):
    """The baseline: what one writes without Pyro."""

    def __init__(self, z=10, hidden=100):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3136, hidden),
            nn.ReLU(),
        )
        self.loc, self.logvar = nn.Linear(hidden, z), nn.Linear(hidden, z)
        self.dec = nn.Sequential(
            nn.Linear(z, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 3136),
            nn.ReLU(),
            nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 3, 2, 1, output_padding=1),
        )

    def loss(self, x):
        h = self.enc(x)
        loc, logvar = self.loc(h), self.logvar(h)
        z = loc + torch.exp(0.5 * logvar) * torch.randn_like(loc)
        recon = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = 0.5 * (loc**2 + logvar.exp() - 1 - logvar).sum()
        return (recon + kl) / len(x)


def plain_step(model, optim):
    def step(x):
        optim.zero_grad()
        loss = model.loss(x.reshape(-1, 1, 28, 28))
        loss.backward()
        optim.step()
        return loss.item()

    return step


def pyro_step(config, device):
    trainer = Trainer(build(config).to(device))
    return lambda x: trainer.update(x)[0]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats: under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except TrainError as e:
        parser.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (6 if args.quick else 30)
    warmup = 2 if args.quick else 5
    pyro.set_rng_seed(0)
    # Binary images with MNIST's density of ones; the cost of a step does not depend on the pixels.
    batches = {t: (torch.rand(t, 100, 1, 28, 28, device=device) < 0.13).float() for t in (1, 4, 16)}
    plain = PlainVAE().to(device)

    def hypervae(tasks, preset="paper"):
        # the paper's configuration, as the first figures in RESULTS.md were measured; the
        # default, task-specific, differs by its guide (the set-mean guide reads every item)
        return pyro_step(
            RunConfig(dataset="mnist", model="hypervae", tasks_per_step=tasks, preset=preset), device
        )

    candidates = {
        "plain": (plain_step(plain, torch.optim.Adam(plain.parameters(), lr=3e-4)), batches[1], 1),
        "vae": (pyro_step(RunConfig(dataset="mnist", model="vae"), device), batches[1], 1),
        "hypervae": (hypervae(1), batches[1], 1),
        "hypervae4": (hypervae(4), batches[4], 4),
        "hypervae16": (hypervae(16), batches[16], 16),
        "task4": (hypervae(4, "task-specific"), batches[4], 4),
    }
    for step, x, _ in candidates.values():
        for _ in range(warmup):
            step(x)
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, (step, x, _) in candidates.items():
            tic = time.perf_counter()
            step(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the update too, not only the loss the step returned
            times[name].append(1000 * (time.perf_counter() - tic))
    ms = {name: statistics.median(t) for name, t in times.items()}
    per_item = {name: ms[name] / candidates[name][2] for name in ms}
    result = {
        "plain_ms": ms["plain"],
        "vae_ms": ms["vae"],
        "hypervae_ms": ms["hypervae"],
        "hypervae4_ms": ms["hypervae4"],
        "hypervae16_ms": ms["hypervae16"],
        "hypervae4_per_item_ms": per_item["hypervae4"],
        "hypervae16_per_item_ms": per_item["hypervae16"],
        "vae_ratio": ms["vae"] / ms["plain"],
        "hypervae_ratio": ms["hypervae"] / ms["plain"],
        "hypervae4_per_item_ratio": per_item["hypervae4"] / ms["plain"],
        "hypervae16_per_item_ratio": per_item["hypervae16"] / ms["plain"],
        "task_specific_per_item_ms": per_item["task4"],
        "task_specific_per_item_ratio": per_item["task4"] / ms["plain"],
        "steps_per_s": {name: 1000 / ms[name] for name in ms},
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"ms per training step, median of {repeats} ({result['device']}; {result['machine']}); ratio to (a)"
    )
    rows = [
        ("(a) plain PyTorch VAE, 100 images", ms["plain"], 1.0),
        ("(b) pyrohvae VAE, 100 images", ms["vae"], result["vae_ratio"]),
        ("(c) HyperVAE, 1 task of 100", ms["hypervae"], result["hypervae_ratio"]),
        ("    HyperVAE, 4 tasks, per 100 images", per_item["hypervae4"], result["hypervae4_per_item_ratio"]),
        (
            "    HyperVAE, 16 tasks, per 100 images",
            per_item["hypervae16"],
            result["hypervae16_per_item_ratio"],
        ),
        (
            "    task-specific (4 tasks), per 100 images",
            per_item["task4"],
            result["task_specific_per_item_ratio"],
        ),
    ]
    for label, value, ratio in rows:
        print(f"  {label:<40} {value:8.1f} ms   {ratio:5.2f}x")


if __name__ == "__main__":
    main()
