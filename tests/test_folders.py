"""Folders of images as task families: reading any image, the checks on bad input, and the CLI on them."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pyrohvae import folders
from pyrohvae.cli import main
from pyrohvae.config import RunConfig
from pyrohvae.data import DataError

SHAPES = ("bar", "ring", "cross")


def _shape(kind: str, h: int, w: int, rng) -> np.ndarray:
    """A dark shape on a light background, off-centre by a few pixels: True where the ink is."""
    cy, cx = h // 2 + rng.integers(-2, 3), w // 2 + rng.integers(-2, 3)
    yy, xx = np.mgrid[:h, :w]
    r = min(h, w) // 3
    if kind == "bar":
        return (abs(xx - cx) < r // 4 + 1) & (abs(yy - cy) < r)
    if kind == "ring":
        d = (yy - cy) ** 2 + (xx - cx) ** 2
        return (d < r * r) & (d > (r // 2) ** 2)
    return ((abs(xx - cx) < 2) | (abs(yy - cy) < 2)) & (abs(xx - cx) < r) & (abs(yy - cy) < r)


def make_folder(root, per_task=8, modes=("RGB",), size=(40, 52), seed=0):
    """root/<shape>/<images>: dark shapes on white, in the given PIL modes, PNG and JPEG."""
    rng = np.random.default_rng(seed)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True)
        for i in range(per_task):
            ink = _shape(kind, *size, rng)
            gray = np.where(ink, 0, 255).astype(np.uint8)
            gray[size[0] // 2, i] = 128  # no two files alike, even where the shape's offset repeats
            mode = modes[i % len(modes)]
            img = Image.fromarray(gray).convert("RGB" if mode in ("RGB", "JPEG") else "L")
            if mode == "RGBA":  # ink opaque, background transparent black: only the alpha tells them apart
                img = Image.fromarray(
                    np.dstack([np.zeros_like(gray)] * 3 + [np.where(ink, 255, 0).astype(np.uint8)])
                )
            elif mode == "P":
                img = img.convert("P")
            elif mode == "I;16":
                img = Image.fromarray(gray.astype(np.uint16) * 257)
            suffix = ".jpg" if mode == "JPEG" else (".bmp" if mode == "P" else ".png")
            img.save(root / kind / f"image {i} ü{suffix}")
    return root


def bits_of(folder, part="train", **kw) -> torch.Tensor:
    return folders.scan(folder).part(
        part, kw.get("invert"), kw.get("test_fraction", 0.25), kw.get("test_seed", 0)
    )


def test_any_mode_and_size_becomes_bright_on_dark_28x28_bits(tmp_path):
    root = make_folder(tmp_path / "my data", modes=("RGB", "RGBA", "P", "I;16", "L", "JPEG"))
    data = folders.scan(root).tree("train")
    assert data.images.shape == (24, 1, 28, 28) and data.images.dtype == torch.uint8
    assert set(data.images.unique().tolist()) == {0, 1}
    assert data.task_names == sorted(SHAPES)
    # dark ink on white, detected and inverted: the ink is 1; the border (background) almost all 0
    border = torch.cat([data.images[..., 0, :], data.images[..., -1, :]], -1).float().mean()
    centre = data.images[..., 10:18, 10:18].float().mean()
    assert border < 0.02 and centre > 0.2
    for i in range(6):  # every mode (one per image, in file order) comes out alike: no mode is lost
        assert data.images[i].float().mean() > 0.05, f"image {i} came out blank"
    kept = folders.scan(root).tree("train", invert=False)  # --no-invert keeps the gray levels as they are
    assert kept.images[..., 0, :].float().mean() > 0.9


def test_sixteen_bit_and_palette_images_read_as_their_eight_bit_gray(tmp_path):
    levels = np.tile(np.linspace(0, 255, 60).round().astype(np.uint8), (30, 1))
    Image.fromarray(levels).save(tmp_path / "8.png")
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "16.png")
    Image.fromarray(levels).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(
        tmp_path / "p.png"
    )
    eight, border, _ = folders.read_image(tmp_path / "8.png")
    assert eight.shape == (28, 28) and 100 < border < 155
    assert np.array_equal(folders.read_image(tmp_path / "16.png")[0], eight)
    assert np.abs(folders.read_image(tmp_path / "p.png")[0].astype(int) - eight).max() <= 2


def test_bits_are_keyed_by_file_contents(tmp_path):
    root = make_folder(tmp_path / "a")
    first = folders.scan(root).tree("train")
    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    (copy / "bar" / "image 0 ü.png").rename(copy / "bar" / "renamed.png")  # now sorts last among the bars
    second = folders.scan(copy).tree("train")
    assert torch.equal(first.images[0], second.images[7])  # the same file, the same bits, whatever its name
    assert folders.scan(root).fingerprint != folders.scan(copy).fingerprint


def test_one_tree_is_split_per_task_by_test_fraction_and_seed(tmp_path):
    root = make_folder(tmp_path / "my", per_task=8)
    train, test = bits_of(root, "train"), bits_of(root, "test")
    assert (len(train), len(test)) == (18, 6)
    assert test.task_sizes().tolist() == [2, 2, 2]
    again = bits_of(root, "test")
    assert torch.equal(again.images, test.images)
    other = bits_of(root, "test", test_seed=1)
    assert not torch.equal(other.images, test.images)
    everything = {tuple(x.flatten().tolist()) for x in torch.cat([train.images, test.images])}
    assert len(everything) == 24  # the parts share no image


def test_train_and_test_trees_side_by_side(tmp_path):
    make_folder(tmp_path / "d" / "train", per_task=4)
    make_folder(tmp_path / "d" / "test", per_task=3, seed=1)
    folder = folders.scan(tmp_path / "d")
    assert len(folder.part("train", None, 0.5, 0)) == 12 and len(folder.part("test", None, 0.5, 0)) == 9
    shutil.rmtree(tmp_path / "d" / "test")
    (tmp_path / "d" / "test").touch()
    with pytest.raises(DataError, match="has train/ but no test/"):
        folders.scan(tmp_path / "d")


def test_what_is_skipped_and_what_is_ignored(tmp_path):
    root = make_folder(tmp_path / "my", per_task=3)
    (root / ".DS_Store").write_bytes(b"\0\1\2")
    (root / "ring" / ".DS_Store").write_bytes(b"\0\1\2")
    (root / "README.txt").write_text("my shapes")
    (root / "bar" / "notes.txt").write_text("bars")
    shutil.copytree(root / "ring", root / ".hidden-task")
    shutil.copytree(root / "ring", root / "cross" / ".ipynb_checkpoints")
    folder = folders.scan(root)
    assert folder.trees["train"].task_names == sorted(SHAPES)
    assert len(folder.trees["train"].files) == 9
    assert folder.skipped == 4
    assert "4 files skipped" in folder.describe()


@pytest.mark.parametrize(
    "damage,message",
    [
        ("missing", "no such folder"),
        ("empty", "no task folders"),
        ("loose", "images but no task folders"),
        ("no-images", "no images in any task folder"),
        ("one-image", "task 'bar' has 1 image"),
        ("truncated", "image 1 ü.png: not a readable image"),
        ("not-an-image", "image 2 ü.png: not a readable image"),
        ("case", "tasks 'Ring' and 'ring' differ only by case"),
    ],
)
def test_bad_folders_are_one_clear_error_naming_the_culprit(tmp_path, damage, message):
    root = tmp_path / "data"
    if damage == "empty":
        root.mkdir()
    elif damage == "loose":
        root.mkdir()
        Image.new("L", (28, 28)).save(root / "a.png")
    elif damage != "missing":
        make_folder(root, per_task=3)
    if damage == "no-images":
        for png in root.rglob("*.png"):
            png.rename(png.with_suffix(".txt"))
    elif damage == "one-image":
        for png in list((root / "bar").iterdir())[1:]:
            png.unlink()
    elif damage == "truncated":
        blob = (root / "cross" / "image 1 ü.png").read_bytes()
        (root / "cross" / "image 1 ü.png").write_bytes(blob[: len(blob) // 2])
    elif damage == "not-an-image":
        (root / "cross" / "image 2 ü.png").write_text("not a picture")
    elif damage == "case":
        shutil.copytree(root / "ring", root / "Ring")
    with pytest.raises(DataError, match=message):
        folders.scan(root)


def cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def test_train_evaluate_sample_and_outliers_on_a_folder(tmp_path):
    root = make_folder(tmp_path / "my shapes ü", per_task=12)
    run = tmp_path / "run"
    result = cli(
        "train",
        "--dataset",
        root,
        "--steps",
        20,
        "--batch-size",
        10,
        "--tasks-per-step",
        2,
        "--out",
        run,
        "--no-progress",
    )
    assert "3 tasks, 36 images, 20% of each task's held out as the test part" in result.output
    assert "inverted (detected" in result.output
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == str(root) and config["train_tasks"] == sorted(SHAPES)
    assert config["data_fingerprint"] == folders.scan(root).fingerprint
    assert RunConfig.load(run / "config.json").load_data("test").task_sizes().tolist() == [2, 2, 2]
    result = cli("evaluate", run, "--samples", 8, "--json", "--no-progress")
    assert json.loads(result.stdout)["n"] == 6
    cli("sample", run, "--out", tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    other = make_folder(tmp_path / "outliers", per_task=4, size=(28, 28), seed=3)
    result = cli("outliers", run, "--outliers", other, "--samples", 4, "--no-progress", code=2)
    assert (
        "typicality fit needs at least 50 normal images; my shapes ü/train (seen in training) has 30"
        in (result.output)
        and not (run / "outliers-outliers.json").exists()
    )  # too few images for the default
    result = cli(
        "outliers", run, "--outliers", other, "--score", "elbo", "--samples", 4, "--json", "--no-progress"
    )
    assert json.loads(result.stdout)["n_outliers"] >= 1 and (run / "outliers-outliers-elbo.json").exists()

    # the folder changes: every later command says so in one line, and writes nothing
    (root / "bar" / "image 0 ü.png").unlink()
    (run / "eval.json").unlink()
    result = cli("evaluate", run, "--no-progress", code=1)
    assert "its images changed since the run was trained" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (run / "eval.json").exists()


def test_a_run_weighs_kl_u_by_its_minibatch_s_share_of_the_task(tmp_path):
    """`--kl-u-scale task` trains end to end: `train` gives the program its tasks' sizes (10 training
    images each, minibatches of 5: KL(u) at half its weight), so the first step's loss is not the one
    of the same draws with KL(u) once per minibatch."""
    root = make_folder(tmp_path / "shapes", per_task=12)
    first = {}
    for scale in ("minibatch", "task"):
        run = tmp_path / scale
        common = ["--steps", 2, "--batch-size", 5, "--tasks-per-step", 2, "--log-every", 1, "--out", run]
        cli("train", "--dataset", root, "--kl-u-scale", scale, *common, "--no-progress")
        first[scale] = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["task"]["loss"] != pytest.approx(first["minibatch"]["loss"], rel=1e-6)


def test_train_refuses_a_bad_folder_before_writing_anything(tmp_path):
    root = make_folder(tmp_path / "data", per_task=3)
    (root / "cross" / "image 2 ü.png").write_bytes(b"\x89PNG broken")
    result = cli("train", "--dataset", root, "--steps", 5, "--out", tmp_path / "run", code=1)
    assert result.output.startswith("Error: ") and "image 2 ü.png: not a readable image" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    result = cli("train", "--dataset", tmp_path / "nowhere", "--steps", 5, code=2)
    assert "neither one of mnist, fashion-mnist, omniglot nor a folder" in result.output


def test_rotate_tasks_turns_the_training_part_alone(tmp_path):
    folder = make_folder(tmp_path / "shapes")
    options = {"dataset": str(folder), "validation": 0.25, "exclude_classes": ["ring"]}
    plain, turned = RunConfig(**options), RunConfig(**options, rotate_tasks=True)
    train, kept = turned.load_data("train"), plain.load_data("train")
    turns = ("", " turned 90", " turned 180", " turned 270")
    assert kept.task_names == ["bar", "cross"]
    assert train.task_names == [name + turn for turn in turns for name in kept.task_names]
    for k in range(4):
        assert torch.equal(train.images[train.tasks // 2 == k], kept.images.rot90(k, (-2, -1)))
    for part in ("validation", "held-out", "test"):
        assert torch.equal(turned.load_data(part).images, plain.load_data(part).images)
