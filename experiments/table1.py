"""Table 1 of the paper: VAE, MetaVAE and HyperVAE on MNIST, Omniglot and Fashion-MNIST.

Each model is trained with the paper's settings (10,000 steps, minibatch 100, one task per step,
Adam lr 3e-4, z and u of 10 dims) and evaluated on the full test set with 1,024 importance
samples (the `task` protocol of pyrohvae.evaluate). HyperVAE is run with each preset
(`--presets`): the paper's configuration, and `task-specific`, the one chosen for models that
differ by task (experiments/task_models.py, which shares these run folders and rows). Omniglot is
also run with unseen alphabets (`--split background`: train on the 30 background alphabets, test on
the 20 evaluation ones).

Every (dataset, model) pair writes its row to experiments/results/table1/<name>.json as soon as it
is done, and run folders keep their checkpoints, so a stopped sweep resumes where it stopped:

    PYROHVAE_DATA_DIR=../shared/data python experiments/table1.py
    python experiments/table1.py --report     # rebuild table1.md / table1.json from the rows
    python experiments/table1.py --datasets omniglot --models vae metavae --train-only
                                              # train only (what experiments/table3.py needs)
"""

from __future__ import annotations

import json
from pathlib import Path

from common import density_cells, evaluated_row, fmt, parser, rows_in, run, trained

from pyrohvae.config import PRESETS, RunConfig
from pyrohvae.files import atomic_write_text

MODELS = ("vae", "metavae", "hypervae")
# (dataset, omniglot split) in the order they are run: one whole dataset first.
SETTINGS = (
    ("mnist", "drawers"),
    ("omniglot", "drawers"),
    ("fashion-mnist", "drawers"),
    ("omniglot", "background"),
)

PAPER = {  # Table 1: −EL, −LL, KL(z), KL(u)
    ("mnist", "vae"): (118.2, 99.4, 18.8, None),
    ("mnist", "metavae"): (108.6, 93.0, 15.5, None),
    ("mnist", "hypervae"): (106.8, 88.2, 18.5, 5.7),
    ("omniglot", "vae"): (128.6, 111.4, 17.1, None),
    ("omniglot", "metavae"): (141.1, 128.1, 13.2, None),
    ("omniglot", "hypervae"): (124.7, 105.5, 18.1, 2.7),
    ("fashion-mnist", "vae"): (252.2, 237.7, 14.5, None),
    ("fashion-mnist", "metavae"): (245.2, 232.7, 13.7, None),
    ("fashion-mnist", "hypervae"): (245.7, 231.8, 13.9, 0.4),
}


def setting_name(dataset, split):
    return dataset if split == "drawers" else f"{dataset}-{split}"


def shown_name(dataset, split):
    return dataset if split == "drawers" else f"{dataset} ({split})"


def row_name(dataset, split, model, seed, preset="paper"):
    """Runs of the paper's configuration keep the names they had before presets existed."""
    config = f"-{preset}" if model == "hypervae" and preset != "paper" else ""
    return f"{setting_name(dataset, split)}-{model}{config}-seed{seed}"


def config_of(dataset, split, model, steps, seed, preset="paper") -> RunConfig:
    return RunConfig(dataset=dataset, model=model, split=split, steps=steps, seed=seed, preset=preset)


def run_one(dataset, split, model, args, preset="paper") -> dict | None:
    name = row_name(dataset, split, model, args.seed, preset)
    config = config_of(dataset, split, model, args.steps, args.seed, preset)
    if args.train_only:
        trained(config, args.runs / name, args.device, args.progress)
        return None
    return evaluated_row(
        config,
        args.runs / name,
        args.results / "table1" / f"{name}.json",
        args.samples,
        args.limit,
        args.seed,
        args.device,
        args.progress,
        dataset=shown_name(dataset, split),
        model=model,
        config=preset if model == "hypervae" else "–",
    )


