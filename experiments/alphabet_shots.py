"""Where a model of an unseen Omniglot alphabet gains from its shots: from shots of the scored
drawing's own character, or from the alphabet's style alone.

The omniglot-alphabets benchmark of experiments/fewshot.py draws a model's k shots at random from the
scored drawing's alphabet; its 20 shots hold on average about 0.6 drawings of that drawing's own
character (20 of an alphabet's ~659). Here the shots are chosen instead: for every scored drawing
(--per-task random drawings of each of the 20 evaluation alphabets), its shots are `own` other
drawings of its character and `k - own` drawings of other characters of its alphabet, for each
(k, own) of CONDITIONS; the drawing itself is never a shot. The alphabets runs of the full stage
(`fewshot.py --stages full --benchmarks omniglot-alphabets`) are read, not trained, each beside the
VAE of its own z on the same images. Each config's row is written as soon as it is done.

    PYROHVAE_DATA_DIR=../shared/data python experiments/alphabet_shots.py [--configs NAME ...]
    python experiments/alphabet_shots.py --report
"""

from __future__ import annotations

import dataclasses
import json
import math

import torch
from common import parser, rows_in, run

from pyrohvae import fewshot
from pyrohvae.files import atomic_write_text
from pyrohvae.train import load_run

BENCHMARK = "omniglot-alphabets"
# name -> (shots, of which drawings of the scored drawing's own character)
CONDITIONS = {
    "style-1": (1, 0),
    "own-1": (1, 1),
    "style-20": (20, 0),
    "own-1+style-19": (20, 1),
    "own-4+style-16": (20, 4),
}
# the differences the report reads: (a, b, what a has that b has not); each is −log p under b minus
# under a, positive where a is the better model
CONTRASTS = (
    ("style-20", "style-1", "19 more shots of other characters"),
    ("own-1", "style-1", "one shot of its own character instead of another's"),
    ("own-1+style-19", "style-20", "one of 20 shots of its own character"),
    ("own-4+style-16", "own-1+style-19", "three more of its own character among 20"),
)
RANDOM_SHOTS = 20  # the benchmark's most shots
CONFIGS = ("pool-split-shots-z32-k-deep-kl1", "pool-split-shots", "paper")


def folder(args, name: str):
    return args.runs / f"fewshot-{BENCHMARK}-{name}-steps{args.steps}-seed{args.seed}"


def plan(alphabets, characters, per_task: int, most_own: int, most: int, seed: int):
    """For every scored drawing: its index, its other-character pool and its own-character pool,
    each in a random order of its own, long enough for every condition."""
    g = torch.Generator().manual_seed(seed)
    scored, own, other = [], [], []
    for members in alphabets.task_members():
        for i in members[torch.randperm(len(members), generator=g)[:per_task]].tolist():
            same = members[(characters.tasks[members] == characters.tasks[i]) & (members != i)]
            rest = members[characters.tasks[members] != characters.tasks[i]]
            scored.append(i)
            own.append(same[torch.randperm(len(same), generator=g)][:most_own])
            other.append(rest[torch.randperm(len(rest), generator=g)][:most])
    return torch.tensor(scored), torch.stack(own), torch.stack(other)


def own_in_random(alphabets, characters, index: torch.Tensor, k: int = RANDOM_SHOTS) -> float:
    """How many drawings of its own character k shots drawn at random from the rest of its alphabet
    hold, on average over the scored drawings `index` (the benchmark's shots)."""
    own = (characters.tasks[:, None] == characters.tasks[index][None]).sum(0) - 1
    rest = (alphabets.tasks[:, None] == alphabets.tasks[index][None]).sum(0) - 1
    return float((k * own / rest).mean())


def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = a - b
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def score_config(name: str, args) -> None:
    path = args.results / "alphabet_shots" / f"{name}-steps{args.steps}-seed{args.seed}.json"
    if path.exists():
        return
    program, state = load_run(folder(args, name), args.device)
    vae_name = "vae-z32" if program.config.z_dim == 32 else "vae"
    vae = load_run(folder(args, vae_name), args.device)[0]
    alphabets = program.config.load_data("test")
    characters = dataclasses.replace(program.config, task_by="character").load_data("test")
    if not torch.equal(alphabets.images, characters.images):
        raise SystemExit("Error: the test part lists its alphabets' and characters' images in another order")
    most_own = max(own for _, own in CONDITIONS.values())
    most = max(k - own for k, own in CONDITIONS.values())
    index, own, other = plan(alphabets, characters, args.per_task, most_own, most, args.seed)
    images = alphabets.images[index].float()
    print(
        f"[{name}] {len(index)} drawings of {alphabets.num_tasks} alphabets, {args.samples} samples",
        flush=True,
    )
    nll = {vae_name: fewshot.scores_given_shots(vae, images, samples=args.samples, seed=args.seed)[1]}
    for condition, (k, n_own) in CONDITIONS.items():
        pick = torch.cat([own[:, :n_own], other[:, : k - n_own]], 1)
        posterior = fewshot.shots_posteriors(program, alphabets.images, pick)
        nll[condition] = fewshot.scores_given_shots(
            program, images, posterior, alphabets.images, pick, args.samples, args.seed
        )[1]
        print(f"[{name}] {condition}: {nll[condition].mean():.2f}", flush=True)
    base = nll[vae_name]
    row = {
        "config": name,
        "vae": vae_name,
        "steps": state["step"],
        "seed": args.seed,
        "samples": args.samples,
        "images": len(index),
        "per_task": args.per_task,
        "own_in_random": own_in_random(alphabets, characters, index),
        "nll": {m: float(v.mean()) for m, v in nll.items()},
        "nll_stderr": {m: float(v.std() / math.sqrt(len(v))) for m, v in nll.items()},
        "gain": {c: paired(base, nll[c]) for c in CONDITIONS},
        "contrasts": {f"{a} vs {b}": paired(nll[b], nll[a]) for a, b, _ in CONTRASTS},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(row, indent=2) + "\n")
    print(
        f"[{name}] gains over {vae_name}: " + ", ".join(f"{c} {g[0]:+.2f}" for c, g in row["gain"].items()),
        flush=True,
    )


