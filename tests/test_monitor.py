"""The loss's terms, TensorBoard's curves across a resume, and the `plot` command."""

import json
import shutil

import pyro
import pytest
import torch
from click.testing import CliRunner
from pyro.infer import Trace_ELBO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pyrohvae.cli import main
from pyrohvae.config import RunConfig
from pyrohvae.monitor import loss_terms
from pyrohvae.program import build
from pyrohvae.train import resume_config, train


@pytest.mark.parametrize("model", ["hypervae", "vae", "metavae"])
def test_loss_terms_add_up_to_the_elbo_of_the_same_draw_and_leave_the_random_state_alone(model):
    config = RunConfig(dataset="mnist", model=model, preset="paper", train_tasks=[str(d) for d in range(10)])
    pyro.set_rng_seed(0)
    program = build(config)
    x, task = (torch.rand(2, 5, 1, 28, 28) < 0.3).float(), torch.tensor([1, 3])
    pyro.set_rng_seed(1)
    terms = loss_terms(program, x, task)
    after = torch.rand(3)
    pyro.set_rng_seed(1)
    loss = Trace_ELBO(max_plate_nesting=2).loss(program.model, program.guide, x, task)
    assert sum(terms.values()) == pytest.approx(loss, rel=1e-6)
    assert ("kl_u" in terms) == (model == "hypervae") and terms["recon"] > 100
    pyro.set_rng_seed(1)
    assert torch.equal(torch.rand(3), after)  # the draw for the terms came from a copy of the state


def scalars(folder, tag):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events, [e.step for e in events.Scalars(tag)]


def test_tensorboard_curves_go_on_across_a_resume_without_a_step_twice(tmp_path, data_root):
    run = tmp_path / "run"
    config = RunConfig(dataset="mnist", steps=30, batch_size=20, tasks_per_step=2)
    train(
        config, run, data_root=data_root, checkpoint_every=20, keep_every=20, progress=False, image_every=20
    )
    events, steps = scalars(run, "train/loss")
    assert steps == [10, 20, 30]
    assert set(events.Tags()["scalars"]) == {
        f"train/{k}" for k in ("loss", "loss_avg", "recon", "kl_z", "kl_u", "lr", "steps_per_second")
    }
    assert [e.step for e in events.Images("samples")] == [20, 30]
    # killed after logging step 30 but before its checkpoint: the run goes on from step 20
    shutil.copy(run / "checkpoint-step20.pt", run / "checkpoint.pt")
    train(
        resume_config(run, {"steps": 40}),
        run,
        data_root=data_root,
        resume=True,
        progress=False,
        image_every=0,
    )
    _, steps = scalars(run, "train/loss")
    assert steps == [10, 20, 30, 40]
    _, rates = scalars(run, "train/steps_per_second")
    assert rates == [10, 20, 30, 40]  # step 30's again too: from the resumed step's time, not from 0
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20, 30, 40]
    assert all(line["recon"] > 0 and line["lr"] == 3e-4 and "kl_u" in line for line in lines)


def test_plot_draws_the_curves_of_several_runs(tmp_path, data_root):
    for name in ("a", "b"):
        train(
            RunConfig(dataset="mnist", model="vae", steps=20, seed=len(name)),
            tmp_path / name,
            data_root=data_root,
            progress=False,
            tensorboard=False,
        )
    assert not list((tmp_path / "a").glob("events.out.tfevents.*"))
    result = CliRunner().invoke(
        main,
        [
            "plot",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--out",
            str(tmp_path / "curves.png"),
            "--smooth",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "loss_avg, recon, kl_z of 2 run(s)" in result.output
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    result = CliRunner().invoke(main, ["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no metrics.jsonl" in result.output and not (tmp_path / "x.png").exists()
