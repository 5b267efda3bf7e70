"""The typicality detector: densities of statistics fitted on normal data, saved, reused, refitted."""

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pyrohvae.cli import main
from pyrohvae.typicality import FIT_FILE, Fit, checkpoint_digest, load_fit


def _fit(run_dir, values: dict, step=7, **density) -> Fit:
    names = list(values)
    return Fit(
        names,
        [list(map(float, values[n])) for n in names],
        "synthetic",
        checkpoint_digest(run_dir),
        step,
        16,
        0,
        **density,
    )


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"parameters")
    return tmp_path


DENSITIES = [{}, {"density": "mixture"}]  # the default (nearest neighbours) and versions 2 to 5's


@pytest.mark.parametrize("density", DENSITIES)
def test_untypical_in_either_direction_scores_high(run_dir, density):
    """Too simple is as untypical as too complex: a value far below the normal ones scores as
    high as one far above; a value in the bulk scores lowest."""
    rng = np.random.default_rng(1)
    fit = _fit(run_dir, {"nll": rng.normal(100, 10, 1000), "kl_z": rng.normal(20, 2, 1000)}, **density)
    score = fit.score(
        {"nll": torch.tensor([100.0, 60.0, 140.0, 100.0]), "kl_z": torch.tensor([20.0, 20, 20, 28])}
    )
    assert score[0] < score[1] and score[0] < score[2] and score[0] < score[3]
    assert abs(score[1] - score[2]) < 0.3 * (score[1] - score[0])  # symmetric about the bulk


@pytest.mark.parametrize("density", DENSITIES)
def test_the_density_is_joint(run_dir, density):
    """Normal images whose −log p(x) follows their ink: an image with the typical −log p(x) of
    the data, and a typical ink, but not together, is untypical; per statistic it would not be."""
    rng = np.random.default_rng(2)
    ink = rng.normal(100, 30, 2000)
    fit = _fit(run_dir, {"ink": ink, "nll": ink + rng.normal(0, 3, 2000)}, **density)
    score = fit.score({"ink": torch.tensor([60.0, 60.0]), "nll": torch.tensor([60.0, 140.0])})
    lone = fit.score({"ink": torch.tensor([60.0]), "nll": torch.tensor([100.0])})  # half as far off
    assert score[1] > lone[0] > score[0]


def test_the_score_is_the_distance_to_the_kth_nearest_fit_image_in_standard_units(run_dir):
    rng = np.random.default_rng(4)
    a, b = rng.normal(5, 2, 200), rng.normal(-1, 0.5, 200)
    fit = _fit(run_dir, {"a": a, "b": b}, neighbours=7)
    x = np.array([[5.0, -1.0], [9.0, 0.0], [0.0, -3.0]])
    z = np.stack([(a - a.mean()) / a.std(), (b - b.mean()) / b.std()], 1)
    zx = (x - [a.mean(), b.mean()]) / [a.std(), b.std()]
    want = [np.sort(np.linalg.norm(z - p, axis=1))[6] for p in zx]
    got = fit.score({"a": torch.tensor(x[:, 0]), "b": torch.tensor(x[:, 1])})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)
    summary = fit.summary()
    assert summary["density"] == "knn" and summary["neighbours"] == 7 and "bic" not in summary
    assert summary["sd"]["b"] == pytest.approx(b.std(), abs=1e-4)


def test_the_normal_threshold_flags_its_share_of_new_normal_images(run_dir):
    """Each fit image is scored among the others, as a new image is among all of them: the
    threshold at rate q flags about q of new images from the same distribution, where an in-sample
    score (each image among its neighbours, itself included) flags more."""
    rng = np.random.default_rng(5)
    fit = _fit(run_dir, {"a": rng.normal(0, 1, 2000), "b": rng.gamma(2.0, 1.0, 2000)})
    z = fit._standardized[0]
    others = np.sort(np.linalg.norm(z[:50, None] - z[None], axis=2), 1)[:, 1:]  # itself left out
    np.testing.assert_allclose(fit.own_scores[:50], others[:, 9], rtol=1e-9)
    new = {"a": torch.from_numpy(rng.normal(0, 1, 20000)), "b": torch.from_numpy(rng.gamma(2.0, 1.0, 20000))}
    scores = fit.score(new).numpy()
    for rate in (0.01, 0.05, 0.2):
        assert abs((scores >= fit.threshold(rate)).mean() - rate) < 0.25 * rate + 0.005
    assert fit.summary(0.2)["normal_threshold"] == {"rate": 0.2, "threshold": fit.threshold(0.2)}
    in_sample = np.quantile(fit._density[0].kneighbors(z)[0][:, -1], 0.95)
    assert (scores >= in_sample).mean() > 0.058  # 6.4% here: 9 standard errors above 5%


