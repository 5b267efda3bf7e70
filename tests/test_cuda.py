"""The paths that only a GPU tries: a library's tensor made on the default device meets the model's on
the GPU. Skipped without CUDA; `benchmarks/gpu_run.sh` runs them on a lent machine."""

import math

import pytest
import torch
from conftest import program_of, task_data

from pyrohvae import fewshot
from pyrohvae.evaluate import run_evaluation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_evaluate_on_the_gpu_scores_as_on_the_cpu_with_its_psis_khat():
    program, data = program_of(), task_data([6, 6])
    cpu = run_evaluation(program, data, 256, "task", None, 0, progress=False)
    gpu = run_evaluation(program.to("cuda"), data, 256, "task", None, 0, progress=False)
    assert math.isfinite(gpu["psis_khat_median"])
    # other draws on another device: the same model's scores within their Monte Carlo error
    assert abs(gpu["nelbo"] - cpu["nelbo"]) < 0.01 * cpu["nelbo"]
    assert abs(gpu["nll"] - cpu["nll"]) < 0.01 * cpu["nll"]


def test_the_few_shot_curve_of_a_warped_address_on_the_gpu_is_the_cpu_s():
    program = program_of(
        split_context=True, guide="precision-pool", z_prior="shots-k", z_dim=32, shot_template="warp-address"
    )
    data = task_data([5, 5])
    cpu = fewshot.curve(program, data, (0, 1, 2), per_task=2, samples=64, seed=0, progress=False)
    gpu = fewshot.curve(program.to("cuda"), data, (0, 1, 2), per_task=2, samples=64, seed=0, progress=False)
    assert gpu.models == cpu.models
    for m in cpu.models:
        assert abs(gpu.nll[m].mean().item() - cpu.nll[m].mean().item()) < 0.01 * cpu.nll[m].mean().item(), m
