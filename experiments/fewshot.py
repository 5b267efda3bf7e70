"""Few-shot models of tasks never trained on: the field's benchmark, and the variants tried for a
HyperVAE that learns from its shots.

The measure is `pyrohvae.fewshot.curve` (`python cli.py fewshot-curve RUN`): every scored image
gets −ELBO and importance-sampled −log p(x) under the model made from k *other* images of its task,
for each k, and under the k = 0 models θ(mean training-task ū) and θ(E[u]); our VAE, trained on the
same tasks, is scored on the same images. Every (run, benchmark) writes its row file to
experiments/results/fewshot/ as soon as it is done, and run folders keep their checkpoints, so a
stopped sweep resumes where it stopped.

Stages:
1. `screen`: Omniglot, 30 background alphabets with characters as tasks, of which the 5 of
   `VALIDATION_ALPHABETS` are held out of training (`--exclude-classes`) and are the validation tasks:
   3,000 steps, 2 images of each of their 177 characters scored, K = 256. The variants are chosen
   here, never on the evaluation alphabets.
2. `full`: 10,000 steps, the benchmarks of `BENCHMARKS` (test tasks, K = 1,024), our VAE, the paper's
   configuration, the default preset and the chosen variants.

    PYROHVAE_DATA_DIR=../shared/data python experiments/fewshot.py --stages screen
    python experiments/fewshot.py --report
"""

from __future__ import annotations

import json

import torch
from common import fmt, parser, rows_in, run, trained

from pyrohvae import fewshot
from pyrohvae.config import RunConfig
from pyrohvae.files import atomic_write_text
from pyrohvae.train import load_run

# Every sixth of the 30 background alphabets in name order, from the third: the validation tasks.
VALIDATION_ALPHABETS = ("Arcadian", "Braille", "Grantha", "Korean", "Sanskrit")
CHARACTERS = {"dataset": "omniglot", "split": "background", "task_by": "character"}
# The images of a step: 16 characters of 20 images each for the task models, 320 images for the VAE.
TASK_BATCH = {"batch_size": 20, "tasks_per_step": 16}
SCREEN = {"per_task": 2, "samples": 256, "shots": fewshot.SHOTS}

# name -> (what it changes, overrides of RunConfig): the task models' variants. The VAE is "vae".
VARIANTS = {
    "vae": ("our VAE, 320 images a step", {"model": "vae", "batch_size": 320}),
    "paper": ("the paper's configuration (one random draw, product of the shots' posteriors)",
              {"preset": "paper", **TASK_BATCH}),
    "default": ("the default preset (task-specific: set-mean guide, KL(z) anneal)", TASK_BATCH),
    "default-rc": ("default, q(u) reads the first k of the minibatch, which are scored too (--random-context)",
                   {**TASK_BATCH, "random_context": True}),
    "split": ("default, q(u) reads k images and the model scores the others (--split-context)",
              {**TASK_BATCH, "split_context": True}),
    "pool-split": ("split, q(u) the prior times one Gaussian factor per image (precision-pool guide)",
                   {**TASK_BATCH, "split_context": True, "guide": "precision-pool"}),
    "split-u32": ("split, u of 32 dimensions", {**TASK_BATCH, "split_context": True, "u_dim": 32}),
    "pool-split-u32": ("pool-split, u of 32 dimensions",
                       {**TASK_BATCH, "split_context": True, "guide": "precision-pool", "u_dim": 32}),
    "rc-zprior": ("default-rc, p(z | u) generated with θ(u) (--z-prior task)",
                  {**TASK_BATCH, "random_context": True, "z_prior": "task"}),
    "split-zprior": ("split, p(z | u) generated with θ(u)", {**TASK_BATCH, "split_context": True, "z_prior": "task"}),
    "rc-u32": ("default-rc, u of 32 dimensions", {**TASK_BATCH, "random_context": True, "u_dim": 32}),
    "pool-rc": ("default-rc with the precision-pool guide",
                {**TASK_BATCH, "random_context": True, "guide": "precision-pool"}),
    "rc-spatial": ("default-rc, the decoder's first feature map generated as (channels, positions) (--theta-layout "
                   "spatial)", {**TASK_BATCH, "random_context": True, "theta_layout": "spatial"}),
    "rc-h40": ("default-rc, H of 40 × 40 (--h-dim 40)", {**TASK_BATCH, "random_context": True, "h_dim": 40}),
    "pool-split-spatial": ("pool-split with the spatial layout",
                           {**TASK_BATCH, "split_context": True, "guide": "precision-pool", "theta_layout": "spatial"}),
    "rc-spatial-h40": ("rc-spatial with H of 40 × 40",
                       {**TASK_BATCH, "random_context": True, "theta_layout": "spatial", "h_dim": 40}),
}