@pytest.mark.parametrize("density", DENSITIES)
def test_the_gap_between_two_modes_is_untypical(run_dir, density):
    rng = np.random.default_rng(3)
    two = np.concatenate([rng.normal(-5, 1, 500), rng.normal(5, 1, 500)])
    fit = _fit(run_dir, {"a": two, "b": rng.normal(0, 1, 1000)}, **density)
    gap, mode = (fit.score({"a": torch.tensor([a]), "b": torch.tensor([0.0])})[0] for a in (0.0, 5.0))
    assert gap > 5 * mode if not density else gap > mode + 5
    if density:
        summary = fit.summary()
        assert summary["components"] == 2 and np.argmin(summary["bic"]) == 1


def test_a_density_that_is_not_one_is_refused(run_dir):
    with pytest.raises(ValueError, match="kde"):
        _fit(run_dir, {"a": [1.0, 2.0, 3.0]}, density="kde")
    with pytest.raises(ValueError, match="4 neighbours among 3"):
        _fit(run_dir, {"a": [1.0, 2.0, 3.0]}, neighbours=4).score({"a": torch.tensor([2.0])})
    with pytest.raises(ValueError, match="3 neighbours among 3"):  # a fit image has but 2 others
        _fit(run_dir, {"a": [1.0, 2.0, 3.0]}, neighbours=3).threshold(0.05)
    own = _fit(run_dir, {"a": [1.0, 2.0, 4.0]}, neighbours=2).own_scores  # the farther of the 2 others
    np.testing.assert_allclose(own / own[1], [1.5, 1.0, 1.5])  # 3, 2, 3 before standardizing


def test_a_saved_fit_is_reused_only_by_its_own_checkpoint_and_settings(run_dir):
    rng = np.random.default_rng(2)
    fit = _fit(run_dir, {"nll": rng.normal(100, 10, 60)})
    (run_dir / FIT_FILE).write_text(json.dumps(asdict(fit)))
    loaded, how = load_fit(run_dir, 7, 16, 0)
    assert how == "reused" and loaded.values == fit.values
    x = {"nll": torch.tensor([80.0, 100.0])}
    assert torch.equal(loaded.score(x), fit.score(x))  # the density is made again, the same
    assert load_fit(run_dir, 8, 16, 0) == (None, f"{FIT_FILE} belongs to another checkpoint (step 7)")
    assert load_fit(run_dir, 7, 4, 0)[1] == f"{FIT_FILE} fitted with --samples 16 --seed 0"
    (run_dir / "checkpoint.pt").write_bytes(b"parameters, trained on")  # same step, other weights
    assert load_fit(run_dir, 7, 16, 0)[0] is None


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda d: "{not json", "unreadable"),
        (lambda d: json.dumps({**d, "values": [d["values"][0][:5]]}), "damaged"),  # too few images
        (lambda d: json.dumps({**d, "values": [d["values"][0][:-1] + [1e400]]}), "damaged"),  # inf
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "names"}), "unreadable"),
        (lambda d: json.dumps({**d, "version": 1, "bandwidths": [1.0]}), "unreadable"),  # the first format
        (lambda d: json.dumps({**d, "version": 5}), "made by the detector's version 5"),
        (lambda d: json.dumps({**d, "density": "kde"}), "unreadable"),
        (lambda d: json.dumps({**d, "values": []}), "damaged"),
    ],
)
def test_a_damaged_fit_is_not_used(run_dir, damage, why):
    fit = _fit(run_dir, {"nll": np.random.default_rng(3).normal(100, 10, 60)})
    (run_dir / FIT_FILE).write_text(damage(asdict(fit)))
    loaded, how = load_fit(run_dir, 7, 16, 0)
    assert loaded is None and why in how