def config_label(r: dict) -> str:
    """Rows written before presets existed are the paper's configuration."""
    return r.get("config", "paper" if r["model"] == "hypervae" else "–")


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, checked on the rows made so far: met, or missed and by how much."""
    row = {(r["dataset"], r["model"], config_label(r)): r for r in rows}
    lines = ["", "## Targets", ""]
    for dataset, preset in [(shown_name(*s), p) for s in SETTINGS for p in PRESETS]:
        hyper, vae = row.get((dataset, "hypervae", preset)), row.get((dataset, "vae", "–"))
        if hyper is None:
            lines.append(f"- {dataset}, HyperVAE ({preset}): no row yet.")
            continue
        checks = []
        if (dataset, "hypervae") in PAPER:  # the paper has no unseen-alphabet row
            paper_el, paper_ll = PAPER[(dataset, "hypervae")][:2]
            checks += [
                _against("−ELBO", hyper["nelbo"], "the paper's −EL", paper_el),
                _against("recon", hyper["recon"], "the paper's −LL", paper_ll),
            ]
        if vae is not None:
            checks += [
                _against("−ELBO", hyper["nelbo"], "our VAE's", vae["nelbo"]),
                _against("−log p(x)", hyper["nll"], "our VAE's", vae["nll"]),
            ]
        else:
            checks.append("no VAE row yet")
        lines.append(f"- {dataset}, HyperVAE ({preset}): " + "; ".join(checks) + ".")
    return lines + [""]


def tried(results: Path, table: list[dict]) -> list[str]:
    """Where the Omniglot HyperVAE misses the paper: the variants experiments/guides.py and
    experiments/omniglot_tries.py made, each with the same protocol."""
    paper = PAPER[("omniglot", "hypervae")]
    ours = [
        r for r in table if (r["dataset"], r["model"], config_label(r)) == ("omniglot", "hypervae", "paper")
    ]
    if not ours or (ours[0]["nelbo"] <= paper[0] and ours[0]["recon"] <= paper[1]):
        return []
    guides = rows_in(results / "guides")
    variants = [
        (f"the {r['guide']} guide with the {r['prior']} prior", r)
        for r in guides
        if (r["guide"], r["prior"]) != ("random-draw", "normal")
    ]
    tries = rows_in(results / "omniglot_tries")
    variants += [(r["variant"], r) for r in tries]
    if not variants:
        return []
    reached = [name for name, r in variants if r["nelbo"] <= paper[0] and r["recon"] <= paper[1]]
    return [
        f"Tried on Omniglot, where the paper's −EL {paper[0]} and −LL {paper[1]} are missed "
        "([guides.md](guides.md), [omniglot_tries.md](omniglot_tries.md); each variant's last "
        "checkpoint, or the one its validation part chose; the same protocol): "
        + "; ".join(f"{name}: −ELBO {r['nelbo']:.1f}, recon {r['recon']:.1f}" for name, r in variants)
        + ". "
        + (
            f"Reaching both: {', '.join(reached)}."
            if reached
            else "None reaches both of the paper's figures."
        )
        + (
            ""
            if any("validation_nelbo" in r for r in tries)
            else " Not tried yet: choosing the number of steps on a validation split."
        ),
        "",
    ]


def _against(what, ours, whose, theirs):
    verdict = "met" if ours <= theirs else f"missed by {ours - theirs:.1f}"
    return f"HyperVAE {what} {ours:.1f} vs {whose} {theirs:.1f}: {verdict}"


def report(results: Path) -> None:
    rows = rows_in(results / "table1")
    for r in rows:
        r["config"] = config_label(r)
    combos = [(m, "–") for m in MODELS if m != "hypervae"] + [("hypervae", p) for p in PRESETS]
    order = {
        (shown_name(*ds), m, c): i
        for i, (ds, (m, c)) in enumerate((ds, mc) for ds in SETTINGS for mc in combos)
    }
    rows.sort(key=lambda r: order.get((r["dataset"], r["model"], r["config"]), 99))
    atomic_write_text(results / "table1.json", json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Table 1: density estimation",
        "",
        "Made by `PYROHVAE_DATA_DIR=../shared/data python experiments/table1.py` (then `--report`).",
        "Each model: 10,000 steps, minibatch 100, one task per step (the VAE: minibatches across tasks),",
        "Adam lr 3e-4, z and u of 10 dims; evaluated on the full test set with 1,024 importance samples,",
        "θ of each test task from what its guide reads of a context of up to 100 test images of the task",
        "(HyperVAE: one random draw for the paper's configuration, the mean image of all of them for",
        "`task-specific`'s set-mean guide), the task's decoder (MetaVAE). `task-specific` (the preset chosen in",
        "[task_models.md](task_models.md)) takes 4 tasks of 100 images a step: 4x the images of a step.",
        "Nats per image. `−log p(x)` is importance-sampled, ± its standard error over the test images.",
        "On unseen alphabets MetaVAE has no decoder of the task: its −ELBO, recon and KL(z) are means over",
        "its training decoders (the paper's mean negative ELBO), its −log p(x) that of their uniform mixture.",
        "",
        "| dataset | model | config | −ELBO | recon | −log p(x) | KL(z) | KL(u) | paper −EL | paper −LL | paper KL(z) | paper KL(u) | PSIS k̂ median | train s | n |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        paper = PAPER.get((r["dataset"], r["model"]), (None,) * 4)
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['config']} | {density_cells(r)} | {fmt(paper[0])} | {fmt(paper[1])} | {fmt(paper[2])} | {fmt(paper[3])} | "
            f"{fmt(r['psis_khat_median'], 2)} | {r['train_seconds']:.0f} | {r['n']} |"
        )
    lines += [
        "",
        "## Reading the paper's columns",
        "",
        "In the paper's Table 1, −LL equals −EL minus KL(z) to within 0.2 nats in 7 of its 9 cells",
        "(MNIST VAE 118.2 − 18.8 = 99.4), so it reads as the expected reconstruction term",
        "E_q[−log p(x|z)], our `recon`, not an importance-sampled marginal likelihood. Our `−log p(x)`",
        "is the importance-sampled estimate (K = 1,024, the guide as proposal); it lies between the true",
        "−log p(x) and −ELBO. Compare the paper's −LL with our `recon`, its −EL with our `−ELBO`.",
        "KL(u) is KL(q(u|d_t) ‖ p(u)) per task (paid once per task, not per image).",
        "PSIS k̂ (over ten test images per row) is above 0.7 in most rows: the importance weights are",
        "heavy-tailed, so `−log p(x)` is best read as what it is in expectation, an upper bound on the",
        "true −log p(x) that is tighter than −ELBO, not as a converged estimate; MetaVAE's k̂ near 2 on",
        "MNIST and Fashion-MNIST says its q(z|x, D) is the poorest proposal of the three.",
    ]
    lines += targets(rows) + tried(results, rows)
    atomic_write_text(results / "table1.md", "\n".join(lines) + "\n")
    print(f"wrote {results / 'table1.md'} ({len(rows)} rows)")


def main():
    options = parser(__doc__)
    options.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    names = [setting_name(*s) for s in SETTINGS]
    options.add_argument("--datasets", nargs="+", default=names, choices=names)
    options.add_argument(
        "--presets",
        nargs="+",
        default=list(PRESETS),
        choices=list(PRESETS),
        help="HyperVAE configurations to run",
    )
    options.add_argument(
        "--train-only",
        action="store_true",
        help="train the runs (for experiments/table3.py) and leave evaluation for later",
    )
    args = options.parse_args()
    if not args.report:
        for dataset, split in SETTINGS:
            if setting_name(dataset, split) not in args.datasets:
                continue
            for model in args.models:
                for preset in args.presets if model == "hypervae" else ["paper"]:
                    run_one(dataset, split, model, args, preset)
                    report(args.results)
    report(args.results)


if __name__ == "__main__":
    run(main)
