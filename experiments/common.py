"""What the experiment scripts share: train a run (or resume it) and evaluate it, once.

A run folder keeps its checkpoints, and each finished (train, evaluate) pair writes its row to
its own JSON file as soon as it is done, so a stopped sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"
sys.path.insert(0, str(HERE.parent))

from pyrohvae import checkpoint
from pyrohvae.config import RunConfig
from pyrohvae.evaluate import run_evaluation
from pyrohvae.files import UserError, atomic_write_text
from pyrohvae.train import CHECKPOINT, TrainError, load_run, train


def run(main) -> None:
    """Run a script's main; a failure the user can fix (missing data, a damaged checkpoint, a full
    disk) is one line on stderr and exit code 1, as in the CLI."""
    try:
        main()
    except UserError as e:  # what the CLI says in one line too: every error the user can act on
        sys.exit(f"Error: {e}")
    except OSError as e:
        sys.exit(f"Error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}")


def trained(config: RunConfig, run_dir: Path, device="cpu", progress=True, keep_every: int = 0) -> None:
    """Train `config` into `run_dir`, going on from its checkpoint if there is one."""
    name = run_dir.name
    resume = (run_dir / CHECKPOINT).exists()
    if resume:
        saved = RunConfig.load(run_dir / "config.json").to_dict()
        wanted = config.to_dict()
        differ = [k for k in wanted if k not in ("steps", "train_tasks") and saved.get(k) != wanted[k]]
        if differ:
            raise TrainError(
                f"{run_dir} holds a run of another configuration ("
                + ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} here" for k in differ)
                + ")"
            )
    step = checkpoint.load(run_dir / CHECKPOINT)["step"] if resume else 0
    if step > config.steps:  # a longer run under this name would pass for the one asked
        raise TrainError(f"{run_dir} holds a run of {step} steps, more than the {config.steps} asked")
    if resume and step == config.steps:
        print(f"[{name}] trained before", flush=True)
        return
    print(f"[{name}] training ({'resumed' if resume else 'new'})", flush=True)
    if resume:  # the run's own config (its train_tasks), asked to go on to this config's steps
        config = dataclasses.replace(RunConfig.load(run_dir / "config.json"), steps=config.steps)
    train(
        config, run_dir, device=device, resume=resume, log_every=50, progress=progress, keep_every=keep_every
    )


def evaluated_row(
    run_config: RunConfig,
    run_dir: Path,
    row_path: Path,
    samples: int,
    limit=None,
    seed: int = 0,
    device="cpu",
    progress=True,
    checkpoint_name: str = CHECKPOINT,
    **extra,
) -> dict:
    """The row of a trained and evaluated run (its last checkpoint, or `checkpoint_name`): read
    from `row_path` if it exists, else made."""
    if row_path.exists():
        print(f"[{run_dir.name}] done before, kept {row_path.name}", flush=True)
        return json.loads(row_path.read_text())
    trained(run_config, run_dir, device, progress)
    program, state = load_run(run_dir, device, checkpoint_name)
    test = program.config.load_data("test")
    print(f"[{run_dir.name}] evaluating {limit or len(test)} test images, {samples} samples", flush=True)
    result = run_evaluation(program, test, samples, "task", limit, seed, progress)
    threads = f"cpu ({torch.get_num_threads()} thread(s), {platform.machine()})"
    row = dict(extra)
    row.update(
        {key: result[key] for key in ("nelbo", "recon", "nll", "nll_stderr", "kl_z", "kl_u", "n", "samples")},
        steps=state["step"],
        seed=run_config.seed,
        train_seconds=round(state["seconds"], 1),
        device=threads if device == "cpu" else device,
        eval_seconds=result["seconds"],
        psis_khat_median=result["psis_khat_median"],
        psis_khat_max=result["psis_khat_max"],
    )
    row_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(row_path, json.dumps(row, indent=2) + "\n")
    print(f"[{run_dir.name}] {json.dumps(row)}", flush=True)
    return row


def rows_in(folder: Path, pattern: str = "*.json") -> list[dict]:
    """The rows a sweep has written so far into `folder`, one JSON file each, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))]


def fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def parser(
    doc: str,
    steps: int = 10_000,
    samples: int | None = 1024,
    limit_help: str = "about N test images",
    device: bool = True,
) -> argparse.ArgumentParser:
    """The options every experiment script shares."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=steps, help="training steps of each model")
    if samples is not None:
        p.add_argument("--samples", type=int, default=samples)
    p.add_argument("--limit", type=int, default=None, help=f"{limit_help} (a quick look, not the table)")
    p.add_argument("--seed", type=int, default=0)
    if device:
        p.add_argument("--device", default="cpu")
    p.add_argument("--results", type=Path, default=RESULTS, help="where rows and tables go")
    p.add_argument("--runs", type=Path, default=RUNS, help="run folders (git-ignored)")
    p.add_argument("--report", action="store_true", help="only rebuild the tables from the rows made so far")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def density_cells(r: dict) -> str:
    """−ELBO | recon | −log p(x) ± s.e. | KL(z) | KL(u), for a markdown row."""
    return (
        f"{fmt(r['nelbo'])} | {fmt(r['recon'])} | {fmt(r['nll'])} ± {fmt(r['nll_stderr'], 2)} | "
        f"{fmt(r['kl_z'])} | {fmt(r['kl_u'], 2)}"
    )


def typicality_aucs(fit: dict, columns: dict, scored: dict, labels, where: str, step: int, args) -> dict:
    """AUC of one typicality fit per column, each on its own statistics (names) of the fit images'
    `fit` {name: (n,)}, scoring the mixed set's `scored` statistics: {column: AUC}. The density is
    the one these experiments were run with, versions 2 to 5's mixture."""
    from pyrohvae.outliers import detection_metrics
    from pyrohvae.typicality import Fit

    out = {}
    for column, names in columns.items():
        values = [fit[n].tolist() for n in names]
        made = Fit(names, values, where, "", step, args.samples, args.seed, density="mixture")
        out[column] = detection_metrics(made.score(scored).numpy(), labels)["auc"]
    return out


def auc_table(rows: list[dict], columns, lead: list[str], cells, tail=None) -> list[str]:
    """A markdown table of each row's AUC (%) per column, after the leading columns `lead` (their
    cells `cells(r)`, a list) and before one more, `tail` = (its name, its cell of a row)."""
    heads = [*lead, *columns, *([tail[0]] if tail else [])]
    lines = [
        "| " + " | ".join(heads) + " |",
        "| " + " | ".join(["---"] * len(lead) + ["---:"] * (len(heads) - len(lead))) + " |",
    ]
    for r in rows:
        row = [*cells(r), *(fmt(100 * r["auc"][c]) for c in columns), *([tail[1](r)] if tail else [])]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def six_pair_means(rows: list[dict], columns, groups: dict) -> list[str]:
    """For each group (label -> its six rows) that has all six pairs: the mean AUC of each column."""
    lines = []
    for name, done in groups.items():
        if len(done) == 6:
            means = " / ".join(f"{c} {100 * sum(r['auc'][c] for r in done) / 6:.1f}" for c in columns)
            lines += ["", f"{name}, mean AUC over the six pairs: {means}."]
    return lines


def write_row(path: Path, row: dict, tag: str, what: str) -> None:
    """A sweep's row, written whole the moment it is done, and its AUCs printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(row, indent=2) + "\n")
    print(f"[{tag}] {what}: " + ", ".join(f"{c} {100 * a:.1f}" for c, a in row["auc"].items()), flush=True)
