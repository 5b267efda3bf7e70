"""How much a model of a new alphabet could gain by fitting its shots prior to the task: the ceiling.

p(z | u, shots) (`--z-prior shots-k`) gives N(0, I) a learnt share of the mixture and widens each
shot's component by a learnt scale, both the same for every task of k shots. An alphabet of a few
distinctive characters (Braille) is better served by a smaller share and narrower components than one
of many similar ones. Before building a fit of either to a new task's shots, this measures what the
best fit could give: each held-out image is scored (`fewshot-curve --split held-out`'s plan: the same
images and shots) with the N(0, I) logit or the log widening of every dimension moved by each offset,
and the report sets the learnt values beside the best offset for all images, the best for each
alphabet and the best for each image, the last two chosen with the scored images themselves (a
ceiling, not a method). Each (offset, k) is written to its own file as soon as it is scored.

    PYROHVAE_DATA_DIR=../shared/data python experiments/shot_share.py RUN [--kind logit|widen]
    python experiments/shot_share.py --report
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from common import parser, rows_in, run

from pyrohvae import fewshot
from pyrohvae.files import UserError, atomic_write_text
from pyrohvae.train import load_run

OFFSETS = {"logit": (-3.0, -2.0, -1.0, 0.0, 1.0), "widen": (-0.7, -0.35, 0.0, 0.35)}
SHOTS = (1, 20)
PER_TASK = 50  # images of each held-out alphabet, as the alphabets' validation rows of docs/few-shot.md


def score(args) -> None:
    program, state = load_run(args.run)
    prior = getattr(program, "shot_prior", None)
    if prior is None:
        raise UserError(f"{args.run}: its p(z) reads no shots (train with --z-prior shots-k)")
    data = fewshot.unseen_tasks(program.config, "held-out")
    index, pools, tasks = fewshot.curve_plan(data, (0, *SHOTS), PER_TASK, args.seed)
    images = data.images[index].float()
    parameter = {"logit": prior.prior_logit, "widen": prior.log_widen}[args.kind]
    learnt = parameter.data.clone()
    names = [data.task_names[t] for t in tasks]
    for k in SHOTS:
        posterior = fewshot.shots_posteriors(program, data.images, pools[:, :k])
        for offset in OFFSETS[args.kind]:
            path = args.results / "shot_share" / f"{args.run.name}-{args.kind}{offset:+.2f}-k{k}.json"
            if path.exists():
                continue
            parameter.data = learnt + offset
            _, nll = fewshot.scores_given_shots(
                program, images, posterior, data.images, pools[:, :k], args.samples, args.seed
            )
            parameter.data = learnt.clone()
            row = {
                "run": args.run.name,
                "step": int(state["step"]),
                "kind": args.kind,
                "offset": offset,
                "shots": k,
                "samples": args.samples,
                "tasks": names,
                "nll": nll.tolist(),
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(row) + "\n")
            print(f"[{args.run.name}] {args.kind} {offset:+.2f}, k = {k}: {nll.mean():.2f} nats", flush=True)


def ceilings(rows: list[dict]) -> dict:
    """Mean −log p over the images: at each offset, at the best offset per alphabet, per image."""
    nll = torch.tensor([r["nll"] for r in rows], dtype=torch.float64)  # (offsets, images)
    names = rows[0]["tasks"]
    alphabets = sorted(set(names))
    member = torch.tensor([[n == a for n in names] for a in alphabets])  # (alphabets, images)
    per_alphabet = torch.stack([nll[:, m].sum(1) for m in member])  # (alphabets, offsets)
    return {
        "at": {r["offset"]: v for r, v in zip(rows, nll.mean(1).tolist(), strict=True)},
        "alphabet": float(per_alphabet.min(1).values.sum() / nll.shape[1]),
        "image": float(nll.min(0).values.mean()),
        "best": {
            a: rows[i]["offset"] for a, i in zip(alphabets, per_alphabet.argmin(1).tolist(), strict=True)
        },
    }


def report(results) -> None:
    rows = rows_in(results / "shot_share")
    lines = [
        "# The shots prior fitted to each new alphabet: the ceiling",
        "",
        "Made by `PYROHVAE_DATA_DIR=../shared/data python experiments/shot_share.py RUN --kind KIND`",
        "(`experiments/shot_share.py`'s docstring says why). −log p(x) in nats, mean of the held-out",
        f"images ({PER_TASK} of each validation alphabet), K importance samples; offset 0 is the model as",
        "trained. The last two columns choose the offset with the scored images: what no fit to the",
        'shots can beat. The runs are named in docs/few-shot.md ("The shots prior fitted to each',
        'alphabet").',
        "",
        "| run | moved | k | K | offsets: −log p | best offset for all | best per alphabet | best per image |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    groups = {}
    for r in rows:
        groups.setdefault((r["run"], r["kind"], r["shots"]), []).append(r)
    found = {key: ceilings(sorted(group, key=lambda r: r["offset"])) for key, group in sorted(groups.items())}
    for (name, kind, k), c in found.items():
        cells = ", ".join(f"{o:+g}: {v:.2f}" for o, v in c["at"].items())
        best = min(c["at"].values())
        lines.append(
            f"| {name} | {kind} | {k} | {groups[name, kind, k][0]['samples']} | {cells} | {best:.2f} | {c['alphabet']:.2f} | {c['image']:.2f} |"
        )
    lines += ["", "Best offset per alphabet:", ""]
    for (name, kind, k), c in found.items():
        lines.append(f"- {name}, {kind}, k = {k}: " + ", ".join(f"{a} {o:+g}" for a, o in c["best"].items()))
    atomic_write_text(results / "shot_share.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = parser(__doc__, samples=256, device=False)
    p.add_argument("run", type=Path, nargs="?", help="a run trained with held-out classes")
    p.add_argument("--kind", choices=sorted(OFFSETS), default="logit", help="what the offsets move")
    args = p.parse_args()
    if not args.report:
        if args.run is None:
            raise UserError("give a RUN to score, or --report")
        score(args)
    report(args.results)


if __name__ == "__main__":
    run(main)
