"""Outlier scores, the mixed set, detection metrics and the outliers command."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from pyrohvae import data
from pyrohvae.cli import main
from pyrohvae.outliers import detection_metrics, mixed_set


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
    result = CliRunner().invoke(main, ["outliers", str(run), "--outliers", "fashion-mnist", "--limit", "100",
                                       "--score", "mdl", "--json", "--plot", str(roc), "--scores", str(scores),
                                       "--no-progress"])
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


@pytest.mark.parametrize("args, words", [
    (["--outliers", "mnist"], "another dataset"),
    (["--outliers", "omniglot", "--score", "mdl"], "task latent u"),
    (["--outliers", "omniglot", "--fraction", "1.5"], "--fraction"),
    (["--outliers", "omniglot", "--fraction", "0.9"], "has 8115"),  # more outliers than Omniglot holds
])
def test_outliers_command_refuses_bad_input(trained_run, args, words):
    result = CliRunner().invoke(main, ["outliers", str(trained_run("vae")), *args])
    assert result.exit_code == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
