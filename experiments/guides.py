"""HyperVAE on Omniglot with each guide, and with the learnable mixture prior on u.

Same settings as Table 1 (10,000 steps, one alphabet of 100 images per step, Adam lr 3e-4, full
test set, 1,024 importance samples, θ of each test alphabet from its guide's reading of up to 100
of its test images). The random-draw/normal row is Table 1's Omniglot HyperVAE row, taken from
experiments/results/table1/ once experiments/table1.py has made it (never trained twice, nor by two
scripts at once).

    PYROHVAE_DATA_DIR=../shared/data python experiments/guides.py
    python experiments/guides.py --report
"""

from __future__ import annotations

import json
from pathlib import Path

from common import density_cells, evaluated_row, fmt, parser, rows_in, run

from pyrohvae.config import RunConfig
from pyrohvae.files import atomic_write_text

VARIANTS = (
    ("random-draw", "normal"),
    ("set-mean", "normal"),
    ("set-encoder", "normal"),
    ("random-draw", "mixture"),
)


def run_name(guide, prior, seed):
    return f"omniglot-hypervae-{guide}-{prior}-seed{seed}"


def table1_row(results: Path, seed: int, row: Path) -> None:
    """Copy Table 1's Omniglot HyperVAE row (the paper's guide and prior) into the guides rows."""
    source = results / "table1" / f"omniglot-hypervae-seed{seed}.json"
    if row.exists() or not source.exists():
        if not row.exists():
            print(f"[guides] random-draw/normal: waiting for {source} (experiments/table1.py)", flush=True)
        return
    values = json.loads(source.read_text())
    values = {
        "guide": "random-draw",
        "prior": "normal",
        **{k: v for k, v in values.items() if k not in ("dataset", "model")},
    }
    row.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(row, json.dumps(values, indent=2) + "\n")


def reading(rows: list[dict]) -> list[str]:
    """What the rows say, computed from them."""
    if len(rows) < 2:
        return []

    def name(r):
        return f"{r['guide']}/{r['prior']}"

    by_nll, by_kl = sorted(rows, key=lambda r: r["nll"]), sorted(rows, key=lambda r: r["kl_u"])
    stderr = max(r["nll_stderr"] for r in rows)
    return [
        "",
        "## Reading",
        "",
        (
            f"−log p(x) spans {by_nll[0]['nll']:.1f} ({name(by_nll[0])}) to {by_nll[-1]['nll']:.1f} "
            f"({name(by_nll[-1])}) nats per image, a spread of {by_nll[-1]['nll'] - by_nll[0]['nll']:.1f} "
            f"against standard errors of up to {stderr:.2f} over the test images (one training seed per row; the"
        ),
        "rows share their test images, so the standard error overstates the noise of a difference but",
        "leaves out the seed's). KL(q(u|d) ‖ p(u)), the model part of the code paid once per alphabet,",
        "differs more: " + ", ".join(f"{name(r)} {r['kl_u']:.2f}" for r in by_kl) + " nats per task.",
        "How q(u|d) summarises a task changes little of the density here, which fits what",
        "[task_usage.md](task_usage.md) measured on MNIST: the trained model uses u mostly as one global",
        "code shared by the tasks, so a learnable prior can move to where q(u|d) sits and make that code",
        "cheaper without changing the data part.",
    ]


def report(results: Path) -> None:
    rows = rows_in(results / "guides")
    order = {v: i for i, v in enumerate(VARIANTS)}
    rows.sort(key=lambda r: order.get((r["guide"], r["prior"]), 99))
    atomic_write_text(results / "guides.json", json.dumps(rows, indent=2) + "\n")
    lines = [
        "# HyperVAE on Omniglot: guides and priors",
        "",
        "Made by `PYROHVAE_DATA_DIR=../shared/data python experiments/guides.py`. 10,000 steps, one",
        "alphabet of 100 images per step, Adam lr 3e-4; full test set (drawers 16–20), 1,024 importance",
        "samples; nats per image, KL(u) in nats per task.",
        "",
        "| guide | prior | −ELBO | recon | −log p(x) | KL(z) | KL(u) | PSIS k̂ median | train s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['guide']} | {r['prior']} | {density_cells(r)} | {fmt(r['psis_khat_median'], 2)} | {r['train_seconds']:.0f} |"
        )
    lines += reading(rows)
    atomic_write_text(results / "guides.md", "\n".join(lines) + "\n")
    print(f"wrote {results / 'guides.md'} ({len(rows)} rows)")


def main():
    args = parser(__doc__).parse_args()
    if not args.report:
        for guide, prior in VARIANTS[1:] + VARIANTS[:1]:
            name = run_name(guide, prior, args.seed)
            config = RunConfig(
                dataset="omniglot",
                model="hypervae",
                preset="paper",
                guide=guide,
                prior=prior,
                steps=args.steps,
                seed=args.seed,
            )
            row = args.results / "guides" / f"{name}.json"
            if (guide, prior) == VARIANTS[0]:
                table1_row(args.results, args.seed, row)
                continue
            evaluated_row(
                config,
                args.runs / name,
                row,
                args.samples,
                args.limit,
                args.seed,
                args.device,
                args.progress,
                guide=guide,
                prior=prior,
            )
            report(args.results)
    else:
        table1_row(
            args.results, args.seed, args.results / "guides" / f"{run_name(*VARIANTS[0], args.seed)}.json"
        )
    report(args.results)


if __name__ == "__main__":
    run(main)
