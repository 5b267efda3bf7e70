"""Importance-sampled log-likelihood at K = 1024: the vectorized path against a plain loop over
`pyro.infer.Importance`, one datum at a time, on the same data and the same model.

Prints images per second of each and their ratio (timed in this process, one after the other),
the two estimates side by side on the data both scored, the time the vectorized path needs for the
full MNIST test set at this rate, and the peak memory of each path (each measured in a child
process of its own, as the growth of its peak resident set over the loaded model; on a GPU, of its
peak allocated GPU memory).

    PYROHVAE_DATA_DIR=../shared/data python benchmarks/nll_time.py [--quick] [--run RUN_DIR] [--json]
        [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
from timing import device_name, machine, sync_for

from pyrohvae import data
from pyrohvae.config import RunConfig
from pyrohvae.importance import importance_scores, reference_log_likelihood
from pyrohvae.program import build
from pyrohvae.train import TrainError, load_run, resolve_device


def setup(run, device):
    if run:
        program, _ = load_run(run, device)
    else:  # speed does not depend on training: an untrained HyperVAE
        pyro.set_rng_seed(0)
        program = build(RunConfig(dataset="mnist", preset="paper")).to(device).eval()
    try:
        images = data.load("mnist", "test").images[:1000].float()
    except data.DataError:
        images = (torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.13).float()
    images = images.to(device)
    task = program.conditioned(images[:1].unsqueeze(0))  # θ of one task, as the density protocol
    return task, images


def vectorized(task, images, samples):
    return importance_scores(task.model, task.guide, images.unsqueeze(0), samples)["log_p"][0]


def loop(task, images, samples):
    return torch.tensor(
        [
            reference_log_likelihood(task.model, task.guide, x.reshape(1, 1, 1, 28, 28), samples)
            for x in images
        ]
    )


def _peak_rss_mb() -> float:
    """This process's own peak resident set (VmHWM; getrusage's maxrss is inherited from a parent
    across fork and exec on Linux, so it would report the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _peak_rss_mb()


def child(path, run, n, samples, device) -> None:
    """Run one path in this process and print the growth of its peak memory, in MB."""
    task, images = setup(run, device)
    before = _peak_mb(device)
    (vectorized if path == "vectorized" else loop)(task, images[:n], samples)
    print(json.dumps({"peak_mb": _peak_mb(device) - before}))


def peak_memory(path, run, n, samples, device) -> float:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        path,
        "--n",
        str(n),
        "--samples",
        str(samples),
        "--device",
        device.type,
    ]
    if run:
        cmd += ["--run", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--run", type=Path, default=None, help="a trained run (default: an untrained HyperVAE)"
    )
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--child", choices=["vectorized", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except TrainError as e:
        parser.error(str(e))
    if args.child:
        child(args.child, args.run, args.n, args.samples, device)
        return
    n_vec, n_loop = (50, 2) if args.quick else (300, 6)
    task, images = setup(args.run, device)
    sync = sync_for(device)
    pyro.set_rng_seed(1)
    vectorized(task, images[:5], args.samples)  # warm-up
    tic = time.perf_counter()
    vec = vectorized(task, images[:n_vec], args.samples)
    sync()
    vec_rate = n_vec / (time.perf_counter() - tic)
    tic = time.perf_counter()
    ref = loop(task, images[:n_loop], args.samples)
    sync()
    loop_rate = n_loop / (time.perf_counter() - tic)
    result = {
        "samples": args.samples,
        "vectorized_images_per_s": vec_rate,
        "importance_loop_images_per_s": loop_rate,
        "speedup": vec_rate / loop_rate,
        "mnist_test_minutes_vectorized": 10_000 / vec_rate / 60,
        "vectorized_nll": (-vec[:n_loop]).tolist(),
        "importance_loop_nll": (-ref).tolist(),
        "vectorized_peak_mb": peak_memory("vectorized", args.run, n_vec, args.samples, device),
        "importance_loop_peak_mb": peak_memory("loop", args.run, n_loop, args.samples, device),
        "device": device_name(device),
        "machine": machine(),
        "model": str(args.run) if args.run else "untrained hypervae",
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"importance-sampled log-likelihood, K = {args.samples} "
        f"({result['device']}; {result['machine']}; {result['model']})"
    )
    print(
        f"  vectorized (particle plate)    {vec_rate:8.2f} images/s  "
        f"peak +{result['vectorized_peak_mb']:.0f} MB"
    )
    print(
        f"  loop over pyro.infer.Importance {loop_rate:7.3f} images/s  "
        f"peak +{result['importance_loop_peak_mb']:.0f} MB"
    )
    print(
        f"  speed-up {result['speedup']:.0f}x; full MNIST test set vectorized: "
        f"{result['mnist_test_minutes_vectorized']:.1f} min"
    )
    for i, (a, b) in enumerate(zip(result["vectorized_nll"], result["importance_loop_nll"])):
        print(f"  datum {i}: -log p(x) vectorized {a:.2f}, Importance {b:.2f}")


if __name__ == "__main__":
    main()
