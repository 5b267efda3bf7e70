"""Guides and priors by name, end to end; ArviZ inspection; model-space interpolation."""

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

from pyrohvae import guides
from pyrohvae.cli import main
from pyrohvae.config import ConfigError, RunConfig
from pyrohvae.program import build

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


VARIANTS = [
    ("random-draw", "normal"),
    ("set-mean", "normal"),
    ("set-encoder", "normal"),
    ("random-draw", "mixture"),
]


@pytest.mark.data
@pytest.mark.parametrize("guide,prior", VARIANTS)
def test_every_guide_and_prior_trains_evaluates_and_inspects(guide, prior, tmp_path):
    run = tmp_path / "run"
    run_cli(
        "train",
        "--dataset",
        "mnist",
        "--guide",
        guide,
        "--prior",
        prior,
        "--steps",
        30,
        "--tasks-per-step",
        2,
        "--out",
        run,
        "--no-progress",
    )
    config = json.loads((run / "config.json").read_text())
    assert (config["guide"], config["prior"]) == (guide, prior)
    result = run_cli("evaluate", run, "--limit", 20, "--samples", 8, "--json", "--no-progress")
    assert json.loads(result.stdout)["kl_u"] > 0
    out = tmp_path / "inspect"
    result = run_cli("inspect", run, "--draws", 30, "--limit", 20, "--out", out, "--no-progress")
    assert "u[0, 0]" in result.stdout  # az.summary, printed
    idata = az.from_netcdf(out / "posterior.nc")
    assert idata.posterior.u.dims == ("chain", "draw", "task", "u_dim")
    assert idata.posterior.u.shape == (1, 30, 10, 10)
    assert list(idata.posterior.task.values) == [str(d) for d in range(10)]
    assert idata.task_stats.kl_u.dims == ("task",) and (idata.task_stats.kl_u > 0).all()
    assert idata.attrs["guide"] == guide and idata.attrs["prior"] == prior
    for png in ("forest.png", "tasks_pca.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["set-mean", "set-encoder"])
def test_set_guides_do_not_depend_on_item_order(name):
    torch.manual_seed(0)
    guide = guides.get(name, "hypervae")(RunConfig(dataset="mnist", guide=name))
    x = (torch.rand(3, 9, 1, 28, 28) < 0.3).float()
    loc, scale = guide.task_posterior(x)
    loc2, scale2 = guide.task_posterior(x[:, torch.randperm(9)])
    torch.testing.assert_close(loc, loc2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scale, scale2, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(loc[0], loc[1])  # but on the set's content


def test_random_draw_guide_reads_one_item():
    torch.manual_seed(0)
    guide = guides.get("random-draw", "hypervae")(RunConfig(dataset="mnist"))
    x = torch.zeros(1, 5, 1, 28, 28)
    x[0, 3] = 1.0
    locs = {tuple(guide.task_posterior(x)[0][0].tolist()) for _ in range(40)}
    assert len(locs) == 2  # the blank items all give one posterior, the full one another


def test_mixture_prior_is_learnt_and_its_kl_is_estimated():
    from pyrohvae.trainer import Trainer

    torch.manual_seed(0)
    program = build(RunConfig(dataset="mnist", prior="mixture"))
    x = (torch.rand(2, 5, 1, 28, 28) < 0.3).float()
    before = {name: p.detach().clone() for name, p in program.prior.named_parameters()}
    Trainer(program).update(x)
    for name, p in program.prior.named_parameters():  # the loss reaches every part of p(u)
        assert not torch.equal(p, before[name]), name
    program.eval()
    kl = program.conditioned(x).kl_u  # by 4,096 draws: no closed form for a mixture
    q = program.conditioned(x).q_u
    with torch.no_grad():
        u = q.sample((200_000,))
        reference = (q.log_prob(u) - program.prior().log_prob(u)).mean(0)
    assert kl.shape == (2,) and (kl > 0).all()
    torch.testing.assert_close(kl, reference, rtol=0.05, atol=0.05)


def test_a_weight_made_a_pyro_sample_is_drawn_by_the_model():
    """The networks are PyroModules: a variant puts a prior on any weight, here one matrix
    layer's B, and the model draws it as a site of its own, as docs/model.md shows."""
    import pyro.distributions as dist
    from pyro import poutine
    from pyro.nn import PyroSample

    program = build(RunConfig(dataset="mnist", preset="paper"))
    layer = program.theta.layers["decoder"]["fc1__bias"]
    layer.B = PyroSample(dist.Normal(0.0, 1.0).expand(layer.B.shape).to_event(2))
    x = (torch.rand(2, 5, 1, 28, 28) < 0.3).float()
    trace = poutine.trace(program.model).get_trace(x)
    site = trace.nodes["theta.layers.decoder.fc1__bias.B"]
    assert site["type"] == "sample" and site["value"].shape == (2, 1, 100, 1)  # one B per task: in its plate
    assert "B" not in dict(layer.named_parameters())
    same = {name: trace.nodes[name]["value"] for name in ("u", "z")}
    moved = {**same, site["name"]: site["value"] + 1.0}
    logits = [
        poutine.trace(poutine.condition(program.model, data=data))
        .get_trace(x)
        .nodes["x"]["fn"]
        .base_dist.logits
        for data in ({**same, site["name"]: site["value"]}, moved)
    ]
    torch.testing.assert_close(logits[0], trace.nodes["x"]["fn"].base_dist.logits)
    assert not torch.allclose(logits[0], logits[1])  # the drawn B is the one θ(u) uses


@pytest.mark.data
def test_a_new_guide_in_one_file_is_usable_by_name(tmp_path, monkeypatch):
    """docs/research-variants.md's worked example, registered the same way a file in
    pyrohvae/guides/ would be."""
    monkeypatch.setattr(guides, "_GUIDES", dict(guides._GUIDES))  # forgotten after this test
    from pyrohvae.guides import register
    from pyrohvae.models import TaskGuide
    from pyrohvae.nets import Encoder
    from pyrohvae.train import train

    @register("first-item")
    class FirstItemGuide(TaskGuide):
        def __init__(self, config):
            super().__init__(config)
            self.encoder = Encoder(config.u_dim, config.hidden)

        def task_posterior(self, x):
            return self.encoder(x[:, 0])

    assert "first-item" in guides.names("hypervae")
    summary = train(RunConfig(dataset="mnist", guide="first-item", steps=5), tmp_path / "run", progress=False)
    assert summary.last_loss < summary.first_loss
    assert isinstance(build(RunConfig.load(tmp_path / "run" / "config.json")).inference, FirstItemGuide)


def test_interpolation_walks_between_two_tasks(trained_run, tmp_path):
    run = trained_run("hypervae")
    out = tmp_path / "line.png"
    result = run_cli(
        "interpolate", run, "--from", "1", "--to", "8", "--steps", 5, "--columns", 3, "--out", out
    )
    assert "5 models x 3 samples" in result.output and out.read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(
        main, ["interpolate", str(run), "--from", "1", "--to", "eleven", "--out", str(out)]
    )
    assert bad.exit_code == 1 and "no task 'eleven'" in bad.stderr


def test_inspect_refuses_a_run_without_u(trained_run, tmp_path):
    bad = CliRunner().invoke(main, ["inspect", str(trained_run("vae")), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 1 and "no task latent u" in bad.stderr
    assert not (tmp_path / "o").exists()


def test_random_context_reads_a_few_shots_as_often_as_a_full_batch_in_training_only():
    guide = guides.get("set-mean", "hypervae")(RunConfig(dataset="mnist", random_context=True))
    x = torch.zeros(2, 100, 1, 28, 28)
    torch.manual_seed(0)
    sizes = torch.tensor([guide.context(x).shape[1] for _ in range(2000)])
    assert sizes.min() == 1 and sizes.max() == 100
    # log-uniform over 1..100: P(k <= 5) = log 6 / log 101 = 0.39, P(k > 50) = log(101/51) / log 101 = 0.15
    assert abs(float((sizes <= 5).float().mean()) - 0.39) < 0.04
    assert abs(float((sizes > 50).float().mean()) - 0.15) < 0.03
    assert guide.eval().context(x).shape[1] == 100  # scoring and few-shot use read what they are given
    assert guides.get("set-mean", "hypervae")(RunConfig(dataset="mnist")).context(x).shape[1] == 100


def test_random_context_is_refused_for_a_guide_that_reads_one_draw():
    with pytest.raises(ConfigError, match="reads one draw"):
        build(RunConfig(dataset="mnist", guide="random-draw", random_context=True))
    with pytest.raises(ConfigError, match="hypervae only"):
        RunConfig(dataset="mnist", model="vae", random_context=True)
