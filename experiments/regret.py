"""Likelihood Regret for HyperVAE: its AUC and its cost per image, alone and as one more statistic of
the default detector (`typicality`), on the paper's six pairs.

`regret` (pyrohvae.outliers): the nats of x's −ELBO + KL(u) that q(u | x), refined by Adam steps on x
alone, saves over the q(u | x) the hyper-encoder gives. The Table 1 runs of both HyperVAE
configurations score the same mixed set (about --limit normal test images, outliers 20% of it);
the typicality fits compared are both made on the same --fit-images normal training images (the
first of the 1,000 the default reads), with and without regret among the statistics, so the column
that differs is regret alone. Each pair's row is written as soon as it is done.

    PYROHVAE_DATA_DIR=../shared/data python experiments/regret.py [--limit 200] [--fit-images 300]
"""

from __future__ import annotations

import time

import torch
from common import auc_table, parser, rows_in, run, six_pair_means, typicality_aucs, write_row
from table1 import row_name

from pyrohvae import typicality
from pyrohvae.evaluate import evaluation_subset
from pyrohvae.files import atomic_write_text
from pyrohvae.outliers import REGRET_STEPS, detection_metrics, mixed_set, outlier_data, regret
from pyrohvae.train import load_run

DATASETS = ("mnist", "omniglot", "fashion-mnist")
CONFIGS = ("paper", "task-specific")
COLUMNS = ("regret", "typicality", "typicality + regret")


def fit_statistics(program, images, train, args) -> dict[str, torch.Tensor]:
    stats = typicality.statistics(program, images, train, args.samples, args.seed)
    return {**stats, "regret": regret(program, images, args.samples, args.seed).double()}


def score_pair(normal: str, other: str, config: str, args, fits: dict) -> None:
    path = args.results / "regret" / f"{normal}-{other}-{config}-seed{args.seed}-limit{args.limit}.json"
    if path.exists():
        return
    folder = args.runs / row_name(normal, "drawers", "hypervae", args.seed, config)
    program, state = load_run(folder)
    train = program.config.load_data("train")
    if folder not in fits:  # the fit images' statistics, regret among them, once per run
        images, where = typicality.fit_images(program.config, seed=args.seed)
        fits[folder] = (fit_statistics(program, images.images[: args.fit_images], train, args), where)
    fit, where = fits[folder]
    test = program.config.load_data("test")
    test = test.subset(torch.cat(evaluation_subset(test, args.limit)))
    mixed = mixed_set(test, outlier_data(other, args.seed), 0.2, args.seed)
    print(f"[regret] {normal} vs {other}, {config}: {len(mixed.data)} images", flush=True)
    start = time.perf_counter()
    scored = {"regret": regret(program, mixed.data.images, args.samples, args.seed).double()}
    seconds = (time.perf_counter() - start) / len(mixed.data)
    scored.update(typicality.statistics(program, mixed.data.images, train, args.samples, args.seed))
    labels = mixed.labels.numpy()
    columns = {"typicality": [n for n in fit if n != "regret"], "typicality + regret": list(fit)}
    auc = {
        "regret": detection_metrics(scored["regret"].numpy(), labels)["auc"],
        **typicality_aucs(fit, columns, scored, labels, where, state["step"], args),
    }
    row = {
        "normal": normal,
        "outliers": other,
        "config": config,
        "auc": auc,
        "seconds_per_image": seconds,
        "regret_steps": REGRET_STEPS,
        "n": len(mixed.data),
        "fit_images": args.fit_images,
        "samples": args.samples,
        "seed": args.seed,
        "step": state["step"],
    }
    write_row(path, row, "regret", f"{normal} vs {other}, {config}")


def report(args) -> None:
    rows = rows_in(args.results / "regret", f"*-seed{args.seed}-limit{args.limit}.json")
    if not rows:
        return
    lines = [
        "# Likelihood Regret for HyperVAE",
        "",
        (
            f"Made by `PYROHVAE_DATA_DIR=../shared/data python experiments/regret.py --limit {args.limit} "
            f"--fit-images {args.fit_images}` (its docstring says what each column is): AUC in %, "
            f"{REGRET_STEPS} refinement steps per image, training seed {args.seed}; `typicality` here is fitted on "
            f"{args.fit_images} normal training images, not the default's 1,000, so that the two typicality columns "
            "differ by regret alone."
        ),
        "",
        *auc_table(
            rows,
            COLUMNS,
            ["normal", "outliers", "config"],
            lambda r: [r["normal"], r["outliers"], r["config"]],
            ("regret, s per image", lambda r: f"{r['seconds_per_image']:.3f}"),
        ),
        *six_pair_means(rows, COLUMNS, {c: [r for r in rows if r["config"] == c] for c in CONFIGS}),
    ]
    atomic_write_text(args.results / "regret.md", "\n".join(lines) + "\n")
    print(f"wrote {args.results / 'regret.md'}")


def main():
    p = parser(__doc__, samples=16, limit_help="about N normal test images", device=False)
    p.add_argument("--fit-images", type=int, default=300)
    p.set_defaults(limit=200)
    args = p.parse_args()
    if not args.report:
        fits = {}
        for normal in DATASETS:
            for config in CONFIGS:
                for other in DATASETS:
                    if other != normal:
                        score_pair(normal, other, config, args, fits)
                        report(args)
    report(args)


if __name__ == "__main__":
    run(main)
