"""What the timing scripts share: waiting for a device's queued work before reading the clock, and the
words that say which machine a figure came from (every result file carries them)."""

from __future__ import annotations

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
