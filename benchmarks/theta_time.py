"""Milliseconds to generate θ(u) for one task, forward and backward, as ratios to the code that trains.

Two directions for the fixed cost of a HyperVAE step (issue: the fixed cost of a step), each timed in
turns with the generation `ThetaGenerator.generate` runs in training (both halves, one task, the
large dense layers in factored form where the task's images are few):

(batched) one matrix product for the V of every layer whose product starts H·V, and one for the U of
    every layer whose product starts U·H, per half, rather than one each: 2 products a half in place
    of 18 small ones, then each layer's last product as before;
(compiled) `torch.compile` of the same generation (one graph per half; the compile time printed).

Both give the same θ as `generate` (the largest difference printed). The figure is the median of
repeated timed forward-and-backward passes after warm-up. On a GPU, where a step's fixed cost is
mostly the count of kernels (benchmarks/RESULTS.md, "GPU"), the batched form launches 4 products
a half in place of 18; `benchmarks/gpu_run.sh` runs this script there. A `torch.compile` that
fails is reported and left out, the rest timed.

    python benchmarks/theta_time.py [--items 5 100] [--repeats 60] [--threads N] [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import machine, sync_for

from pyrohvae.nets import ThetaGenerator, _name


def generate(theta, u, items):
    return {half: theta.generate(half, u, items) for half in ("encoder", "decoder")}


def generate_batched(theta, u, items):
    """`generate` with the first product of every made layer of a half done in one."""
    H = theta.H(u)
    h = H.reshape(theta.h_dim, theta.h_dim)
    out = {}
    for half in ("encoder", "decoder"):
        theta_half, tall, wide = {}, [], []
        for key, layer in theta.layers[half].items():
            name = _name(key)
            if layer.pays_factored(H, items):
                base = name.removesuffix(".weight")
                theta_half[base + ".P"], theta_half[base + ".Q"] = layer.factors(H)
                theta_half[base + ".B"] = layer.B.expand(*H.shape[:-2], -1, -1)
            else:
                (tall if layer.B.shape[0] > layer.B.shape[1] else wide).append((name, layer))
        if tall:
            vs = [layer.V for _, layer in tall]
            for (name, layer), hv in zip(tall, (h @ torch.cat(vs, 1)).split([v.shape[1] for v in vs], 1)):
                theta_half[name] = torch.addmm(layer.B, layer.U, hv).reshape(*H.shape[:-2], *layer.shape)
        if wide:
            us = [layer.U for _, layer in wide]
            for (name, layer), uh in zip(wide, (torch.cat(us, 0) @ h).split([x.shape[0] for x in us], 0)):
                theta_half[name] = torch.addmm(layer.B, uh, layer.V).reshape(*H.shape[:-2], *layer.shape)
        out[half] = theta_half
    return out


def step(fn, theta, u, items, sync=lambda: None):
    theta.zero_grad(set_to_none=True)
    made = fn(theta, u, items)
    loss = sum(t.square().sum() for half in made.values() for t in half.values())
    loss.backward()
    sync()  # a GPU's kernels are timed to their end, not to their launch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, nargs="+", default=[5, 100])
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    theta = ThetaGenerator(init_scale=1.0).to(device)
    u = torch.randn(1, 1, 10, device=device)
    sync = sync_for(device)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    say(f"{device}; {machine()}; one task, median of {args.repeats}")
    result = {"device": str(device), "machine": machine(), "repeats": args.repeats, "items": {}}
    for items in args.items:
        candidates = {"generate": generate, "batched": generate_batched}
        compiled = torch.compile(generate)
        start = time.perf_counter()
        try:
            step(compiled, theta, u, items, sync)
        except Exception as error:  # a backend missing on the machine: time the rest
            say(f"  torch.compile failed: {str(error).splitlines()[0]}")
        else:
            candidates["compiled"] = compiled
        compile_s = time.perf_counter() - start
        diffs = {}
        with torch.no_grad():
            ref = generate(theta, u, items)
            for name in list(candidates)[1:]:
                got = candidates[name](theta, u, items)
                diffs[name] = max(float((got[h][k] - ref[h][k]).abs().max()) for h in ref for k in ref[h])
                say(f"  {items} images: {name} differs from generate by at most {diffs[name]:.1e}")
        times = {name: [] for name in candidates}
        for i in range(args.repeats + 10):
            for name, fn in candidates.items():
                start = time.perf_counter()
                step(fn, theta, u, items, sync)
                if i >= 10:
                    times[name].append(time.perf_counter() - start)
        ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        cells = [f"{name} {ms[name]:.2f} ms ({ms[name] / ms['generate']:.2f}x)" for name in ms]
        say(f"{items} images a task: " + ", ".join(cells) + f"; compiled in {compile_s:.0f} s")
        result["items"][str(items)] = {
            "ms": ms,
            "ratio": {name: ms[name] / ms["generate"] for name in ms},
            "max_abs_diff": diffs,
            "compile_s": compile_s,
        }
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
