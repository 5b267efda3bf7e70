"""Configurations by name: the paper's and the task-specific one; the settings they hold."""

import json

import pyro
import pytest
import torch
from click.testing import CliRunner

from pyrohvae.cli import main
from pyrohvae.config import PRESETS, ConfigError, RunConfig
from pyrohvae.program import build


def test_a_preset_fills_what_is_not_given():
    paper = RunConfig(dataset="mnist", preset="paper")
    assert (
        paper.guide,
        paper.tasks_per_step,
        paper.theta_init_scale,
        paper.u_scale_init,
        paper.kl_z_start,
        paper.kl_z_anneal,
    ) == ("random-draw", 1, 0.1, 1.0, 1.0, 0)
    ours = RunConfig(dataset="mnist")  # the default
    assert ours.preset == "task-specific"
    assert {k: getattr(ours, k) for k in PRESETS["task-specific"]} == PRESETS["task-specific"]
    mixed = RunConfig(dataset="mnist", preset="paper", guide="set-mean", kl_z_anneal=50, kl_z_start=3.0)
    assert (mixed.guide, mixed.kl_z_anneal, mixed.tasks_per_step) == ("set-mean", 50, 1)
    with pytest.raises(ConfigError, match="unknown preset 'best'"):
        RunConfig(dataset="mnist", preset="best")


def test_other_models_keep_their_own_settings():
    for model, guide in (("vae", "encoder"), ("metavae", "context-encoder")):
        config = RunConfig(dataset="mnist", model=model, train_tasks=["0"])
        assert (config.guide, config.tasks_per_step, config.kl_z_anneal) == (guide, 1, 0)
    with pytest.raises(ConfigError, match="apply to hypervae only"):
        RunConfig(dataset="mnist", model="vae", kl_z_anneal=10)


def test_a_config_from_before_presets_is_the_papers():
    old = RunConfig(dataset="mnist", preset="paper").to_dict()
    for key in ("preset", "u_scale_init", "kl_z_start", "kl_z_anneal", "z_prior"):
        old.pop(key)
    loaded = RunConfig.from_dict(old)
    assert loaded.preset == "paper" and loaded.u_scale_init == 1.0 and loaded.kl_z_anneal == 0


def test_kl_weights_follow_the_schedule():
    config = RunConfig(dataset="mnist", kl_u_warmup=100, kl_z_start=10.0, kl_z_anneal=1000)
    assert config.kl_weights(0) == (0.0, 10.0)
    assert config.kl_weights(50) == (0.5, pytest.approx(9.55))
    assert config.kl_weights(500) == (1.0, pytest.approx(5.5))
    assert config.kl_weights(1000) == config.kl_weights(5000) == (1.0, 1.0)
    assert RunConfig(dataset="mnist", preset="paper").kl_weights(1) == (1.0, 1.0)


def test_u_scale_init_scales_the_posterior_at_the_start():
    x = (torch.rand(2, 5, 1, 28, 28) < 0.3).float()
    scales = []
    for factor in (1.0, 0.1):
        pyro.set_rng_seed(0)
        program = build(RunConfig(dataset="mnist", u_scale_init=factor))
        scales.append(program.inference.posterior(x)[1])
    torch.testing.assert_close(scales[1], 0.1 * scales[0])


def test_train_by_preset_writes_its_settings(tmp_path, data_root):
    for preset in ("paper", "task-specific"):
        run = tmp_path / preset
        args = [
            "train",
            "--dataset",
            "mnist",
            "--steps",
            "2",
            "--preset",
            preset,
            "--out",
            str(run),
            "--no-progress",
        ]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        saved = json.loads((run / "config.json").read_text())
        assert saved["preset"] == preset
        assert {k: saved[k] for k in PRESETS[preset]} == PRESETS[preset]
    # an option given beside the preset wins
    run = tmp_path / "mixed"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "mnist",
            "--steps",
            "1",
            "--preset",
            "paper",
            "--tasks-per-step",
            "3",
            "--out",
            str(run),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["tasks_per_step"] == 3
