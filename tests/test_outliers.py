"""Outlier scores, the mixed set, detection metrics and the outliers command."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pyrohvae import data
from pyrohvae.cli import main
from pyrohvae.config import ConfigError, RunConfig
from pyrohvae.outliers import (
    COMPRESSORS,
    compressed_nats,
    detection_metrics,
    min_mahalanobis,
    mixed_set,
    outlier_scores,
    roc_panels,
)
from pyrohvae.train import load_run, train


def test_metrics_on_separable_and_reversed_scores():
    labels = np.array([0] * 80 + [1] * 20)
    perfect = detection_metrics(labels * 10.0 + np.linspace(0, 1, 100), labels)
    assert perfect["auc"] == 1.0 and perfect["fpr"] == 0.0 and perfect["fnr"] == 0.0
    assert detection_metrics(-labels.astype(float), labels)["auc"] == 0.0


def test_equal_error_threshold_and_flag_rate():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 4000 + [1] * 1000)
    scores = rng.normal(labels * 1.5, 1.0)
    eer = detection_metrics(scores, labels)
    assert abs(eer["fpr"] - eer["fnr"]) < 0.01 and 0.2 < eer["fpr"] < 0.3
    assert 0.8 < eer["auc"] < 0.9  # Φ(1.5 / √2) = 0.856
    top = detection_metrics(scores, labels, flag_rate=0.2)
    assert abs((scores >= top["threshold"]).mean() - 0.2) < 0.001
    assert top["threshold_rule"] == "flag top 0.2"


def test_roc_panels_in_rows_of_the_columns_asked(tmp_path):
    from matplotlib.image import imread

    curve = {"AUC 1": {"auc": 1.0, "roc": {"fpr": [0.0, 0.0, 1.0], "tpr": [0.0, 1.0, 1.0]}}}
    shapes = {}
    for n, columns in ((3, None), (4, 3), (6, 3)):
        path = tmp_path / f"roc-{n}-{columns}.png"
        roc_panels({f"pair {i}": curve for i in range(n)}, path, columns=columns)
        shapes[n, columns] = imread(path).shape[:2]
    (h1, w1), (h2, w2), (h3, w3) = shapes.values()
    assert abs(w2 - w1) < 0.05 * w1 and abs(w3 - w1) < 0.05 * w1  # three panels across each time
    assert 1.8 < h2 / h1 < 2.2 and abs(h3 - h2) < 0.05 * h2  # two rows for four panels, as for six


def test_mixed_set_has_the_asked_fraction_of_outliers(data_root):
    normal, other = data.load("mnist", "test", data_root), data.load("omniglot", "test", data_root)
    mixed = mixed_set(normal, other, 0.2, seed=1)
    assert len(mixed.data) == 12500 and int(mixed.labels.sum()) == 2500
    assert (mixed.data.images[10000:] == other.images[mixed.source_index[10000:]]).all()
    with pytest.raises(ValueError, match="outliers"):
        mixed_set(normal, other, 0.9)


def test_outliers_command(trained_run, tmp_path):
    run = trained_run("hypervae")
    roc, scores = tmp_path / "roc.png", tmp_path / "scores.csv"
    result = CliRunner().invoke(
        main,
        [
            "outliers",
            str(run),
            "--outliers",
            "fashion-mnist",
            "--limit",
            "100",
            "--score",
            "mdl",
            "--json",
            "--plot",
            str(roc),
            "--scores",
            str(scores),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads((run / "outliers-fashion-mnist-mdl.json").read_text())
    assert json.loads(result.stdout) == written
    for key in ("auc", "fpr", "fnr", "threshold", "n_normal", "n_outliers", "score"):
        assert key in written
    assert (written["n_normal"], written["n_outliers"], written["score"]) == (100, 25, "mdl")
    assert written["auc"] > 0.8  # garments are far from digits, even after 200 steps
    rows = list(csv.DictReader(scores.open()))
    assert len(rows) == 125 and sum(int(r["outlier"]) for r in rows) == 25
    assert {r["dataset"] for r in rows} == {"mnist", "fashion-mnist"}
    assert roc.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--outliers", "mnist"], "another dataset"),
        (["--outliers", "omniglot", "--score", "mdl"], "task latent u"),
        (["--outliers", "omniglot", "--fraction", "1.5"], "--fraction"),
        (["--outliers", "omniglot", "--fraction", "0.9"], "has 8115"),  # more outliers than Omniglot holds
    ],
)
def test_outliers_command_refuses_bad_input(trained_run, args, words):
    result = CliRunner().invoke(main, ["outliers", str(trained_run("vae")), *args])
    assert result.exit_code == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_compressed_length_grows_with_what_there_is_to_code():
    blank = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    stroke = blank.clone()
    stroke[0, 0, 5:23, 13:15] = 1
    noise = (torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.5).to(torch.uint8)
    for compressor in COMPRESSORS:
        nats = compressed_nats(torch.cat([blank, stroke, noise]), compressor)
        assert nats[0] < nats[1] < nats[2], compressor
        assert nats[2] - nats[0] > 0.5 * 784 * math.log(2)  # noise costs about a bit per pixel
        size = nats / (8 * math.log(2))
        assert torch.allclose(size, size.round(), atol=1e-9)  # whole bytes
    with pytest.raises(ValueError, match="unknown compressor"):
        compressed_nats(blank, "gzip")


def test_complexity_is_the_likelihood_less_the_compressed_length(trained_run, data_root):
    program, _ = load_run(trained_run("vae"))
    normal = data.load("mnist", "test", data_root).subset(torch.arange(40))
    mixed = mixed_set(normal, data.load("omniglot", "test", data_root), 0.2, seed=0)
    scores = outlier_scores(program, mixed, samples=4, progress=False)
    assert {"elbo", "kl", "complexity", "complexity-zlib"} <= set(scores) and "ratio" not in scores
    length = compressed_nats(mixed.data.images).float()
    nll = scores["complexity"] + length
    assert (
        (scores["elbo"] - nll) > -1.0
    ).float().mean() > 0.9  # −ELBO ≥ −log p(x), up to the estimate's noise
    torch.testing.assert_close(
        scores["complexity-zlib"], nll - compressed_nats(mixed.data.images, "zlib").float()
    )


def test_a_background_model_sees_flipped_pixels(data_root, tmp_path):
    losses = {}
    for flip in (0.0, 0.3):
        summary = train(
            RunConfig(dataset="mnist", model="vae", steps=40, flip=flip),
            tmp_path / f"f{flip}",
            data_root=data_root,
            progress=False,
            tensorboard=False,
        )
        losses[flip] = summary.last_loss
    # A pixel flipped with probability 0.3 costs at least H(0.3) = 0.611 nats, whatever the model:
    # 784 of them at least 479 nats an image, far above what 40 steps on clean digits leave.
    assert losses[0.3] > 784 * 0.6109 - 5 and losses[0.0] < 400
    with pytest.raises(ConfigError, match="--flip 0.5"):
        RunConfig(dataset="mnist", flip=0.5)


def test_background_command_chooses_mu_on_normal_data_and_ratio_uses_it(trained_run, tmp_path):
    import shutil

    run = tmp_path / "vae"
    shutil.copytree(trained_run("vae"), run)
    result = CliRunner().invoke(
        main, ["outliers", str(run), "--outliers", "omniglot", "--score", "ratio", "--limit", "40"]
    )
    assert result.exit_code == 2 and "no background model" in result.output
    result = CliRunner().invoke(
        main,
        [
            "background",
            str(run),
            "--flip",
            "0.05",
            "--flip",
            "0.3",
            "--steps",
            "20",
            "--samples",
            "4",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    choice = json.loads((run / "background.json").read_text())
    assert [c["flip"] for c in choice["candidates"]] == [0.05, 0.3]
    assert abs(choice["ink_spearman"]) == min(abs(c["ink_spearman"]) for c in choice["candidates"])
    assert choice["chosen_on"] == "mnist/train" and choice["n"] == 1000
    assert json.loads((run / "background-flip0.3" / "config.json").read_text())["flip"] == 0.3
    for score in ("ratio", "complexity"):
        result = CliRunner().invoke(
            main,
            [
                "outliers",
                str(run),
                "--outliers",
                "omniglot",
                "--score",
                score,
                "--limit",
                "40",
                "--samples",
                "4",
                "--json",
                "--no-progress",
            ],
        )
        assert result.exit_code == 0, result.output
        row = json.loads(result.stdout)
        assert row["score"] == score and 0 <= row["auc"] <= 1
        assert (run / f"outliers-omniglot-{score}.json").exists()


@pytest.mark.parametrize("score", ["model-space", "u-distance", "regret"])
def test_training_task_scores_for_hypervae_only(trained_run, score):
    result = CliRunner().invoke(
        main,
        [
            "outliers",
            str(trained_run("hypervae")),
            "--outliers",
            "omniglot",
            "--score",
            score,
            "--limit",
            "30",
            "--samples",
            "4",
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["score"] == score
    result = CliRunner().invoke(
        main, ["outliers", str(trained_run("vae")), "--outliers", "omniglot", "--score", score]
    )
    assert result.exit_code == 2 and "needs a task latent u" in result.output


def test_z_distance_for_every_model(trained_run, data_root):
    """E[z | x] is the guide's own location: an image read twice gets the same mean, and the
    distance of a training image to its tasks is far below that of an image of noise."""
    from pyrohvae.outliers import latent_distance, latent_means

    train_data = data.load("mnist", "train", data_root).subset(torch.arange(300))
    noise = (torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.5).to(
        train_data.images.dtype
    )
    for model in ("vae", "metavae", "hypervae"):
        program, _ = load_run(trained_run(model))
        means = latent_means(program, train_data.images[:5].repeat(2, 1, 1, 1), "z")
        assert means.shape == (10, program.config.z_dim) and torch.allclose(means[:5], means[5:])
        d2 = latent_distance(program, train_data, torch.cat([train_data.images[:20], noise]), "z")
        assert d2[:20].median() < d2[20:].median(), model
    result = CliRunner().invoke(
        main,
        [
            "outliers",
            str(trained_run("vae")),
            "--outliers",
            "omniglot",
            "--score",
            "z-distance",
            "--limit",
            "30",
            "--samples",
            "2",
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["score"] == "z-distance", result.output


def test_u_distance_is_the_mahalanobis_distance_to_the_nearest_task():
    """Two tasks 4 apart along y, each spread with σ 10 along x and σ 1 along y: the pooled
    covariance makes a step along x cheap and one along y dear."""
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(20_000, 2, generator=g) * torch.tensor([10.0, 1.0])
    groups = torch.arange(20_000) % 2
    reference = spread + torch.stack([torch.zeros(20_000), 4.0 * groups], 1)  # centres (0, 0), (0, 4)
    points = torch.tensor([[0.0, 0.0], [0.0, 4.0], [10.0, 0.0], [0.0, 2.0], [0.0, -3.0]])
    d2 = min_mahalanobis(points, reference, groups + 7)  # group labels need not start at 0
    assert torch.allclose(d2, torch.tensor([0.0, 0.0, 1.0, 4.0, 9.0], dtype=d2.dtype), rtol=0.03, atol=0.01)


def test_regret_is_the_description_length_a_refit_q_u_saves():
    """`regret`: x's −ELBO + KL(u) under q(u | x) less the same under q(u | x) refined on x alone, by
    the same particles' noise: 0 for a refinement of no step, the by-hand difference for 5 steps,
    which the refinement makes positive for every image."""
    import pyro

    from pyrohvae.evaluate import seed_stream
    from pyrohvae.fewshot import refine
    from pyrohvae.importance import importance_scores
    from pyrohvae.outliers import regret
    from pyrohvae.program import build

    pyro.clear_param_store()
    torch.manual_seed(0)
    program = build(RunConfig(dataset="mnist", model="hypervae")).eval()
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(6, 1, 28, 28, generator=g) < 0.15).to(torch.uint8)
    assert torch.equal(regret(program, images, samples=4, steps=0), torch.zeros(6))
    got = regret(program, images, samples=4, seed=2, steps=5, batch=4)
    by_hand = []
    for i in (0, 4):
        x = images[i : i + 4].float().unsqueeze(1)
        seed_stream(2, i)
        loc, scale = program.inference.shots_posterior(x)
        mdl = []
        for q in ((loc, scale), refine(program, x, loc, scale, 5)):
            model = program.conditioned_on(*q)
            seed_stream(2, i)
            s = importance_scores(model.model, model.guide, x, 4)
            mdl.append((s["recon"] + s["kl_z"]).reshape(-1) + model.kl_u)
        by_hand.append(mdl[0] - mdl[1])
    torch.testing.assert_close(got, torch.cat(by_hand))
    assert (got > 0).all()