# The benchmarks of the full stage: the training data (RunConfig fields), what a task model's step
# holds (its preset's where empty) and a VAE's, the part scored, images scored per task, the shots.
BENCHMARKS = {
    "omniglot-characters": {"data": CHARACTERS, "task_batch": TASK_BATCH, "vae_batch": 320, "per_task": 4,
                            "shots": fewshot.SHOTS},
    "omniglot-alphabets": {"data": {"dataset": "omniglot", "split": "background", "task_by": "alphabet"},
                           "task_batch": {}, "vae_batch": 100, "per_task": 50, "shots": (0, 1, 2, 5, 10, 20)},
    **{f"mnist-held-out-{d}": {"data": {"dataset": "mnist", "exclude_classes": [d]}, "task_batch": {},
                               "vae_batch": 100, "per_task": 400, "shots": (0, 1, 2, 5, 10, 20)}
       for d in ("2", "5", "8")},
}
FULL_SAMPLES = 1024
# The task models of every benchmark, besides our VAE: the paper's configuration, the default
# preset and the variants the screen chose, as they change the benchmark's own batches.
FULL_CONFIGS = ("paper", "default")


def full_config(benchmark: str, name: str, steps: int, seed: int) -> RunConfig:
    spec = BENCHMARKS[benchmark]
    overrides = {k: v for k, v in VARIANTS[name][1].items() if k not in TASK_BATCH}
    batch = {"batch_size": spec["vae_batch"]} if name == "vae" else spec["task_batch"]
    return RunConfig(**spec["data"], steps=steps, seed=seed, **overrides, **batch)


def full(args, rows_dir):
    for benchmark in args.benchmarks:
        spec = BENCHMARKS[benchmark]
        settings = {"per_task": spec["per_task"], "samples": FULL_SAMPLES, "shots": spec["shots"]}
        vae_dir = args.runs / f"fewshot-{benchmark}-vae-steps{args.steps}-seed{args.seed}"
        trained(full_config(benchmark, "vae", args.steps, args.seed), vae_dir, args.device, args.progress)
        vae, vae_state = load_run(vae_dir, args.device)
        for name in ("vae", *args.full_configs):
            path = rows_dir / f"full-{benchmark}-{name}-steps{args.steps}-seed{args.seed}.json"
            if path.exists():
                continue
            config = full_config(benchmark, name, args.steps, args.seed)
            folder = args.runs / f"fewshot-{benchmark}-{name}-steps{args.steps}-seed{args.seed}"
            trained(config, folder, args.device, args.progress)
            program, state = load_run(folder, args.device)
            test = fewshot.unseen_tasks(config, "test")
            print(f"[{folder.name}] scoring {benchmark}", flush=True)
            row = {"stage": "full", "benchmark": benchmark, "config": name, "about": VARIANTS[name][0],
                   **curve_row(program, state, test, config.load_data("train"), None if name == "vae" else vae,
                               settings, args.seed, args.progress)}
            atomic_write_text(path, json.dumps(row, indent=2) + "\n")
            print(f"[{folder.name}] " + " ".join(f"{r['model']} {r['nll']:.2f}" for r in row["rows"]), flush=True)
            report(args)


def screen_config(name: str, steps: int, seed: int) -> RunConfig:
    excluded = [f"{a}/*" for a in VALIDATION_ALPHABETS]
    return RunConfig(**CHARACTERS, exclude_classes=excluded, steps=steps, seed=seed, **VARIANTS[name][1])


def curve_row(program, state, data, train_data, vae, settings, seed, progress=True) -> dict:
    """The benchmark's report of a run on `data`, with the VAE's on the same images."""
    shots, per_task, samples = settings["shots"], settings["per_task"], settings["samples"]
    td = train_data if program.task_latent else None
    result = fewshot.curve(program, data, shots, per_task, samples, seed, td, progress=progress)
    vae_curve = fewshot.curve(vae, data, shots, per_task, samples, seed, progress=progress) if vae else None
    return {**fewshot.curve_report(result, vae_curve), "steps": state["step"],
            "train_seconds": round(state["seconds"], 1), "tasks": data.num_tasks, "images": len(result.task),
            "per_task": per_task, "samples": samples}


