"""The Python API as the README and docs/api.md show it, export's round trip, and config files."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from pyro.infer import Predictive

import pyrohvae as ph
from pyrohvae.cli import main
from pyrohvae.program import build

README = Path(__file__).resolve().parents[1] / "README.md"
API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def readme_api_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    return section[section.index("```python\n") + len("```python\n") : section.index("```\n", 10)]


def test_the_readme_api_section_runs_as_written(tmp_path, monkeypatch, data_root):
    code = readme_api_block()
    assert "steps=300" in code and "runs/" in code
    monkeypatch.setenv("PYROHVAE_DATA_DIR", str(data_root))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code.replace("steps=300", "steps=30"), "README.md", "exec"), namespace)  # noqa: S102
    run, again = namespace["run"], namespace["again"]
    assert namespace["x"].shape == (1, 4, 8, 1, 28, 28) and set(namespace["x"].unique().tolist()) <= {
        0.0,
        1.0,
    }
    assert namespace["means"].shape == (16, 1, 28, 28)
    assert namespace["scores"]["nll"].shape == (100,) and namespace["scores"]["nelbo"].shape == (100,)
    assert (
        namespace["scores"]["nelbo"] >= namespace["scores"]["nll"] - 1
    ).float().mean() > 0.9  # ELBO ≤ log p
    assert run.step == 30 and again.step == 30 and again.config == run.config
    for (name, a), (_, b) in zip(run.program.state_dict().items(), again.program.state_dict().items()):
        assert torch.equal(a, b), name
    assert ph.load("runs/seven").config.model == "vae"


def test_the_documented_hook_runs_as_written_and_sees_every_step(tmp_path, monkeypatch, data_root):
    blocks = [b[: b.index("```\n")] for b in API_DOC.read_text().split("```python\n")[1:]]
    code = next(b for b in blocks if "class Losses(Hook)" in b)
    assert "steps=300" in code
    monkeypatch.setenv("PYROHVAE_DATA_DIR", str(data_root))
    monkeypatch.chdir(tmp_path)
    namespace = {"ph": ph}
    exec(compile(code.replace("steps=300", "steps=12"), "docs/api.md", "exec"), namespace)  # noqa: S102
    losses = namespace["losses"].losses
    logged = [json.loads(line) for line in (tmp_path / "runs/hooked/metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and [m["step"] for m in logged] == [10, 12]
    assert [losses[9], losses[11]] == [m["loss"] for m in logged]


def test_prior_predictive_needs_no_data_and_draws_one_u_per_task():
    run = ph.Run(build(ph.RunConfig(dataset="mnist")), 0, Path("."))
    torch.manual_seed(0)
    x = run.prior_predictive(tasks=3, items=6, num_samples=2)
    assert x.shape == (2, 3, 6, 1, 28, 28)
    u = Predictive(run.program.model, num_samples=2)(None, tasks=3, items=6)["u"]
    assert u.shape == (2, 3, 1, 10) and len({tuple(v.flatten().tolist()) for v in u.flatten(0, 1)}) == 6
    with pytest.raises(ValueError, match="numbers of tasks and items"):
        run.program.model(None)


def cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def test_an_exported_model_loads_with_weights_only_and_gives_the_run_folders_figures(trained_run, tmp_path):
    run = trained_run("hypervae")
    out = tmp_path / "my model.pt"
    assert "wrote" in cli("export", run, "--out", out).output
    state = torch.load(out, weights_only=True)
    assert state["format"] == "pyrohvae-model" and json.loads(state["config"])["model"] == "hypervae"
    assert not any(k.startswith("optim") for k in state)
    figures = [
        json.loads(cli("evaluate", where, "--limit", 30, "--samples", 16, "--json", "--no-progress").stdout)
        for where in (run, out)
    ]
    for key in ("nelbo", "nll", "kl_u", "n"):
        assert figures[0][key] == figures[1][key], key
    assert (tmp_path / "my model-eval.json").exists()
    cli("sample", out, "--out", tmp_path / "s.png")
    (tmp_path / "not.pt").write_bytes(b"hello")
    result = cli("evaluate", tmp_path / "not.pt", code=1)
    assert "not a model exported by pyrohvae" in result.output and len(result.output.splitlines()) == 1


def test_train_from_a_config_file_with_the_command_line_on_top(tmp_path, data_root):
    (tmp_path / "mine.json").write_text(
        json.dumps(
            {
                "dataset": "mnist",
                "model": "vae",
                "z_dim": 6,
                "lr": 1e-3,
                "steps": 50,
                "train_tasks": ["not", "these"],
            }
        )
    )
    cli(
        "train",
        "--config",
        tmp_path / "mine.json",
        "--steps",
        3,
        "--out",
        tmp_path / "a",
        "--no-progress",
        "--data-dir",
        data_root,
    )
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (config["model"], config["z_dim"], config["lr"], config["steps"]) == ("vae", 6, 1e-3, 3)
    assert config["train_tasks"] == [str(d) for d in range(10)]
    # another run's config.json, another seed on the command line
    cli(
        "train",
        "--config",
        tmp_path / "a" / "config.json",
        "--seed",
        5,
        "--out",
        tmp_path / "b",
        "--no-progress",
        "--data-dir",
        data_root,
    )
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (config["z_dim"], config["steps"], config["seed"]) == (6, 3, 5)
    (tmp_path / "bad.json").write_text(json.dumps({"dataset": "mnist", "stepz": 3, "zdim": 1}))
    result = cli("train", "--config", tmp_path / "bad.json", "--out", tmp_path / "c", code=1)
    assert result.output.strip() == f"Error: {tmp_path / 'bad.json'}: unknown config keys stepz, zdim"
    assert not (tmp_path / "c").exists()
    result = cli("train", "--config", tmp_path / "mine.json", "--resume", "--out", tmp_path / "a", code=2)
    assert "--config starts a new run" in result.output