@pytest.mark.data
def test_the_training_latents_are_kept_for_their_own_checkpoint(trained_run, tmp_path, monkeypatch):
    """The latent means the distances measure to are made once and kept beside the fit: a later
    call reads them back (and scores as it would have with them made again); another checkpoint's
    file, or one cut short, is made again."""
    from pyrohvae import outliers, typicality
    from pyrohvae.data import TaskData
    from pyrohvae.train import load_run

    run = tmp_path / "hypervae"
    shutil.copytree(trained_run("hypervae"), run)
    program, state = load_run(run)
    full = program.config.load_data("train")
    pick = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:300]
    train = TaskData(full.images[pick], full.tasks[pick], full.task_names, full.name)
    images = full.images[:20]

    kept = typicality.latent_references(program, run, state["step"], train)
    assert set(kept) == {"z", "u"} and (run / typicality.LATENTS_FILE).is_file()
    for site in ("z", "u"):
        fresh = outliers.latent_distance(program, train, images, site)
        assert torch.equal(
            outliers.latent_distance(program, train, images, site, reference=kept[site]), fresh
        )

    made = []
    monkeypatch.setattr(typicality, "reference_latents", lambda *a, **k: made.append(a[2]) or kept[a[2]])
    again = typicality.latent_references(program, run, state["step"], train)
    assert made == [] and all(torch.equal(again[s][0], kept[s][0]) for s in kept)
    typicality.latent_references(program, run, state["step"], train, seed=1)  # other draws of the tasks
    assert made == ["z", "u"]
    (run / typicality.LATENTS_FILE).write_bytes((run / typicality.LATENTS_FILE).read_bytes()[:50])
    typicality.latent_references(program, run, state["step"], train, seed=1)
    assert made == ["z", "u"] * 2
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes() + b" ")  # other weights
    typicality.latent_references(program, run, state["step"], train, seed=1)
    assert made == ["z", "u"] * 3


