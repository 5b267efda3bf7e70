"""Seconds per Bayesian-optimisation iteration at 50, 150 and 300 observations, with the GP's
hyperparameters carried from one iteration to the next (and a full refit every 20), against
refitting from scratch every iteration: the same objective, seed and budget, in one process; and
the final best of each.

The objective is the discovery objective of pyrohvae.discovery in the 20-d joint space of a
HyperVAE (a trained run with --run, else an untrained one: the cost is the GP's, not the model's).

    python benchmarks/bo_time.py [--quick] [--run RUN_DIR] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro

from pyrohvae import data
from pyrohvae.config import RunConfig
from pyrohvae.discovery import Designs, bayes_opt, class_exemplar, cosine
from pyrohvae.program import build
from pyrohvae.train import load_run


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="100 evaluations, warm start only (figures at 50, 100)"
    )
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--target-class", default="3")
    parser.add_argument("--threads", type=int, default=None, help="default: the cores this process may use")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    if args.run:
        program, _ = load_run(args.run)
    else:
        pyro.set_rng_seed(0)
        program = build(RunConfig(dataset="mnist", preset="paper")).eval()
    try:
        target, _ = class_exemplar(data.load("mnist", "test"), args.target_class)
    except data.DataError:
        target = (torch.rand(28, 28, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    designs = Designs(program)
    objective = lambda X: cosine(designs.joint(X), target)
    budget = 100 if args.quick else 300
    strategies = {"warm start": True} if args.quick else {"warm start": True, "refit every iteration": False}
    result = {"budget": budget, "dims": 20, "threads": torch.get_num_threads(), "machine": platform.machine()}
    for name, warm in strategies.items():
        trace = bayes_opt(objective, 20, budget, seed=0, n_init=40, warm_start=warm)
        s = trace.seconds_per_iteration
        n0 = budget - len(s)  # observations before the first BO iteration

        def at(n, s=s, n0=n0):  # mean over the five iterations ending with n observations
            i = min(len(s), n - n0)
            return sum(s[max(0, i - 5) : i]) / len(s[max(0, i - 5) : i])

        result[name] = {
            "seconds_at_50": at(50),
            "seconds_at_150": at(min(150, budget)),
            "seconds_at_300": at(budget),
            "total_seconds": sum(s),
            "final_best": float(trace.values.max()),
        }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"BO in 20 dims, {budget} evaluations (40 Sobol), {result['threads']} torch threads, "
        f"{result['machine']}"
    )
    for name in strategies:
        r = result[name]
        print(
            f"  {name:<22} s/iteration at 50: {r['seconds_at_50']:.2f}  at 150: {r['seconds_at_150']:.2f}  "
            f"at {budget}: {r['seconds_at_300']:.2f}   total {r['total_seconds']:.0f} s, final best "
            f"{r['final_best']:.4f}"
        )


if __name__ == "__main__":
    main()
