"""The fault matrix: killed processes, bad files, a bad environment, numerical faults."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO

from pyrohvae import checkpoint
from pyrohvae.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *words):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, (
        result.stderr
    )
    for w in words:
        assert w in lines[0], lines[0]


# --- kill and resume ---------------------------------------------------------------------------

TRAIN = [
    "--dataset",
    "mnist",
    "--model",
    "hypervae",
    "--steps",
    "24",
    "--checkpoint-every",
    "3",
    "--log-every",
    "1",
    "--seed",
    "5",
    "--no-progress",
]


def start(out, *extra, env=None):
    return subprocess.Popen(
        [sys.executable, "cli.py", "train", *TRAIN, "--out", str(out), *extra],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def logged_steps(out):
    # read once per check: a run started again empties the file or cuts it back to its checkpoint,
    # so two reads may see two versions
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def wait_for(condition, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed: {process.stderr.read().decode()}")
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.data
def test_killed_runs_resume_to_the_parameters_of_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    assert start(whole).wait() == 0

    run = tmp_path / "killed"
    # (step reached when the kill lands, or "write": while checkpoint.pt is being written)
    kills = [2, 7, "write", 13, 17, 22]
    for i, when in enumerate(kills):
        extra = ["--resume"] if (run / "checkpoint.pt").exists() else []
        env = {"PYROHVAE_TEST_PAUSE_BEFORE_RENAME": "checkpoint.pt:60"} if when == "write" else None
        process = start(run, *extra, env=env)
        if when == "write":
            wait_for(lambda: list(run.glob(".checkpoint.pt.*.tmp")), process)
        else:
            wait_for(lambda when=when: max(logged_steps(run), default=0) >= when, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if (run / "checkpoint.pt").exists():
            saved = checkpoint.load(run / "checkpoint.pt")  # always whole, always loads
            assert saved["step"] % 3 == 0 and saved["step"] <= logged_steps(run)[-1]
        if when == "write":
            assert list(run.glob(".checkpoint.pt.*.tmp")), "killed before the rename"
    finished = start(run, "--resume")
    assert finished.wait() == 0, finished.stderr.read().decode()
    assert not list(run.glob(".*.tmp"))
    assert logged_steps(run) == list(range(1, 25))  # no step lost or repeated
    a = checkpoint.load(whole / "checkpoint.pt")["program"]
    b = checkpoint.load(run / "checkpoint.pt")["program"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [json.loads(line)["loss"] for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert losses == [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.data
def test_sigint_and_sigterm_checkpoint_the_step_reached_and_the_run_resumes_exactly(tmp_path):
    whole = tmp_path / "whole"
    assert start(whole).wait() == 0

    run = tmp_path / "stopped"
    for sig, at in ((signal.SIGINT, 5), (signal.SIGTERM, 13)):
        extra = ["--resume"] if (run / "checkpoint.pt").exists() else []
        process = start(run, *extra, "--checkpoint-every", "100")  # no checkpoint but the signal's
        wait_for(lambda at=at: max(logged_steps(run), default=0) >= at, process)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        lines = stderr.decode().strip().splitlines()
        assert process.returncode == 128 + sig, stderr.decode()
        step = checkpoint.load(run / "checkpoint.pt")["step"]
        assert at <= step < 24 and step == logged_steps(run)[-1]  # the step it was on, not one of 100
        assert len(lines) == 1 and f"{sig.name} at step {step} of 24" in lines[0] and "--resume" in lines[0]
    finished = start(run, "--resume")
    assert finished.wait() == 0, finished.stderr.read().decode()
    assert logged_steps(run) == list(range(1, 25))
    a = checkpoint.load(whole / "checkpoint.pt")["program"]
    b = checkpoint.load(run / "checkpoint.pt")["program"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [json.loads(line)["loss"] for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert losses == [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.data
def test_a_run_folder_in_use_refuses_a_second_process_and_a_killed_holder_blocks_nothing(tmp_path):
    run = tmp_path / "run"
    first = start(run, "--steps", "5000")
    try:
        wait_for(lambda: (run / "checkpoint.pt").exists(), first)
        result = invoke("train", *TRAIN, "--out", run, "--resume")
        assert_one_line_error(result, str(run), f"in use by process {first.pid}")
        assert (run / ".lock").read_text() == str(first.pid)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (run / ".lock").exists()  # left behind by the killed holder, and no obstacle
    result = invoke("train", *TRAIN, "--out", run, "--resume", "--steps", 40)
    assert result.exit_code == 0, result.output
    assert logged_steps(run)[-1] == 40 and logged_steps(run) == sorted(set(logged_steps(run)))


# --- bad files ---------------------------------------------------------------------------------


@pytest.fixture
def mnist_copy(tmp_path, data_root):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "MNIST" / "raw").iterdir():
        shutil.copy(f, raw / f.name)
    return root


def test_truncated_idx_file(mnist_copy, tmp_path):
    images = mnist_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[: 16 + 784 * 100])
    result = invoke("train", "--dataset", "mnist", "--data-dir", mnist_copy, "--out", tmp_path / "run")
    assert_one_line_error(result, str(images), "truncated IDX file")
    assert not (tmp_path / "run").exists()


def test_wrong_magic_idx_file(mnist_copy, tmp_path):
    labels = mnist_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x00\x00" + labels.read_bytes()[4:])
    result = invoke("train", "--dataset", "mnist", "--data-dir", mnist_copy, "--out", tmp_path / "run")
    assert_one_line_error(result, str(labels), "wrong magic number 0x00000000")
    assert not (tmp_path / "run").exists()


def _omniglot_root(tmp_path, data_root, evaluation: bytes | None, bad_png=False):
    folder = tmp_path / "omni" / "omniglot-py"
    folder.mkdir(parents=True)
    with (
        zipfile.ZipFile(data_root / "omniglot-py" / "images_background.zip") as source,
        zipfile.ZipFile(folder / "images_background.zip", "w") as small,
    ):
        names = [n for n in source.namelist() if n.endswith(".png")][:40]
        for n in names:
            small.writestr(n, source.read(n))
        if bad_png:
            small.writestr("images_background/Latin/character01/9999_01.png", b"not a png")
    if evaluation is not None:
        (folder / "images_evaluation.zip").write_bytes(evaluation)
    return tmp_path / "omni", folder


def test_missing_omniglot_zip(tmp_path, data_root, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(tvu, "download_url", offline)
    root, folder = _omniglot_root(tmp_path, data_root, evaluation=None)
    result = invoke("train", "--dataset", "omniglot", "--data-dir", root, "--out", tmp_path / "run")
    assert_one_line_error(result, str(folder), "images_evaluation.zip")
    assert not (tmp_path / "run").exists()


def test_corrupt_omniglot_zip(tmp_path, data_root):
    root, folder = _omniglot_root(tmp_path, data_root, evaluation=b"PK\x03\x04 this is not a zip archive")
    result = invoke("train", "--dataset", "omniglot", "--data-dir", root, "--out", tmp_path / "run")
    assert_one_line_error(result, str(folder / "images_evaluation.zip"))


def test_unreadable_png_inside_the_zip(tmp_path, data_root):
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    root, folder = _omniglot_root(tmp_path, data_root, evaluation=empty.read_bytes(), bad_png=True)
    result = invoke("train", "--dataset", "omniglot", "--data-dir", root, "--out", tmp_path / "run")
    assert_one_line_error(result, str(folder / "images_background.zip"), "9999_01.png")


@pytest.fixture
def two_runs(tmp_path, data_root):
    runs = {}
    for model in ("vae", "hypervae"):
        runs[model] = tmp_path / model
        assert (
            invoke(
                "train",
                "--dataset",
                "mnist",
                "--model",
                model,
                "--steps",
                2,
                "--out",
                runs[model],
                "--no-progress",
            ).exit_code
            == 0
        )
    return runs


def test_checkpoint_of_another_model_or_dataset(two_runs):
    shutil.copy(two_runs["vae"] / "checkpoint.pt", two_runs["hypervae"] / "checkpoint.pt")
    ckpt = two_runs["hypervae"] / "checkpoint.pt"
    assert_one_line_error(
        invoke("train", "--out", two_runs["hypervae"], "--resume", "--steps", 4),
        str(ckpt),
        "another run",
        "model",
    )
    assert_one_line_error(invoke("evaluate", two_runs["hypervae"], "--limit", 5), str(ckpt), "another run")
    assert not (two_runs["hypervae"] / "eval.json").exists()
    config = json.loads((two_runs["vae"] / "config.json").read_text())
    (two_runs["vae"] / "config.json").write_text(json.dumps(dict(config, dataset="fashion-mnist")))
    assert_one_line_error(invoke("evaluate", two_runs["vae"], "--limit", 5), "another run", "dataset")


def test_checkpoint_from_a_newer_format_or_damaged(two_runs):
    ckpt = two_runs["vae"] / "checkpoint.pt"
    blob = ckpt.read_bytes()
    header, _, payload = blob.partition(b"\n")
    ckpt.write_bytes(header.replace(b" %d " % checkpoint.FORMAT_VERSION, b" 99 ") + b"\n" + payload)
    assert_one_line_error(invoke("evaluate", two_runs["vae"]), str(ckpt), "format 99", "newer")
    ckpt.write_bytes(header + b"\n" + payload[:100] + bytes([payload[100] ^ 1]) + payload[101:])
    assert_one_line_error(invoke("train", "--out", two_runs["vae"], "--resume"), str(ckpt), "checksum")
    ckpt.write_bytes(b"something else entirely")
    assert_one_line_error(invoke("sample", two_runs["vae"], "--out", two_runs["vae"] / "s.png"), str(ckpt))
    assert not (two_runs["vae"] / "s.png").exists()


# --- bad environment ---------------------------------------------------------------------------


@pytest.mark.data
def test_full_disk_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "mnist",
        "--model",
        "vae",
        "--steps",
        "3",
        "--out",
        str(run),
        "--no-progress",
    ]
    assert subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, check=False).returncode == 0
    before = run.joinpath("checkpoint.pt").read_bytes()

    def small_disk():  # writes past 1 MB fail (EFBIG) the way a full disk fails them (ENOSPC)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    done = subprocess.run(
        [sys.executable, "cli.py", "train", "--out", str(run), "--resume", "--steps", "6", "--no-progress"],
        cwd=REPO,
        check=False,
        preexec_fn=small_disk,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and str(run / "checkpoint.pt") in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert run.joinpath("checkpoint.pt").read_bytes() == before
    assert checkpoint.load(run / "checkpoint.pt")["step"] == 3
    assert not list(run.glob(".*.tmp"))


# --- numerical faults --------------------------------------------------------------------------


@pytest.fixture
def nan_at_step_5(monkeypatch):
    from pyro.infer import Trace_ELBO

    original = Trace_ELBO.differentiable_loss
    calls = {"n": 0}

    def differentiable_loss(self, model, guide, *args, **kwargs):
        calls["n"] += 1
        loss = original(self, model, guide, *args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss  # NaN gradients too

    monkeypatch.setattr(Trace_ELBO, "differentiable_loss", differentiable_loss)


@pytest.mark.data
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(nan_at_step_5, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "train",
        "--dataset",
        "mnist",
        "--model",
        "vae",
        "--steps",
        8,
        "--checkpoint-every",
        2,
        "--out",
        run,
        "--no-progress",
    )
    assert_one_line_error(result, "loss is nan at step 5", "keeps step 4")
    assert checkpoint.load(run / "checkpoint.pt")["step"] == 4


@pytest.mark.data
def test_nan_loss_skipped_and_counted(nan_at_step_5, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "train",
        "--dataset",
        "mnist",
        "--model",
        "vae",
        "--steps",
        8,
        "--log-every",
        1,
        "--on-nan",
        "skip",
        "--out",
        run,
        "--no-progress",
    )
    assert result.exit_code == 0 and "1 steps skipped" in result.stdout
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped"] for m in lines] == [0] * 4 + [1] * 4 and lines[4]["loss"] is None
    state = checkpoint.load(run / "checkpoint.pt")
    assert state["skipped"] == 1 and all(torch.isfinite(v).all() for v in state["program"].values())


# --- paths, determinism ------------------------------------------------------------------------


def test_paths_with_spaces_and_non_ascii(tmp_path, data_root):
    root = tmp_path / "données brutes"
    root.symlink_to(data_root)
    run = tmp_path / "run dir ü"
    result = invoke(
        "train",
        "--dataset",
        "mnist",
        "--model",
        "vae",
        "--steps",
        2,
        "--data-dir",
        root,
        "--out",
        run,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert invoke("sample", run, "--out", run / "échantillons.png", "--data-dir", root).exit_code == 0
    assert (run / "échantillons.png").exists()


@pytest.mark.data
def test_same_seed_gives_bit_identical_loss_curves(tmp_path):
    curves = []
    for name in ("a", "b"):
        assert (
            invoke(
                "train",
                "--dataset",
                "mnist",
                "--steps",
                12,
                "--log-every",
                1,
                "--tasks-per-step",
                2,
                "--out",
                tmp_path / name,
                "--no-progress",
            ).exit_code
            == 0
        )
        curves.append(
            [
                json.loads(line)["loss"]
                for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
            ]
        )
    assert curves[0] == curves[1] and len(set(curves[0])) == 12


@pytest.mark.data
def test_deterministic_flag_turns_on_deterministic_algorithms(tmp_path):
    try:
        assert (
            invoke(
                "train",
                "--dataset",
                "mnist",
                "--model",
                "vae",
                "--steps",
                2,
                "--deterministic",
                "--out",
                tmp_path / "run",
                "--no-progress",
            ).exit_code
            == 0
        )
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_checkpoint_from_before_a_setting_existed_still_loads(two_runs):
    """A run written before a config setting was added reads as that setting's default."""
    from pyrohvae.train import load_run

    ckpt = two_runs["hypervae"] / "checkpoint.pt"
    state = checkpoint.load(ckpt)
    del state["config"]["kl_u_warmup"]
    checkpoint.save(ckpt, state)
    config = json.loads((two_runs["hypervae"] / "config.json").read_text())
    del config["kl_u_warmup"]
    (two_runs["hypervae"] / "config.json").write_text(json.dumps(config))
    program, loaded = load_run(two_runs["hypervae"])
    assert program.config.kl_u_warmup == 0 and loaded["step"] == 2
