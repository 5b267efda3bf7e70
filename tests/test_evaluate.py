"""Importance-sampled log-likelihood and the density protocol."""

import json

import pyro
import pytest
import torch
from click.testing import CliRunner

from pyrohvae import data
from pyrohvae.cli import main
from pyrohvae.evaluate import evaluate
from pyrohvae.importance import importance_scores, psis_khat, reference_log_likelihood
from pyrohvae.train import load_run


@pytest.fixture(scope="module")
def mnist_test(data_root):
    return data.load("mnist", "test", data_root)


def test_vectorized_path_matches_pyro_importance(trained_run, mnist_test):
    """On data where the weights have a finite variance (PSIS k̂ < 0.5), the two paths agree within
    Monte Carlo error: one `pyro.infer.Importance` run against the spread of eight vectorized ones."""
    program, _ = load_run(trained_run("hypervae"))
    x = mnist_test.images[:12].float()
    pyro.set_rng_seed(0)
    task_model = program.conditioned(x[:1].unsqueeze(0))
    model, guide = task_model.model, task_model.guide
    datum = [x[i].reshape(1, 1, 1, 28, 28) for i in range(12)]
    good = [i for i in range(12) if psis_khat(model, guide, datum[i], 512) < 0.5][:3]
    assert len(good) >= 2, "too few data with a well-behaved proposal to compare on"
    batch = x[good].unsqueeze(0)
    runs = torch.stack([importance_scores(model, guide, batch, 512)["log_p"][0] for _ in range(8)])
    for j, i in enumerate(good):
        reference = reference_log_likelihood(model, guide, datum[i], 512)
        spread = runs[:, j].std()
        assert abs(reference - runs[:, j].mean()) < 4 * spread * (1 + 1 / 8) ** 0.5 + 0.05, (
            i,
            reference,
            runs[:, j].tolist(),
        )


def test_chunking_over_particles_changes_nothing(trained_run, mnist_test):
    program, _ = load_run(trained_run("vae"))
    x = mnist_test.images[:6].float().unsqueeze(0)
    pyro.set_rng_seed(1)
    whole = importance_scores(program.model, program.guide, x, 40, max_images=10_000)
    pyro.set_rng_seed(1)
    # chunks of 8 particles: torch draws normals in blocks of 16, so the same stream results
    chunked = importance_scores(program.model, program.guide, x, 40, max_images=6 * 8)
    for key in ("log_p", "recon", "kl_z"):
        torch.testing.assert_close(whole[key], chunked[key], rtol=1e-5, atol=1e-4)


def test_importance_bound_is_tighter_than_the_elbo(trained_run, mnist_test):
    program, _ = load_run(trained_run("hypervae"))
    scores = evaluate(program, mnist_test, samples=64, limit=40, progress=False)
    torch.testing.assert_close(scores.nelbo, scores.recon + scores.kl_z)
    assert (scores.kl_z > 0).all()
    assert scores.nll.mean() < scores.nelbo.mean() - 0.5
    assert len(scores.nll) == 40 and sorted(scores.index.tolist()) == sorted(set(scores.index.tolist()))


def test_task_mode_draws_one_theta_per_task_and_datum_mode_one_per_datum(trained_run, mnist_test):
    program, _ = load_run(trained_run("hypervae"))
    by_task = evaluate(program, mnist_test, samples=8, limit=30, chunk=2, progress=False)
    assert len(by_task.kl_u) == 10  # one d_t per task, however the task is chunked
    again = evaluate(program, mnist_test, samples=8, limit=30, chunk=100, progress=False)
    torch.testing.assert_close(by_task.kl_u, again.kl_u)
    by_datum = evaluate(program, mnist_test, samples=8, limit=30, mode="datum", progress=False)
    assert len(by_datum.kl_u) == 30


@pytest.mark.parametrize("model", ["vae", "hypervae", "metavae"])
def test_evaluate_command_writes_eval_json(trained_run, model):
    run = trained_run(model)
    result = CliRunner().invoke(
        main, ["evaluate", str(run), "--limit", "20", "--samples", "16", "--json", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = json.loads((run / "eval.json").read_text())
    assert printed == written
    for key in ("nelbo", "recon", "nll", "nll_stderr", "kl_z", "kl_u", "samples", "n"):
        assert key in written
    assert written["n"] == 20 and written["samples"] == 16
    assert (written["kl_u"] is None) == (model != "hypervae")
    assert written["nll"] < written["nelbo"]


def test_metavae_steps_move_only_the_decoders_of_their_tasks(trained_run, mnist_test):
    from pyrohvae.trainer import Trainer

    program, _ = load_run(trained_run("metavae"))
    program.train()
    before = [d.fc2.weight.detach().clone() for d in program.decoders]
    trainer = Trainer(program)
    x = mnist_test.images[mnist_test.tasks == 3][:20].float().reshape(1, 20, 1, 28, 28)
    for _ in range(2):
        trainer.update(x, torch.tensor([3]))
    moved = [not torch.equal(b, d.fc2.weight) for b, d in zip(before, program.decoders)]
    assert moved == [t == 3 for t in range(10)]
    assert program.choices("3") == [3] and program.choices("an unseen task") == list(range(10))
