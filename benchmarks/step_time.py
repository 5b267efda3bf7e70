"""Milliseconds per training step, as ratios to a hand-written PyTorch VAE timed in the same process.

(a) plain: the paper's conv VAE written the way a PyTorch user would, inside this file: nn.Modules,
    the reparameterisation trick, Bernoulli log-likelihood and analytic KL, torch.optim.Adam (fused,
    as pyrohvae's trainer uses it);
(b) pyrohvae's VAE, the training step of `pyrohvae.trainer.Trainer` (Trace_ELBO's ELBO module and
    torch.optim.Adam, fused), the same network;
(c) pyrohvae's HyperVAE, the same step, with 1, 4 and 16 tasks of 100 images per step, in the paper's
    configuration; for 4 and 16 the time per item (per 100 images) is what compares with (a); and
    the default configuration, task-specific (4 tasks, its set-mean guide and KL(z) weight), per item;
(c') the step of (c) with 1 task with every weight of θ(u) made, as before the large dense layers
    were applied in factored form where a task's images are few (`nets.MatrixLayer.pays_factored`):
    what that direction saves, measured in turns with the rest;
(b-jit), (c-jit) the steps of (b) and (c, 1 task) with `--elbo jit` (Pyro's JitTrace_ELBO: model
    and guide traced once into a TorchScript graph, the same loss and gradients as Trace_ELBO's;
    tests/test_elbo.py), and the default configuration's step with it (its KL(z) weight an input of
    the graph, so one graph follows the anneal);
(-flat) a step of (b), (c) or (b-jit), (c-jit) with Adam over one flat buffer (`flat_adam`): every
    parameter a view of one tensor and every gradient a view of another, one fused update of the
    lot; a direction measured here and not taken into the trainer (RESULTS.md).

Each figure is the median of repeated timed steps after warm-up; the candidates are timed in
turns (a, b, c1, c4, c16, then the same in another order, ...) so that a change in machine load
falls on all of them alike, the order drawn again each round so that no candidate keeps a place.
With `--batch-sizes`, every candidate is timed at each size b: b images a step for (a), (b) and
(c) with 1 task, b images a task for the others. What a step costs beyond (a)'s is its fixed cost;
it is the part a fast accelerator does not hide, and printed in ms beside each ratio.

`--profile` also splits the steps of (a), (b) and (c, 1 task) into their phases, timed the same way:
the loss (forward), its backward pass, the optimizer's update; and within (c)'s loss, generating θ(u)
(both halves, one task), q(u | d) (the hyper-encoder), and the main networks run on generated
weights; the rest of (c)'s loss is Pyro's: running model and guide under its tracing, the
distributions, their log-densities and the ELBO's sums.

    python benchmarks/step_time.py [--batch-sizes 5 20 100] [--profile] [--quick] [--json]
                                   [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
from timing import device_name, machine, sync_for

from pyrohvae import nets
from pyrohvae.config import RunConfig
from pyrohvae.nets import decode, encode
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


def pyro_step(config, device, flat=False):
    trainer = Trainer(build(config).to(device))
    if flat:
        flat_adam(trainer)
    return lambda x: trainer.update(x)[0]


class _FlatAdam(torch.optim.Adam):
    """Adam over one flat parameter whose gradient the backward pass fills in place."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        # Zeros kept, never None: the parameters' gradients are views of this one buffer.
        for group in self.param_groups:
            for p in group["params"]:
                p.grad.zero_()


def flat_adam(trainer) -> None:
    """Moves `trainer`'s parameters into one buffer and their gradients into another (views both),
    and gives it one fused Adam over the buffer: the same update, one kernel call over 1 tensor
    rather than over 18 (VAE) or 68 (HyperVAE). Every parameter must get a gradient at every step
    (a zero where the trainer's Adam would see None), true of the candidates timed here."""
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grads = torch.zeros_like(flat)
    start = 0
    for p in params:
        end = start + p.numel()
        # the backward pass adds into a gradient that exists (no grad mode), so into `grads`
        p.data, p.grad = flat[start:end].view_as(p), grads[start:end].view_as(p)
        start = end
    flat = nn.Parameter(flat)
    flat.grad = grads
    trainer.optimizer = _FlatAdam([flat], lr=trainer.config.lr, fused=True)
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, trainer.scheduler.lr_lambdas[0])


def made(step):
    """`step` with every weight of θ(u) made, none applied in factored form."""

    def run(*args):
        margin, nets.FACTORED_MARGIN = nets.FACTORED_MARGIN, float("inf")
        try:
            return step(*args)
        finally:
            nets.FACTORED_MARGIN = margin

    return run


