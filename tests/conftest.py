import os
from pathlib import Path

import pyro
import pytest
import torch

from pyrohvae.config import RunConfig
from pyrohvae.data import TaskData
from pyrohvae.program import build

REPO = Path(__file__).resolve().parents[1]


# Tests that read a dataset are marked `data` (here, by the fixtures they use, or by hand); the
# others run without one: `pytest -m "not data"`.
DATA_ROOT = Path(os.environ.get("PYROHVAE_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
HAS_DATA = (DATA_ROOT / "MNIST" / "raw").is_dir()
DATA_FIXTURES = {"data_root", "trained_run"}
# The models whose p(z) reads the shots, as the tests that score them take them: --z-prior, then
# --shot-features, --shot-template, --shot-attention (heads), --shot-attention-encoder,
# --shot-attention-dim, --shot-attention-window, --shot-attention-pixels and --warp-grid.
SHOTS_MODELS = (
    "z_prior, features, template, attention, in_encoder, width, window, pixels, grid",
    [
        ("shots", False, "none", 0, False, 32, 0, False, 0),
        ("shots-k", False, "none", 0, False, 32, 0, False, 0),
        ("shots", True, "none", 0, False, 32, 0, False, 0),
        ("shots-k", False, "matched", 0, False, 32, 0, False, 0),
        ("shots", False, "mean", 0, False, 32, 0, False, 0),
        ("shots-k", False, "deep", 0, False, 32, 0, False, 0),
        ("shots-g", False, "none", 0, False, 32, 0, False, 0),
        ("shots-k", False, "none", 1, False, 32, 0, False, 0),
        ("shots-g", False, "none", 4, False, 32, 0, False, 0),
        ("shots-k", False, "none", 2, True, 16, 0, False, 0),
        ("shots-k", False, "none", 1, False, 64, 0, False, 0),
        ("shots-k", False, "none", 1, False, 32, 5, False, 0),
        ("shots-g", False, "none", 4, True, 16, 27, False, 0),
        ("shots-k", False, "none", 1, False, 32, 3, True, 0),
        ("shots-k", False, "address", 0, False, 32, 0, False, 0),
        ("shots", True, "deep-address", 0, False, 32, 0, False, 0),
        ("shots-k", False, "warp-address", 1, False, 32, 0, False, 0),
        ("shots-k", False, "warp-address", 0, False, 32, 0, False, 3),
        ("shots-g", False, "warp-address", 0, False, 32, 0, False, 3),
    ],
)


def shots_options(z_prior, features, template, attention, in_encoder, width, window, pixels, grid) -> dict:
    """A case of SHOTS_MODELS as RunConfig's fields, with the split context every such model takes."""
    return {
        "z_prior": z_prior,
        "split_context": True,
        "shot_features": features,
        "shot_template": template,
        "shot_attention": attention,
        "shot_attention_encoder": in_encoder,
        "shot_attention_dim": width,
        "shot_attention_window": window,
        "shot_attention_pixels": pixels,
        "warp_grid": grid,
    }


@pytest.hookimpl(tryfirst=True)  # before -m selects by the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


def pytest_collection_finish(session):
    """A run that selected tests marked `data` without the data stops here, not as a skip that a
    misplaced data folder would make look like a pass."""
    if not HAS_DATA and any(item.get_closest_marker("data") for item in session.items):
        pytest.exit(
            f"the tests marked data read real data: set PYROHVAE_DATA_DIR (looked in {DATA_ROOT}), "
            f"or run the others: pytest -m 'not data'",
            returncode=4,
        )


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Processed datasets are cached in a folder of this test session, not the user's."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["PYROHVAE_DATA_DIR"] = str(DATA_ROOT)
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def data_root():
    return DATA_ROOT


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """trained_run(model): a run folder of `model` trained 200 steps on real MNIST, made once."""
    from click.testing import CliRunner

    from pyrohvae.cli import main

    runs = {}

    def make(model: str) -> Path:
        if model not in runs:
            out = tmp_path_factory.mktemp("runs") / model
            args = [
                "train",
                "--dataset",
                "mnist",
                "--model",
                model,
                "--steps",
                "200",
                "--log-every",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, result.output
            runs[model] = out
        return runs[model]

    return make


def program_of(**options):
    """An untrained HyperVAE of `options`, the same weights every call."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    return build(RunConfig(dataset="mnist", model="hypervae", **options)).eval()


def task_data(sizes, seed=0):
    """Random binary images, `sizes[t]` of task t."""
    g = torch.Generator().manual_seed(seed)
    tasks = torch.cat([torch.full((n,), t) for t, n in enumerate(sizes)])
    images = (torch.rand(len(tasks), 1, 28, 28, generator=g) < 0.2).to(torch.uint8)
    return TaskData(images, tasks, [f"task{t}" for t in range(len(sizes))], "synthetic")