def screen(args, rows_dir):
    vae_dir = args.runs / f"fewshot-screen-vae-steps{args.screen_steps}-seed{args.seed}"
    trained(screen_config("vae", args.screen_steps, args.seed), vae_dir, args.device, args.progress)
    vae = load_run(vae_dir, args.device)[0]
    for name in args.variants:
        path = rows_dir / f"screen-{name}-steps{args.screen_steps}-seed{args.seed}.json"
        if path.exists() or name == "vae":
            continue
        config = screen_config(name, args.screen_steps, args.seed)
        folder = args.runs / f"fewshot-screen-{name}-steps{args.screen_steps}-seed{args.seed}"
        trained(config, folder, args.device, args.progress)
        program, state = load_run(folder, args.device)
        print(f"[{folder.name}] scoring the validation characters", flush=True)
        row = {"stage": "screen", "config": name, "about": VARIANTS[name][0], "overrides": VARIANTS[name][1],
               "benchmark": "omniglot-characters (validation alphabets)",
               **curve_row(program, state, config.load_data("held-out"), config.load_data("train"), vae, SCREEN,
                           args.seed, args.progress)}
        atomic_write_text(path, json.dumps(row, indent=2) + "\n")
        print(f"[{folder.name}] " + " ".join(f"{r['model']} {r['nll']:.2f}" for r in row["rows"]), flush=True)
    report(args)


def report(args) -> None:
    rows_dir = args.results / "fewshot"
    screened = [r for r in rows_in(rows_dir, "screen-*.json")]
    lines = ["# Few-shot models of tasks never trained on", "",
             "Made by `PYROHVAE_DATA_DIR=../shared/data python experiments/fewshot.py` (then `--report`); the "
             "measure is `python cli.py fewshot-curve RUN` (`pyrohvae.fewshot.curve`).", ""]
    lines += _screen_lines(screened)
    atomic_write_text(args.results / "fewshot.md", "\n".join(lines) + "\n")
    print(f"wrote {args.results / 'fewshot.md'}")


def _screen_lines(rows) -> list[str]:
    if not rows:
        return []
    shots = [k for k in fewshot.SHOTS if k]
    head = ["variant", "what changes", "k=0 (mean ū)", "k=0 (E[u])"] + [f"k={k}" for k in shots]
    head += ["set of 5", "gain k=1", "gain k=4", "gain k=9", "falls 0→9", "train s"]
    out = ["## Screen: validation characters, 3,000 steps", "",
           f"Omniglot background alphabets, characters as tasks; the {len(VALIDATION_ALPHABETS)} alphabets "
           f"{', '.join(VALIDATION_ALPHABETS)} held out of training, 2 images of each of their characters "
           "scored, K = 256. −log p(x | k shots) in nats; gain: our VAE's −log p(x) on the same images minus "
           "the model's (paired); falls: the steps of the curve from k = 0 (mean ū) to 9 that fall by more than "
           "their paired standard error.", "",
           "| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |"]
    for r in rows:
        nll = {x["model"]: x["nll"] for x in r["rows"]}
        gains = {g["model"]: g["gain"] for g in r.get("gains", [])}
        falls = [s["falls"] for s in r["changes"] if s["to"] <= 9]
        cells = [r["config"], r["about"], fmt(nll.get("training-mean"), 2), fmt(nll.get("prior-mean"), 2)]
        cells += [fmt(nll.get(f"k={k}"), 2) for k in shots]
        cells += [fmt(r["set_figure"], 2), fmt(gains.get("k=1"), 2), fmt(gains.get("k=4"), 2), fmt(gains.get("k=9"), 2),
                  f"{sum(falls)} of {len(falls)}", fmt(r["train_seconds"], 0)]
        out.append("| " + " | ".join(cells) + " |")
    vae = rows[0].get("vae")
    if vae:
        out += ["", f"Our VAE on the same images: −log p(x) {vae['nll']:.2f} ± {vae['nll_stderr']:.2f}, "
                    f"−ELBO {vae['nelbo']:.2f}."]
    return out + [""]


def main():
    p = parser(__doc__, steps=10_000, samples=None, limit_help="unused")
    p.add_argument("--stages", nargs="+", default=["screen", "full"], choices=["screen", "full"])
    p.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    p.add_argument("--full-configs", nargs="+", default=list(FULL_CONFIGS), choices=[v for v in VARIANTS if v != "vae"])
    p.add_argument("--screen-steps", type=int, default=3000)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows_dir = args.results / "fewshot"
    rows_dir.mkdir(parents=True, exist_ok=True)
    if args.report:
        return report(args)
    for stage in args.stages:
        {"screen": screen, "full": full}[stage](args, rows_dir)


if __name__ == "__main__":
    run(main)
