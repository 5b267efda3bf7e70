"""Bad input: exit code not 0, one line on stderr, no traceback, nothing written."""

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO

from pyrohvae.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, code, *words):
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for w in words:
        assert w in lines[0], lines[0]


def test_unknown_dataset(tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(invoke("train", "--dataset", "cifar", "--out", out), 2, "--dataset", "cifar")
    assert not out.exists()


def test_zero_steps(tmp_path):
    assert_one_line_error(invoke("train", "--steps", 0, "--out", tmp_path / "r"), 2, "--steps")


@pytest.mark.data
def test_z_dim_is_an_option_of_train(tmp_path):
    assert_one_line_error(invoke("train", "--z-dim", 0, "--out", tmp_path / "r"), 2, "--z-dim")
    out = tmp_path / "run"
    args = [
        "--dataset",
        "mnist",
        "--z-dim",
        3,
        "--steps",
        2,
        "--batch-size",
        5,
        "--no-progress",
        "--no-tensorboard",
    ]
    assert invoke("train", *args, "--out", out).exit_code == 0
    assert json.loads((out / "config.json").read_text())["z_dim"] == 3


def test_missing_data_root(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.MNIST, "download", lambda self: (_ for _ in ()).throw(OSError("offline")))
    out = tmp_path / "run"
    result = invoke("train", "--dataset", "mnist", "--data-dir", tmp_path / "nowhere", "--out", out)
    assert_one_line_error(result, 1, str(tmp_path / "nowhere"), "train-images-idx3-ubyte")
    assert not out.exists()


@pytest.mark.data
def test_unwritable_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke("train", "--dataset", "mnist", "--steps", 1, "--out", blocker / "run")
    assert_one_line_error(result, 1, "cannot write to --out", str(blocker / "run"))


@pytest.mark.parametrize("command", ["fewshot-curve", "inspect", "discover", "fewshot"])
def test_an_out_folder_that_cannot_be_written_is_refused_before_the_run_is_read(tmp_path, command):
    """tmp_path is no run folder: the command reads the options before the run, and stops there."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke(command, tmp_path, "--out", blocker / "o")
    assert_one_line_error(result, 2, "cannot write to", "is a file")
    later = invoke(command, tmp_path, "--out", tmp_path / "new" / "o")  # a folder it can make: past --out
    assert later.exit_code != 0 and "cannot write" not in later.output and not (tmp_path / "new").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.data
def test_cuda_without_gpu(tmp_path):
    result = invoke("train", "--dataset", "mnist", "--device", "cuda", "--out", tmp_path / "r")
    assert_one_line_error(result, 1, "CUDA")
    assert not (tmp_path / "r").exists()


@pytest.mark.data
def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path):
    run = tmp_path / "run"
    assert (
        invoke(
            "train", "--dataset", "mnist", "--model", "vae", "--steps", 2, "--out", run, "--no-progress"
        ).exit_code
        == 0
    )
    before = (run / "checkpoint.pt").read_bytes()
    assert_one_line_error(
        invoke("train", "--dataset", "mnist", "--model", "vae", "--out", run), 1, "--resume"
    )
    assert (run / "checkpoint.pt").read_bytes() == before
    assert_one_line_error(invoke("train", "--out", tmp_path / "other", "--resume"), 1, "--resume")
    clash = invoke("train", "--out", run, "--resume", "--dataset", "omniglot")
    assert_one_line_error(clash, 1, "dataset='omniglot'", "'mnist'")


def test_sample_on_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(invoke("sample", tmp_path, "--out", tmp_path / "g.png"), 1, "config.json")
    assert not (tmp_path / "g.png").exists()


def test_info_counts_add_up():
    from pyrohvae.nets import Decoder, Encoder, count_parameters

    result = invoke("info", "--model", "hypervae")
    assert result.exit_code == 0
    rows = {
        line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1].replace(",", ""))
        for line in result.stdout.splitlines()[1:-1]
    }
    total = rows.pop("total trainable")
    assert sum(rows.values()) == total
    assert f"main encoder {count_parameters(Encoder()):,}" in result.stdout
    assert f"main decoder {count_parameters(Decoder()):,}" in result.stdout


def test_root_cli_script_runs_and_reports_without_traceback():
    done = subprocess.run(
        [sys.executable, "cli.py", "train", "--dataset", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.data
def test_more_tasks_per_step_than_tasks(tmp_path):
    result = invoke("train", "--dataset", "mnist", "--tasks-per-step", 11, "--out", tmp_path / "run")
    assert_one_line_error(result, 1, "--tasks-per-step 11", "10 tasks")
    assert not (tmp_path / "run").exists()


def test_an_estimator_that_cannot_follow_the_preset_is_one_line(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--dataset", "mnist", "--elbo", "jit", "--random-context", "--out", out)
    assert_one_line_error(result, 1, "--elbo jit", "--split-context")
    assert not out.exists()
