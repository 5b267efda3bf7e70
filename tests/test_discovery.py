"""Bayesian optimisation for novelty discovery."""

import json

import pytest
import torch
from click.testing import CliRunner

from pyrohvae import data
from pyrohvae.cli import main
from pyrohvae.discovery import BOX, bayes_opt, class_exemplar, cosine, load_target, random_search


def bump(X):
    """A smooth objective with its maximum 1 at (2, -3)."""
    return torch.exp(-((X - torch.tensor([2.0, -3.0], dtype=X.dtype)) ** 2).sum(-1) / 8)


def test_bo_finds_the_optimum_that_random_search_misses():
    bo = bayes_opt(bump, 2, budget=25, seed=0, n_init=6)
    rnd = random_search(bump, 2, budget=25, seed=0)
    assert len(bo.values) == len(rnd.values) == 25
    assert (bo.points.abs() <= BOX).all()
    assert bo.best[1] > 0.99 and bo.best[1] > rnd.best[1]
    assert torch.equal(bo.best_so_far, torch.cummax(bo.values, 0).values)
    assert len(bo.seconds_per_iteration) == 19


def test_warm_started_fits_end_as_well_as_full_refits():
    warm = bayes_opt(bump, 2, budget=20, seed=1, n_init=6, warm_start=True)
    full = bayes_opt(bump, 2, budget=20, seed=1, n_init=6, warm_start=False)
    assert warm.best[1] > 0.98 and full.best[1] > 0.98


def test_cosine_and_targets(tmp_path):
    a = torch.zeros(28, 28)
    a[5:10] = 1
    assert float(cosine(a.reshape(1, -1), a)) == pytest.approx(1.0)
    assert float(cosine(torch.flip(a, [0]).reshape(1, -1), a)) == pytest.approx(0.0)
    from PIL import Image

    Image.fromarray((a.numpy() * 255).astype("uint8")).resize((56, 56)).save(tmp_path / "t.png")
    loaded = load_target(tmp_path / "t.png")
    assert loaded.shape == (28, 28) and float(cosine(loaded.reshape(1, -1), a)) > 0.99
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_target(tmp_path / "bad.png")


def test_class_exemplar_is_of_the_class_and_fixed_by_the_seed(data_root):
    test = data.load("mnist", "test", data_root)
    image, i = class_exemplar(test, "3", seed=4)
    assert test.task_names[int(test.tasks[i])] == "3" and torch.equal(image, test.images[i, 0].float())
    assert class_exemplar(test, "3", seed=4)[1] == i


@pytest.mark.parametrize("mode, steps, refit_every", [("joint", 1, 1), ("iterative", 3, 20)])
def test_discover_command_writes_designs_trace_and_json(trained_run, tmp_path, mode, steps, refit_every):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "discover",
            str(trained_run("hypervae")),
            "--target-class",
            "7",
            "--mode",
            mode,
            "--iterations",
            "24",
            "--steps",
            str(steps),
            "--out",
            str(out),
            "--no-progress",
            "--refit-every",
            str(refit_every),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "discovery.json").read_text())
    assert len(summary["best_cosine"]) == steps and summary["evaluations"] == 24
    assert summary["refit_every"] == refit_every
    assert len(summary["bo_best_so_far"]) == len(summary["random_best_so_far"]) == 24
    assert summary["bo_best_so_far"][-1] == pytest.approx(max(summary["best_cosine"]))
    assert all(0 < c <= 1 for c in summary["best_cosine"]) and 0 < summary["random_search_best"] <= 1
    for png in ["designs.png", "trace.png"] + [f"best_step{t + 1}.png" for t in range(steps)]:
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png


def test_discover_refuses_a_mode_the_run_cannot_do(trained_run, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "discover",
            str(trained_run("vae")),
            "--target-class",
            "7",
            "--mode",
            "joint",
            "--iterations",
            "10",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "needs a hypervae run" in result.stderr
    result = CliRunner().invoke(main, ["discover", str(trained_run("vae")), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--target" in result.stderr
    result = CliRunner().invoke(
        main,
        [
            "discover",
            str(trained_run("vae")),
            "--target-class",
            "7",
            "--refit-every",
            "0",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "--refit-every" in result.stderr
    result = CliRunner().invoke(
        main, ["discover", str(trained_run("vae")), "--target-class", "eleven", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "no class 'eleven'" in result.stderr and "Traceback" not in result.output


def test_held_out_classes_are_not_trained_on(tmp_path, data_root):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "mnist",
            "--model",
            "vae",
            "--exclude-classes",
            "3,5",
            "--steps",
            "2",
            "--out",
            str(run),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["exclude_classes"] == ["3", "5"] and config["train_tasks"] == [
        "0",
        "1",
        "2",
        "4",
        "6",
        "7",
        "8",
        "9",
    ]
    from pyrohvae.config import RunConfig

    train = RunConfig.load(run / "config.json").load_data("train", data_root)
    assert len(train) == 60000 - 6131 - 5421 and train.num_tasks == 8
    bad = CliRunner().invoke(
        main, ["train", "--dataset", "mnist", "--exclude-classes", "x", "--out", str(tmp_path / "b")]
    )
    assert bad.exit_code == 1 and "'x' matches no task" in bad.stderr
