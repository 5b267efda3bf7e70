"""The optimizer's share of a step: fused Adam over a program's parameters as the trainer holds them
(one tensor each) against the same update over one flat buffer, in the same process.

The trainer's `torch.optim.Adam(..., fused=True)` updates the VAE's 18 parameter tensors or the
HyperVAE's 68 (paper configuration) in one call whose kernel walks them one by one; a flat buffer
(every parameter a view of it, `step_time.flat_adam`) makes that one tensor. `foreach` is torch's
other multi-tensor Adam. Each update is timed alone on gradients drawn once, median of --repeats,
the three in turns; ratios to the trainer's.

    python benchmarks/adam_time.py [--repeats 300] [--threads 2]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import machine, repeats_and_threads

from pyrohvae.config import RunConfig
from pyrohvae.program import build


def updates(params: list[torch.Tensor]) -> dict[str, torch.optim.Optimizer]:
    """The three updates of copies of `params`, each with a gradient to apply."""

    def copies():
        out = [nn.Parameter(p.detach().clone()) for p in params]
        for p in out:
            p.grad = torch.randn_like(p)
        return out

    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.randn_like(flat)
    return {
        "fused (the trainer's)": torch.optim.Adam(copies(), lr=3e-4, fused=True),
        "foreach": torch.optim.Adam(copies(), lr=3e-4, foreach=True),
        "fused, one flat buffer": torch.optim.Adam([flat], lr=3e-4, fused=True),
    }


def main():
    args = repeats_and_threads(__doc__, 300)
    print(f"ms per Adam update, median of {args.repeats} ({machine()})")
    for name, options in (("VAE", {"model": "vae"}), ("HyperVAE", {"model": "hypervae", "preset": "paper"})):
        params = list(build(RunConfig(dataset="mnist", batch_size=5, **options)).objective().parameters())
        optimizers = updates(params)
        times = {k: [] for k in optimizers}
        for _ in range(10):  # warm-up, and Adam's state made
            for optimizer in optimizers.values():
                optimizer.step()
        for _ in range(args.repeats):
            for k, optimizer in optimizers.items():
                tic = time.perf_counter()
                optimizer.step()
                times[k].append(1000 * (time.perf_counter() - tic))
        ms = {k: statistics.median(t) for k, t in times.items()}
        base = ms["fused (the trainer's)"]
        print(f"  {name}: {len(params)} tensors, {sum(p.numel() for p in params):,} numbers")
        for k, v in ms.items():
            print(f"    {k:<24} {v:6.3f} ms  {v / base:5.2f}x")


if __name__ == "__main__":
    main()
