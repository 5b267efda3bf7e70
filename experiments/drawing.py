"""The drawing statistics of the default detector: `typicality`'s AUC with and without them.

`typicality` (pyrohvae.typicality) reads, since its version 3, two statistics of the model's drawing
of an image at E[z | x]: `recon_ink`, the nats per pixel of ink, and `ink_excess`, the ink it draws
less the image's. They were added after the version-2 detector scored Omniglot normal vs MNIST at
AUC 65.6 / 66.5 (table3.md, third edition): an Omniglot model draws an MNIST digit's bold strokes
thin, which no statistic of version 2 saw. Version 4 adds the same count at the next scale,
`block_excess` (solid 2×2 blocks of ink). This script scores each pair of Table 3's third edition
(the six pairs and the two shifted sets) with five fits on the same normal training images and the
same mixed set (about --limit normal test images, outliers 20% of it): version 2's statistics,
each of version 3's drawing statistics added alone, both (version 3), and version 4 (the default).
A run not yet trained to --steps is skipped with a line. Each row is written as soon as it is done;
a row without one of the columns is made again.

    PYROHVAE_DATA_DIR=../shared/data python experiments/drawing.py --seed 1 [--limit 1000]
"""

from __future__ import annotations

import json

import torch
from common import auc_table, parser, rows_in, run, six_pair_means, typicality_aucs, write_row
from table3 import DATASETS, others, run_folder

from pyrohvae import typicality
from pyrohvae.evaluate import evaluation_subset
from pyrohvae.files import atomic_write_text
from pyrohvae.outliers import mixed_set, outlier_data
from pyrohvae.train import load_run

MODELS = (("hypervae", "paper"), ("hypervae", "task-specific"), ("vae", "–"))
DRAWING = ("recon_ink", "ink_excess", "block_excess")
LATER = ("width_ratio", "image_width")  # versions 5 and 6's, not among the columns
COLUMNS = ("version 2", "+ recon_ink", "+ ink_excess", "version 3", "version 4")


def column_names(names: list[str]) -> dict[str, list[str]]:
    """The statistics each column's fit reads, from all of today's."""
    before = [n for n in names if n not in DRAWING]
    return {
        "version 2": before,
        "+ recon_ink": before + ["recon_ink"],
        "+ ink_excess": before + ["ink_excess"],
        "version 3": before + ["recon_ink", "ink_excess"],
        "version 4": [n for n in names if n not in LATER],
    }


def complete(row: dict) -> bool:
    """Whether a row has every column (a row of an earlier version is made again)."""
    return set(COLUMNS) <= set(row["auc"])


def label(model: str, config: str) -> str:
    return model if config == "–" else f"{model} {config}"


def score_pair(normal: str, other: str, model: str, config: str, args, fits: dict) -> None:
    tag = f"{normal}-vs-{other}-{model}-{config.replace('–', 'none')}-seed{args.seed}-limit{args.limit}"
    path = args.results / "drawing" / f"{tag}.json"
    if path.exists() and complete(json.loads(path.read_text())):
        return
    folder = run_folder(normal, model, config, args)  # None (said) until trained to --steps
    if folder is None:
        return
    program, state = load_run(folder)
    train = program.config.load_data("train")
    if folder not in fits:  # the fit images' statistics, once per run
        images, where = typicality.fit_images(program.config, seed=args.seed)
        fits[folder] = (typicality.statistics(program, images.images, train, args.samples, args.seed), where)
    fit, where = fits[folder]
    test = program.config.load_data("test")
    test = test.subset(torch.cat(evaluation_subset(test, args.limit)))
    mixed = mixed_set(test, outlier_data(other, args.seed), 0.2, args.seed)
    print(f"[drawing] {normal} vs {other}, {label(model, config)}: {len(mixed.data)} images", flush=True)
    scored = typicality.statistics(program, mixed.data.images, train, args.samples, args.seed)
    labels = mixed.labels.numpy()
    auc = typicality_aucs(fit, column_names(list(fit)), scored, labels, where, state["step"], args)
    row = {
        "normal": normal,
        "outliers": other,
        "model": model,
        "config": config,
        "auc": auc,
        "n": len(mixed.data),
        "fit_on": where,
        "fit_images": len(fit["nll"]),
        "samples": args.samples,
        "seed": args.seed,
        "step": state["step"],
    }
    write_row(path, row, "drawing", f"{normal} vs {other}, {label(model, config)}")


def report(args) -> None:
    rows = rows_in(args.results / "drawing", f"*-seed{args.seed}-limit{args.limit}.json")
    rows = [r for r in rows if complete(r)]
    if not rows:
        return
    lines = [
        "# The drawing statistics of `typicality`",
        "",
        (
            f"Made by `PYROHVAE_DATA_DIR=../shared/data python experiments/drawing.py --seed {args.seed} "
            f"--limit {args.limit}` (its docstring says what each column is): AUC in %, the runs trained "
            f"with seed {args.seed} (table1.py), scored with seed {args.seed}; about {args.limit} normal "
            "test images, outliers 20% of the set; every fit on the default's normal training images."
        ),
        "",
        *auc_table(
            rows,
            COLUMNS,
            ["normal", "outliers", "model"],
            lambda r: [r["normal"], r["outliers"], label(r["model"], r["config"])],
        ),
        *six_pair_means(
            rows,
            COLUMNS,
            {
                label(m, c): [
                    r for r in rows if (r["model"], r["config"]) == (m, c) and r["outliers"] in DATASETS
                ]
                for m, c in MODELS
            },
        ),
    ]
    atomic_write_text(args.results / "drawing.md", "\n".join(lines) + "\n")
    print(f"wrote {args.results / 'drawing.md'}")


def main():
    p = parser(__doc__, samples=16, limit_help="about N normal test images", device=False)
    p.set_defaults(limit=1000)
    args = p.parse_args()
    if not args.report:
        fits = {}
        for normal in DATASETS:
            for model, config in MODELS:
                for other in others(normal):
                    score_pair(normal, other, model, config, args, fits)
                    report(args)
    report(args)


if __name__ == "__main__":
    run(main)