def interleaved(
    candidates: dict, repeats: int, warmup: int, device, shuffle: bool = True
) -> dict[str, float]:
    """Median ms of each of `candidates` (name -> callable), called in turns after a warm-up. The
    turns' order is drawn again each round (`shuffle`, seeded): in a fixed order a candidate's
    place moved its median by up to about 1 ms (RESULTS.md)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    sync = sync_for(device)  # the update too, not only the loss the step returned
    times = {name: [] for name in candidates}
    order, rng = list(candidates.items()), random.Random(0)
    for _ in range(repeats):
        if shuffle:
            rng.shuffle(order)
        for name, fn in order:
            tic = time.perf_counter()
            fn()
            sync()
            times[name].append(1000 * (time.perf_counter() - tic))
    return {name: statistics.median(t) for name, t in times.items()}


def bits(shape, device):
    # Binary images with MNIST's density of ones; the cost of a step does not depend on the pixels.
    return (torch.rand(*shape, 1, 28, 28, device=device) < 0.13).float()


# name -> (config, tasks a step): (b), (c) with 1, 4 and 16 tasks, the default preset with its 4
TASK_CANDIDATES = {
    "vae": ({"model": "vae"}, 1),
    "hypervae": ({"model": "hypervae", "preset": "paper"}, 1),
    "hypervae4": ({"model": "hypervae", "preset": "paper", "tasks_per_step": 4}, 4),
    "hypervae16": ({"model": "hypervae", "preset": "paper", "tasks_per_step": 16}, 16),
    "task4": ({"model": "hypervae", "preset": "task-specific"}, 4),
    "hypervae-made": ({"model": "hypervae", "preset": "paper"}, 1),
    "vae-jit": ({"model": "vae", "elbo": "jit"}, 1),
    "hypervae-jit": ({"model": "hypervae", "preset": "paper", "elbo": "jit"}, 1),
    "task4-jit": ({"model": "hypervae", "preset": "task-specific", "elbo": "jit"}, 4),
    "vae-flat": ({"model": "vae"}, 1),
    "hypervae-flat": ({"model": "hypervae", "preset": "paper"}, 1),
    "vae-jit-flat": ({"model": "vae", "elbo": "jit"}, 1),
    "hypervae-jit-flat": ({"model": "hypervae", "preset": "paper", "elbo": "jit"}, 1),
}
# timed only when asked for (--only): the flat buffer is a direction measured, not the trainer's
DEFAULT_CANDIDATES = [name for name in TASK_CANDIDATES if not name.endswith("-flat")]


def step_times(b: int, device, repeats: int, warmup: int, names=None) -> dict:
    plain = PlainVAE().to(device)
    x = bits((1, b), device)
    step = plain_step(plain, torch.optim.Adam(plain.parameters(), lr=3e-4, fused=True))
    candidates = {"plain": functools.partial(step, x)}
    names = names or DEFAULT_CANDIDATES
    for name in names:
        options, tasks = TASK_CANDIDATES[name]
        config = RunConfig(dataset="mnist", batch_size=b, **options)
        fn = pyro_step(config, device, flat=name.endswith("-flat"))
        fn = made(fn) if name.endswith("-made") else fn
        batch = bits((tasks, b), device)
        candidates[name] = functools.partial(fn, batch)
    ms = interleaved(candidates, repeats, warmup, device)
    per_item = {name: ms[name] / TASK_CANDIDATES[name][1] for name in names}
    return {
        "ms": ms,
        "per_item_ms": per_item,
        "ratio": {name: per_item[name] / ms["plain"] for name in per_item},
        "extra_ms": {name: per_item[name] - ms["plain"] for name in per_item},
    }


def profile(b: int, device, repeats: int, warmup: int) -> dict:
    """ms of each phase of a step of (a), (b) and (c) with 1 task of b images (see the docstring)."""
    sync = sync_for(device)
    x = bits((1, b), device)
    plain = PlainVAE().to(device)
    optim = torch.optim.Adam(plain.parameters(), lr=3e-4, fused=True)
    phases = {}

    def plain_phases():
        tic = time.perf_counter()
        loss = plain.loss(x.reshape(-1, 1, 28, 28))
        sync()
        mid = time.perf_counter()
        loss.backward()
        sync()
        end = time.perf_counter()
        optim.step()
        optim.zero_grad()
        sync()
        return mid - tic, end - mid, time.perf_counter() - end

    def pyro_phases(trainer):
        def run():
            kwargs = trainer.program.step_kwargs(trainer.step + 1)
            tic = time.perf_counter()
            loss = trainer.objective(x, None, **kwargs)
            sync()
            mid = time.perf_counter()
            loss.backward()
            float(loss.detach())
            end = time.perf_counter()
            trainer.optimizer.step()  # as Trainer.update does
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.scheduler.step()
            trainer.step += 1
            sync()
            return mid - tic, end - mid, time.perf_counter() - end

        return run

    runs = {"plain": plain_phases}
    trainers = {}
    for name in ("vae", "hypervae"):
        options = TASK_CANDIDATES[name][0]
        trainers[name] = Trainer(build(RunConfig(dataset="mnist", batch_size=b, **options)).to(device))
        runs[name] = pyro_phases(trainers[name])
    program = trainers["hypervae"].program
    u = torch.randn(1, 1, program.config.u_dim, device=device)
    z = torch.randn(1, b, program.config.z_dim, device=device)
    # as a training step makes them: the large dense weights in factored form where that pays
    decoder_params, encoder_params = program.theta.decoder(u, b), program.theta.encoder(u, b)

    def theta():
        program.theta.decoder(u, b)
        program.theta.encoder(u, b)

    def networks():  # the main VAE on generated weights, one task
        encode(encoder_params, x)
        decode(decoder_params, z)

    parts = {"theta": theta, "q_u": lambda: program.inference.posterior(x), "networks": networks}
    for _ in range(warmup):
        for fn in [*runs.values(), *parts.values()]:
            fn()
    samples = {name: [] for name in [*runs, *parts]}
    for _ in range(repeats):
        for name, fn in runs.items():
            samples[name].append(fn())
        for name, fn in parts.items():
            tic = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - tic)
    for name in runs:
        forward, backward, update = (1000 * statistics.median(s[i] for s in samples[name]) for i in range(3))
        phases[name] = {"forward": forward, "backward": backward, "optimizer": update}
    for name in parts:
        phases["hypervae"][name] = 1000 * statistics.median(samples[name])
    h = phases["hypervae"]
    h["pyro"] = h["forward"] - h["theta"] - h["q_u"] - h["networks"]
    return phases


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100], help="images a step (a task)")
    parser.add_argument("--profile", action="store_true", help="also time the phases of a step")
    parser.add_argument("--quick", action="store_true", help="fewer repeats: under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(TASK_CANDIDATES),
        default=None,
        help="time these candidates alone (beside the plain step): fewer candidates, more of each in the "
        "same minutes, for comparing two head to head",
    )
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except TrainError as e:
        parser.error(str(e))
    if any(b < 1 for b in args.batch_sizes):
        parser.error("--batch-sizes: each at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (6 if args.quick else 30)
    warmup = 2 if args.quick else 5
    pyro.set_rng_seed(0)
    by_size = {b: step_times(b, device, repeats, warmup, args.only) for b in args.batch_sizes}
    profiles = {b: profile(b, device, repeats, warmup) for b in args.batch_sizes} if args.profile else {}
    result = {
        "batch_sizes": by_size,
        "profile": profiles,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "device": device_name(device),
        "machine": machine(),
    }
    if 100 in by_size and not args.only:  # the figures earlier runs (RESULTS.md, gpu_run.sh) read
        r = by_size[100]
        result |= {
            "plain_ms": r["ms"]["plain"],
            "vae_ms": r["ms"]["vae"],
            "hypervae_ms": r["ms"]["hypervae"],
            "hypervae4_ms": r["ms"]["hypervae4"],
            "hypervae16_ms": r["ms"]["hypervae16"],
            "hypervae4_per_item_ms": r["per_item_ms"]["hypervae4"],
            "hypervae16_per_item_ms": r["per_item_ms"]["hypervae16"],
            "vae_ratio": r["ratio"]["vae"],
            "hypervae_ratio": r["ratio"]["hypervae"],
            "hypervae4_per_item_ratio": r["ratio"]["hypervae4"],
            "hypervae16_per_item_ratio": r["ratio"]["hypervae16"],
            "task_specific_per_item_ms": r["per_item_ms"]["task4"],
            "task_specific_per_item_ratio": r["ratio"]["task4"],
            "steps_per_s": {name: 1000 / ms for name, ms in r["ms"].items()},
        }
    if args.json:
        print(json.dumps(result))
        return
    print(f"ms per training step, median of {repeats} ({result['device']}; {result['machine']})")
    print("ratio to (a) at the same images a step, and the ms beyond (a)'s; several tasks: per b images")
    labels = {
        "vae": "(b) pyrohvae VAE",
        "hypervae": "(c) HyperVAE, 1 task",
        "hypervae4": "    HyperVAE, 4 tasks",
        "hypervae16": "    HyperVAE, 16 tasks",
        "task4": "    task-specific (4 tasks)",
        "hypervae-made": "(c') (c), every weight made",
        "vae-jit": "(b-jit) (b), --elbo jit",
        "hypervae-jit": "(c-jit) (c), --elbo jit",
        "task4-jit": "    task-specific, --elbo jit",
        "vae-flat": "(b-flat) (b), Adam over one buffer",
        "hypervae-flat": "(c-flat) (c), Adam over one buffer",
        "vae-jit-flat": "(b-jit-flat)",
        "hypervae-jit-flat": "(c-jit-flat)",
    }
    sizes = args.batch_sizes
    print(f"  {'images a step (a task)':<30}" + "".join(f"{b:>22}" for b in sizes))
    print(
        f"  {'(a) plain PyTorch VAE':<30}" + "".join(f"{by_size[b]['ms']['plain']:>19.1f} ms" for b in sizes)
    )
    for name, label in labels.items():
        if name not in by_size[sizes[0]]["ratio"]:
            continue
        cells = [f"{by_size[b]['ratio'][name]:5.2f}x {by_size[b]['extra_ms'][name]:+7.1f} ms" for b in sizes]
        print(f"  {label:<30}" + "".join(f"{c:>22}" for c in cells))
    for b, phases in profiles.items():
        print(f"phases of a step of {b} images, ms (median of {repeats})")
        for name in ("plain", "vae", "hypervae"):
            print(f"  {name:<10}" + "  ".join(f"{k} {v:6.1f}" for k, v in phases[name].items()))


if __name__ == "__main__":
    main()
