"""End to end on real MNIST: training lowers the loss, runs resume exactly, samples draw."""

import json

import pytest
import torch
from click.testing import CliRunner

from pyrohvae import checkpoint
from pyrohvae.cli import main

pytestmark = pytest.mark.data  # every test here trains on real MNIST


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + str(result.exception)
    return result


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def params(run):
    return checkpoint.load(run / "checkpoint.pt")["program"]


@pytest.fixture(params=["hypervae", "vae", "metavae"])
def trained(request, trained_run):
    return trained_run(request.param)


def test_loss_falls_over_200_steps(trained):
    losses = [m["loss"] for m in metrics(trained)]
    assert [m["step"] for m in metrics(trained)] == list(range(1, 201))
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    # MetaVAE trains one decoder per class: each sees a tenth of the steps and falls slower.
    assert last < first - (50 if trained.name == "metavae" else 100), (first, last)


def test_run_folder_holds_config_checkpoint_metrics(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["dataset"] == "mnist" and config["steps"] == 200
    state = checkpoint.load(trained / "checkpoint.pt")
    assert state["step"] == 200
    assert {"torch", "python", "numpy"} <= set(state["rng"])
    assert state["optim"] and state["batches"] is not None
    assert not list(trained.glob(".*tmp")), "no temporary file is left behind"


def test_sample_grid_has_a_row_per_task_and_prior_rows(trained, tmp_path):
    out = tmp_path / "grid.png"
    result = run_cli("sample", trained, "--out", out, "--columns", 6, "--prior-rows", 3)
    rows = {"hypervae": 13, "vae": 3, "metavae": 10}[trained.name]
    assert f"({rows} rows x 6 samples)" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_task_rows_come_from_different_models(trained_run, data_root):
    from pyrohvae.samples import sample_rows
    from pyrohvae.train import load_run

    program, _ = load_run(trained_run("hypervae"))
    test = program.config.load_data("test", data_root)
    means, labels, draws = sample_rows(program, test, columns=4, prior_rows=2)
    assert means.shape == (12, 4, 1, 28, 28) and labels[0] == "0" and draws.shape == (10, 1, 28, 28)
    assert not torch.allclose(means[0], means[1], atol=1e-3)


def test_a_seed_draws_the_same_grid_every_time_and_leaves_the_global_generators(trained_run, data_root):
    from pyrohvae.samples import sample_rows
    from pyrohvae.train import load_run

    program, _ = load_run(trained_run("hypervae"))
    test = program.config.load_data("test", data_root)
    state = torch.get_rng_state()
    first, second, other = (sample_rows(program, test, columns=4, prior_rows=2, seed=s)[0] for s in (3, 3, 4))
    assert torch.equal(first, second) and not torch.equal(first[-2:], other[-2:])  # the prior's rows too
    assert torch.equal(torch.get_rng_state(), state)


def test_resume_ends_at_the_parameters_of_an_uninterrupted_run(tmp_path):
    common = [
        "--dataset",
        "mnist",
        "--model",
        "hypervae",
        "--tasks-per-step",
        2,
        "--seed",
        3,
        "--lr-half-life",
        10,
        "--log-every",
        1,
        "--no-progress",
    ]
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_cli("train", *common, "--steps", 30, "--out", whole)
    run_cli("train", *common, "--steps", 12, "--checkpoint-every", 5, "--out", split)
    result = run_cli("train", "--out", split, "--resume", "--steps", 30, "--log-every", 1, "--no-progress")
    assert "steps 13-30" in result.output
    a, b = params(whole), params(split)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(whole) == [dict(m, seconds=w["seconds"]) for m, w in zip(metrics(split), metrics(whole))]


def test_lr_half_life_sets_the_step_size(tmp_path):
    """Adam's first update moves a parameter by about its learning rate (g / |g|), so with a
    half-life of one step the first move is half that of the constant learning rate."""
    import pyro

    from pyrohvae.config import RunConfig
    from pyrohvae.program import build

    pyro.set_rng_seed(0)  # as train() does before building the networks
    start = build(RunConfig(dataset="mnist", model="vae")).state_dict()
    moves = {}
    for half_life in (0, 1):
        run = tmp_path / f"half-life-{half_life}"
        run_cli(
            "train",
            "--dataset",
            "mnist",
            "--model",
            "vae",
            "--steps",
            1,
            "--lr",
            1e-3,
            "--lr-half-life",
            half_life,
            "--out",
            run,
            "--no-progress",
        )
        after = params(run)
        moves[half_life] = torch.cat([(after[k] - start[k]).abs().flatten() for k in start]).median()
    assert moves[0] == pytest.approx(1e-3, rel=0.05)
    assert moves[1] / moves[0] == pytest.approx(0.5, rel=0.05)


def test_train_trains_when_called_under_no_grad(tmp_path):
    """Under torch.no_grad() Trace_ELBO skips its backward pass silently; train() must not."""
    import pyro

    from pyrohvae.config import RunConfig
    from pyrohvae.program import build
    from pyrohvae.train import train

    pyro.set_rng_seed(0)  # as train() does before building the networks
    start = build(RunConfig(dataset="mnist", model="vae")).state_dict()
    with torch.no_grad():
        train(RunConfig(dataset="mnist", model="vae", steps=2, lr=1e-3), tmp_path / "run", progress=False)
    after = params(tmp_path / "run")
    moves = torch.cat([(after[k] - start[k]).abs().flatten() for k in start])
    assert moves.median() > 1e-4  # two Adam steps of lr 1e-3 move a parameter by about 2e-3


def test_kept_checkpoints_are_scored_on_the_validation_part(tmp_path):
    run = tmp_path / "run"
    run_cli(
        "train",
        "--dataset",
        "mnist",
        "--model",
        "vae",
        "--steps",
        4,
        "--keep-every",
        2,
        "--validation",
        0.1,
        "--out",
        run,
        "--no-progress",
    )
    assert sorted(p.name for p in run.glob("checkpoint*.pt")) == [
        "checkpoint-step2.pt",
        "checkpoint-step4.pt",
        "checkpoint.pt",
    ]
    step2, step4 = checkpoint.load(run / "checkpoint-step2.pt"), checkpoint.load(run / "checkpoint-step4.pt")
    assert (step2["step"], step4["step"]) == (2, 4)
    assert all(torch.equal(step4["program"][k], params(run)[k]) for k in step4["program"])
    assert not all(torch.equal(step2["program"][k], step4["program"][k]) for k in step4["program"])
    result = run_cli(
        "evaluate",
        run,
        "--split",
        "validation",
        "--checkpoint",
        "checkpoint-step2.pt",
        "--samples",
        2,
        "--limit",
        20,
        "--json",
        "--no-progress",
    )
    scored = json.loads(result.output.strip().splitlines()[-1])
    assert (scored["split"], scored["step"], scored["n"]) == ("validation", 2, 20)
    assert json.loads((run / "eval-validation-task-step2.json").read_text())["nelbo"] == scored["nelbo"]
    missing = CliRunner().invoke(main, ["evaluate", str(run), "--checkpoint", "checkpoint-step3.pt"])
    assert missing.exit_code == 1 and "checkpoint-step2.pt, checkpoint-step4.pt" in missing.output
    # killed after the checkpoint of step 4 was written but before it was kept: resuming keeps it
    kept4 = (run / "checkpoint-step4.pt").read_bytes()
    (run / "checkpoint-step4.pt").unlink()
    run_cli("train", "--out", run, "--resume", "--steps", 6, "--keep-every", 2, "--no-progress")
    assert (run / "checkpoint-step4.pt").read_bytes() == kept4 and (run / "checkpoint-step6.pt").exists()


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    run_cli(
        "train",
        "--dataset",
        "mnist",
        "--model",
        "vae",
        "--steps",
        10,
        "--log-every",
        1,
        "--out",
        run,
        "--no-progress",
    )
    # as if killed after logging steps 11-13 past the checkpoint at step 10
    with open(run / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps({"step": step, "loss": 0.0}) + "\n" for step in (11, 12, 13))
    run_cli("train", "--out", run, "--resume", "--steps", 15, "--log-every", 1, "--no-progress")
    steps = [m["step"] for m in metrics(run)]
    assert steps == list(range(1, 16))


def test_a_checkpoint_of_format_1_resumes_to_the_parameters_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """Format 1 (before the trainer) kept Adam's moments per Pyro param-store name ("theta$$$...",
    "guide$$$...") and no schedule; resumed, it must end where format 2 and a run without a stop
    end, bit for bit: every moment reached its parameter, and the learning rate its step."""
    from pyrohvae.config import RunConfig
    from pyrohvae.program import build

    common = [
        "--dataset",
        "mnist",
        "--model",
        "hypervae",
        "--tasks-per-step",
        2,
        "--seed",
        5,
        "--lr-half-life",
        4,
        "--no-progress",
    ]
    whole, old = tmp_path / "whole", tmp_path / "old"
    run_cli("train", *common, "--steps", 8, "--out", whole)
    run_cli("train", *common, "--steps", 4, "--out", old)
    state = checkpoint.load(old / "checkpoint.pt")
    names = [n for n, _ in build(RunConfig.from_dict(state["config"])).named_parameters()]
    stores = {"theta.": "theta$$$", "inference.": "guide$$$", "prior.": "prior$$$"}
    optim = {}
    for i, name in enumerate(names):
        prefix = next(p for p in stores if name.startswith(p))
        moments = state["optim"]["state"].get(i)
        optim[stores[prefix] + name[len(prefix) :]] = {
            "state": {0: moments} if moments else {},
            "param_groups": [{"lr": 3e-4, "params": [0]}],
        }
    del state["scheduler"]
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 1)
    checkpoint.save(old / "checkpoint.pt", {**state, "optim": optim})
    monkeypatch.undo()
    assert (old / "checkpoint.pt").read_bytes().startswith(b"PYROHVAE-CHECKPOINT 1 ")
    run_cli("train", "--out", old, "--resume", "--steps", 8, "--no-progress")
    a, b = params(whole), params(old)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_the_guides_old_module_name_resumes_exactly(tmp_path):
    """Runs saved before the guide's networks were `inference` name them `guide_nets`; such a run
    resumes to the parameters of an uninterrupted one, bit for bit."""
    common = ["--dataset", "mnist", "--tasks-per-step", 2, "--seed", 3, "--no-progress"]
    whole, old = tmp_path / "whole", tmp_path / "old"
    run_cli("train", *common, "--steps", 6, "--out", whole)
    run_cli("train", *common, "--steps", 3, "--out", old)
    state = checkpoint.load(old / "checkpoint.pt")
    program = {k.replace("inference.", "guide_nets.", 1): v for k, v in state["program"].items()}
    assert sum(k.startswith("guide_nets.") for k in program) > 4
    checkpoint.save(old / "checkpoint.pt", {**state, "program": program})
    run_cli("train", "--out", old, "--resume", "--steps", 6, "--no-progress")
    a, b = params(whole), params(old)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("preset", ["paper", "task-specific"])
def test_a_run_trained_with_the_jit_estimator_resumes_exactly(tmp_path, preset):
    """Under `--elbo jit` too, and with the default preset's KL(z) anneal (weights the graph reads)."""
    common = ["--dataset", "mnist", "--preset", preset, "--elbo", "jit", "--log-every", 1, "--no-progress"]
    if preset != "paper":
        common += ["--kl-z-anneal", 6, "--batch-size", 10]
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_cli("train", *common, "--steps", 8, "--out", whole)
    run_cli("train", *common, "--steps", 4, "--out", split)
    run_cli(
        "train", "--out", split, "--resume", "--steps", 8, "--log-every", 1, "--no-progress"
    )  # compiles at 5
    assert json.loads((whole / "config.json").read_text())["elbo"] == "jit"
    a, b = params(whole), params(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["loss"] for m in metrics(whole)] == [m["loss"] for m in metrics(split)]
    assert metrics(whole)[-1]["loss"] < metrics(whole)[0]["loss"]