@pytest.mark.data
def test_outliers_default_fits_on_normal_data_then_reuses_the_fit(trained_run, tmp_path, monkeypatch):
    from pyrohvae import typicality

    monkeypatch.setattr(typicality, "FIT_IMAGES", 1000)  # keeps the four fits below small
    run = tmp_path / "hypervae"
    shutil.copytree(trained_run("hypervae"), run)
    args = [
        "outliers",
        str(run),
        "--outliers",
        "fashion-mnist",
        "--limit",
        "100",
        "--samples",
        "4",
        "--json",
        "--no-progress",
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    row = json.loads(first.stdout)
    assert row["score"] == "typicality" and row["fit"]["how"] == "fitted (no fit yet)"
    assert row["fit"]["fit_on"] == "mnist/train (seen in training)" and row["fit"]["n"] == 1000
    statistics = {
        "recon",
        "nll",
        "complexity",
        "recon_ink",
        "ink_excess",
        "block_excess",
        "width_ratio",
        "image_width",
        "kl_u",
        "u_distance",
        "z_distance",
    }
    assert statistics <= set(row["fit"]["statistics"])
    assert (row["fit"]["density"], row["fit"]["neighbours"], row["fit"]["version"]) == ("knn", 10, 6)
    assert row["auc"] > 0.8  # garments are far from digits, even after 200 steps
    assert json.loads((run / "outliers-fashion-mnist.json").read_text()) == row
    assert (run / typicality.LATENTS_FILE).is_file()  # the distances' training latents, kept

    again = json.loads(CliRunner().invoke(main, args).stdout)
    assert again["fit"]["how"] == "reused" and again["auc"] == row["auc"]
    labels_free = json.loads(CliRunner().invoke(main, [*args, "--normal-rate", "0.1"]).stdout)
    assert labels_free["threshold"] == labels_free["fit"]["normal_threshold"]["threshold"]
    assert labels_free["threshold_rule"] == "the fit's normal images' top 0.1"
    assert labels_free["threshold"] < row["fit"]["normal_threshold"]["threshold"]  # the top 0.05's
    wrong = CliRunner().invoke(main, [*args, "--normal-rate", "0.1", "--score", "elbo"])
    assert wrong.exit_code != 0 and "--normal-rate sets the typicality fit's threshold" in wrong.output
    (run / FIT_FILE).write_text((run / FIT_FILE).read_text()[:100])  # a write cut short
    third = json.loads(CliRunner().invoke(main, args).stdout)
    assert third["fit"]["how"].startswith("fitted (typicality.json unreadable") and third["auc"] == row["auc"]

    vae = CliRunner().invoke(
        main,
        [
            "outliers",
            str(trained_run("vae")),
            "--outliers",
            "fashion-mnist",
            "--limit",
            "100",
            "--samples",
            "4",
            "--json",
            "--no-progress",
        ],
    )
    assert vae.exit_code == 0, vae.output
    assert not {"kl_u", "u_distance"} & set(json.loads(vae.stdout)["fit"]["statistics"])


@pytest.mark.data
@pytest.mark.parametrize("images", [0, 1])
def test_an_outlier_folder_of_one_image_or_none_is_refused(trained_run, tmp_path, images):
    from PIL import Image

    folder = tmp_path / "few" / "a"
    folder.mkdir(parents=True)
    for i in range(images):
        Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    result = CliRunner().invoke(
        main,
        [
            "outliers",
            str(trained_run("vae")),
            "--outliers",
            str(tmp_path / "few"),
            "--limit",
            "100",
            "--no-progress",
        ],
    )
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


@pytest.mark.data
def test_shifted_outlier_sets_keep_the_ink(data_root, trained_run):
    from pyrohvae import data
    from pyrohvae.outliers import shifted

    digits = data.load("mnist", "test", data_root)
    turned = shifted("mnist-upside-down", data_root)
    assert torch.equal(turned.images.flip(-2, -1), digits.images)
    garments = data.load("fashion-mnist", "test", data_root)
    scattered = shifted("fashion-mnist-scattered", data_root, seed=1)
    ink = garments.images.reshape(len(garments), -1).sum(1)
    assert torch.equal(scattered.images.reshape(len(garments), -1).sum(1), ink)
    assert (scattered.images != garments.images).any(dim=(1, 2, 3)).float().mean() > 0.99
    assert torch.equal(shifted("fashion-mnist-scattered", data_root, seed=1).images, scattered.images)
    result = CliRunner().invoke(
        main,
        [
            "outliers",
            str(trained_run("vae")),
            "--outliers",
            "mnist-upside-down",
            "--score",
            "elbo",
            "--limit",
            "50",
            "--samples",
            "2",
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outliers"] == "mnist-upside-down"


def test_too_few_normal_images_for_a_fit_is_refused():
    from pyrohvae.data import TaskData
    from pyrohvae.typicality import MIN_FIT_IMAGES, fit_images

    class Config:  # a run whose validation part holds a handful of images
        validation = 0.1

        def load_data(self, part, root=None):
            n = MIN_FIT_IMAGES - 1
            return TaskData(
                torch.zeros(n, 1, 28, 28), torch.zeros(n, dtype=torch.long), ["a"], f"shapes/{part}"
            )

    with pytest.raises(
        ValueError, match=f"at least {MIN_FIT_IMAGES} normal images; shapes/validation has 49"
    ):
        fit_images(Config())


def test_solid_blocks_counts_a_binary_image_and_expects_under_probabilities():
    from pyrohvae.typicality import solid_blocks

    images = torch.zeros(3, 1, 6, 6)
    images[0, 0, 1:3, 1:4] = 1  # a stroke two pixels wide and three long: two solid 2x2 blocks
    images[1, 0, 2, :] = 1  # a stroke one pixel wide: none
    images[2] = 0.5  # each of the 25 windows solid with probability 1/16
    assert solid_blocks(images).tolist() == [2.0, 0.0, 25 / 16]


def test_edges_count_an_outline_and_stroke_width_reads_a_stroke_s_width():
    from pyrohvae.typicality import edges, stroke_width

    images = torch.zeros(4, 1, 12, 12)
    images[0, 0, 5, 1:11] = 1  # a stroke one pixel wide and ten long
    images[1, 0, 4:7, 1:11] = 1  # three pixels wide, as long
    images[3] = 0.5  # every neighbouring pair differs with probability 1/2
    assert edges(images).tolist() == [22.0, 26.0, 0.0, 132.0]  # outline: 2 × 10 + 2 × width
    width = stroke_width(images)
    assert width[2] == 1.0  # an empty image
    assert width[0] == 11 / 12 and width[1] == 31 / 14  # under 1 and 3: the ends lengthen the outline


@pytest.mark.data
@pytest.mark.parametrize("model", ["vae", "hypervae"])
def test_the_drawing_statistics_see_strokes_drawn_too_thin(data_root, trained_run, model):
    """A model of MNIST draws digits whose strokes were made bold (dilated by a pixel) thinner than
    they are: the ink it draws falls short of theirs, its solid 2x2 blocks of ink still more, and
    their pixels of ink cost more nats."""
    from pyrohvae import data
    from pyrohvae.train import load_run
    from pyrohvae.typicality import drawing, reconstruction

    program, _ = load_run(trained_run(model))
    digits = data.load("mnist", "test", data_root).images[:200].float()
    bold = (torch.nn.functional.max_pool2d(digits, 3, stride=1, padding=1) > 0).float()
    plain, thick = drawing(program, digits), drawing(program, bold)
    given = drawing(program, bold, reconstruction(program, bold))  # as a caller that has it passes it
    assert given.keys() == thick.keys() and all(torch.equal(given[k], thick[k]) for k in thick)
    assert thick["ink_excess"].mean() < plain["ink_excess"].mean() - 20
    assert thick["block_excess"].mean() < plain["block_excess"].mean() - 20
    assert thick["recon_ink"].mean() > plain["recon_ink"].mean()
    assert thick["width_ratio"].mean() < plain["width_ratio"].mean() - 0.2  # drawn thinner than they are