def report(args) -> None:
    rows = rows_in(args.results / "alphabet_shots", f"*-steps{args.steps}-seed{args.seed}.json")
    heads = ["config", "VAE of its z", *CONDITIONS]
    lines = [
        "# Unseen alphabets: the gain of shots of the drawing's own character and of its alphabet's style",
        "",
        (
            "Made by `PYROHVAE_DATA_DIR=../shared/data python experiments/alphabet_shots.py` (then `--report`), "
            "on the runs of `experiments/fewshot.py --stages full --benchmarks omniglot-alphabets`. Every scored "
            "drawing's shots are chosen: `own-n` other drawings of its own character, `style-m` drawings of "
            "other characters of its alphabet; never itself. −log p(x) by importance sampling, nats."
        ),
        "",
        "−log p(x) ± its standard error:",
        "",
        "| " + " | ".join(heads) + " |",
        "| --- | " + " | ".join(["---:"] * (len(heads) - 1)) + " |",
    ]
    for r in rows:
        cells = [f"{r['nll'][m]:.2f} ± {r['nll_stderr'][m]:.2f}" for m in (r["vae"], *CONDITIONS)]
        lines.append(f"| {r['config']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            "Gains over the VAE of the model's own z (the VAE's −log p minus the model's, paired, ± the "
            "standard error of the paired difference):"
        ),
        "",
        "| config | " + " | ".join(CONDITIONS) + " |",
        "| --- | " + " | ".join(["---:"] * len(CONDITIONS)) + " |",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | " + " | ".join(f"{g:+.2f} ± {s:.2f}" for g, s in r["gain"].values()) + " |"
        )
    lines += ["", "What one kind of shot adds (nats, paired, positive: the first is the better model):", ""]
    for r in rows:
        for a, b, what in CONTRASTS:
            g, s = r["contrasts"][f"{a} vs {b}"]
            lines.append(f"- {r['config']}, {a} over {b} ({what}): {g:+.2f} ± {s:.2f}")
    if rows:
        r = rows[0]
        lines += [
            "",
            (
                f"{r['images']} drawings ({r['per_task']} of each evaluation alphabet), {r['samples']} importance "
                f"samples, runs of {r['steps']} steps, seed {r['seed']}."
            ),
        ]
    lines += ["", *reading(rows, args)]
    path = args.results / "alphabet_shots.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")


def reading(rows: list[dict], args) -> list[str]:
    """Each row set beside its benchmark row: the fall from 1 to 20 random shots that its parts predict
    and that the benchmark measured."""
    lines = ["What the parts predict for the benchmark's random shots:", ""]
    for r in rows:
        g, c, m = r["gain"], r["contrasts"], r["own_in_random"]
        style, one = c["style-20 vs style-1"][0], c["own-1+style-19 vs style-20"][0]
        bench = (
            args.results
            / "fewshot"
            / f"full-{BENCHMARK}-{r['config']}-steps{r['steps']}-seed{r['seed']}.json"
        )
        measured = ""
        if bench.exists():
            nll = {x["model"]: x["nll"] for x in json.loads(bench.read_text())["rows"]}
            measured = f" (the benchmark, on its own drawings: {nll['k=1'] - nll[f'k={RANDOM_SHOTS}']:.2f})"
        lines.append(
            f"- {r['config']}: {RANDOM_SHOTS} shots drawn at random from the rest of the alphabet hold "
            f"{m:.2f} drawings of the scored one's character on average, so they should be worth about "
            f"{style:.2f} + {m:.2f} × {one:.2f} = {style + m * one:.2f} nats more than one shot{measured}; "
            f"four of its own character among 20 are worth {g['own-4+style-16'][0] - g['style-1'][0]:.2f} "
            "more than one shot of another character."
        )
    return lines


def main():
    p = parser(__doc__, samples=1024)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help="alphabets runs of the full stage")
    p.add_argument("--per-task", type=int, default=25, help="scored drawings of each alphabet")
    args = p.parse_args()
    if not args.report:
        for name in args.configs:
            if not folder(args, name).exists():
                raise SystemExit(
                    f"Error: {folder(args, name)} not found: train it with experiments/fewshot.py first"
                )
            score_config(name, args)
    report(args)


if __name__ == "__main__":
    run(main)
