"""What the timing scripts share: waiting for a device's queued work before reading the clock, and the
words that say which machine a figure came from (every result file carries them)."""

from __future__ import annotations

import argparse
import platform

import torch


def sync_for(device: torch.device):
    """A callable that returns once `device` has done the work queued on it: a GPU's kernels are timed
    to their end, not to their launch. On the CPU, work is done when the call returns."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def repeats_and_threads(doc: str, repeats: int) -> argparse.Namespace:
    """The command line of a timing script that takes only --repeats (default `repeats`) and
    --threads (torch's own where not given), parsed, and the torch threads set."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
