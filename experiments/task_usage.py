"""How much does q(u | d) know about the task? HyperVAE variants on MNIST, measured on test data.

For each variant: train on MNIST, then read q(u | d) with d = each of the first 2,000 test images
(one image per task, the paper's d_t), and report
- `centroid_accuracy`: the class of an image predicted from E[u | d] by the nearest class mean
  (means from the first half, accuracy on the second; chance is 0.1);
- `between` / `within`: the standard deviation of the class means of E[u | d], and of E[u | d]
  within a class, averaged over the dimensions of u; `q_scale`: q's own scale, averaged;
- `kl_u`: KL(q(u | d) || p(u)), averaged over the images.

    PYROHVAE_DATA_DIR=../shared/data python experiments/task_usage.py [--steps 3000]
"""

from __future__ import annotations

import json

import torch
from common import fmt, parser, rows_in, run, trained

from pyrohvae import data
from pyrohvae.config import RunConfig
from pyrohvae.files import atomic_write_text
from pyrohvae.train import load_run

VARIANTS = {  # name: RunConfig overrides
    "paper (init 0.1)": {},
    "U·H·V init 1.0": {"theta_init_scale": 1.0},
    "KL(u) warm-up 2000": {"kl_u_warmup": 2000},
    "set-mean guide": {"guide": "set-mean"},
    "4 tasks per step": {"tasks_per_step": 4},
}


@torch.no_grad()
def measure(program, test, n=2000) -> dict:
    x, labels = test.images[:n].float().unsqueeze(1), test.tasks[:n]
    q = program.conditioned(x).q_u  # every image its own task: d = x
    loc, scale = q.base_dist.loc, q.base_dist.scale
    half = n // 2
    centroids = torch.stack([loc[:half][labels[:half] == c].mean(0) for c in range(10)])
    predicted = torch.cdist(loc[half:], centroids).argmin(1)
    means = torch.stack([loc[labels == c].mean(0) for c in range(10)])
    within = torch.stack([loc[labels == c].std(0) for c in range(10)]).mean(0)
    return {
        "centroid_accuracy": float((predicted == labels[half:]).float().mean()),
        "between": float(means.std(0).mean()),
        "within": float(within.mean()),
        "q_scale": float(scale.mean()),
        "kl_u": float(program.kl_u(q).mean()),
    }


def main():
    args = parser(__doc__, steps=3000, samples=None, device=False).parse_args()
    rows_dir = args.results / "task_usage"
    if not args.report:
        test = data.load("mnist", "test")
        for i, (name, overrides) in enumerate(VARIANTS.items()):
            row_path = rows_dir / f"variant{i}-steps{args.steps}-seed{args.seed}.json"
            if row_path.exists():
                continue
            config = RunConfig(dataset="mnist", preset="paper", steps=args.steps, seed=args.seed, **overrides)
            run = args.runs / f"task-usage-variant{i}-steps{args.steps}-seed{args.seed}"
            trained(config, run, progress=args.progress)
            program, state = load_run(run)
            row = {
                "variant": name,
                "overrides": overrides,
                "steps": state["step"],
                "seed": args.seed,
                **measure(program, test),
            }
            rows_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(row_path, json.dumps(row, indent=2) + "\n")
            print(json.dumps(row), flush=True)
    rows = rows_in(rows_dir)
    atomic_write_text(args.results / "task_usage.json", json.dumps(rows, indent=2) + "\n")
    lines = [
        "# How much q(u | d) knows about the task (HyperVAE on MNIST)",
        "",
        "Made by `PYROHVAE_DATA_DIR=../shared/data python experiments/task_usage.py`; d = each of the first",
        "2,000 MNIST test images. Centroid accuracy: the class predicted from E[u | d] by the nearest class",
        "mean (chance 0.10). Between / within: spread of the class means of E[u | d] / of E[u | d] inside a",
        "class, averaged over u's dimensions; q scale: q's own standard deviation; KL(u) in nats per task.",
        "",
        "| variant | steps | centroid accuracy | between | within | q scale | KL(u) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['centroid_accuracy']:.3f} | {fmt(r['between'], 3)} | "
            f"{fmt(r['within'], 3)} | {fmt(r['q_scale'], 3)} | {fmt(r['kl_u'], 2)} |"
        )
    atomic_write_text(args.results / "task_usage.md", "\n".join(lines) + "\n")
    print(f"wrote {args.results / 'task_usage.md'}")


if __name__ == "__main__":
    run(main)
