import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    root = Path(os.environ.get("PYROHVAE_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
    if not (root / "MNIST" / "raw").is_dir():
        raise RuntimeError(f"the tests read real data: set PYROHVAE_DATA_DIR (looked in {root})")
    return root


DATA_ROOT = _data_root()


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
            args = ["train", "--dataset", "mnist", "--model", model, "--steps", "200", "--log-every", "1",
                    "--out", str(out), "--no-progress"]
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, result.output
            runs[model] = out
        return runs[model]

    return make
