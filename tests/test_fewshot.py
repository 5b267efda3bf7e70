"""Few-shot models: how k shots make one q(u), the exported VAE, reading image files, the command."""

import itertools
import json

import numpy as np
import pyro
import pytest
import torch
from click.testing import CliRunner
from conftest import SHOTS_MODELS, program_of, shots_options, task_data
from PIL import Image

from pyrohvae import fewshot
from pyrohvae.cli import main
from pyrohvae.config import RunConfig
from pyrohvae.program import split_context_size
from pyrohvae.train import load_run


def shots(k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(k, 1, 28, 28, generator=g) < 0.2).float()


def test_the_product_of_one_draw_posteriors_divides_the_prior_out():
    program = program_of(preset="paper")  # random-draw: one draw per task
    x = shots(3)
    locs, scales = program.inference.posterior(x.unsqueeze(1))  # each shot on its own
    loc, scale = program.inference.shots_posterior(x.unsqueeze(0), "product")
    precision = scales.pow(-2)
    combined = torch.maximum(precision.sum(0) - 2, precision.max(0).values)  # two priors N(0, I) divided out
    assert torch.allclose(scale[0], combined.rsqrt(), rtol=1e-5)
    assert torch.allclose(loc[0], (precision * locs).sum(0) / combined, rtol=1e-4, atol=1e-6)
    # one shot: its own posterior, whichever the rule
    one_loc, one_scale = program.inference.shots_posterior(x[:1].unsqueeze(0), "product")
    assert torch.allclose(one_loc, locs[:1]) and torch.allclose(one_scale, scales[:1])
    mean_loc, mean_scale = program.inference.shots_posterior(x.unsqueeze(0), "mean")
    assert torch.allclose(mean_loc[0], locs.mean(0)) and torch.allclose(mean_scale[0], scales.mean(0))


def test_more_shots_of_the_same_image_sharpen_the_product():
    program = program_of(preset="paper", u_scale_init=0.3)  # posteriors narrower than the prior
    x = shots(1).repeat(4, 1, 1, 1)
    _, one = program.inference.shots_posterior(x[:1].unsqueeze(0))
    _, four = program.inference.shots_posterior(x.unsqueeze(0))
    assert bool((four < one).all())


def test_a_set_guide_reads_the_shots_as_one_set():
    program = program_of()  # the task-specific preset: the set encoder
    assert not program.inference.one_draw
    x = shots(5)
    loc, scale = program.inference.shots_posterior(x.unsqueeze(0))
    expected = program.inference.posterior(x.unsqueeze(0))
    assert torch.allclose(loc, expected[0]) and torch.allclose(scale, expected[1])
    # order does not matter to a set
    assert torch.allclose(program.inference.shots_posterior(x.flip(0).unsqueeze(0))[0], loc, atol=1e-6)


def test_product_needs_the_normal_prior():
    with pytest.raises(ValueError, match="use --combine mean"):
        program_of(preset="paper", prior="mixture").inference.shots_posterior(
            shots(2).unsqueeze(0), "product"
        )


@pytest.mark.parametrize("z_prior, pixel_bias", [("normal", False), ("task", False), ("normal", True)])
def test_the_exported_vae_is_the_same_model_as_theta_of_u(z_prior, pixel_bias):
    """θ(ū) as a plain VAE scores every image as θ(ū) does, also where θ generates p(z | u)
    (folded into the VAE's weights) or a logit per pixel (the VAE's own)."""
    program = program_of(z_prior=z_prior, pixel_bias=pixel_bias)
    with torch.no_grad():  # move p(z | u) and the pixel logits well away from their start, so they matter
        for name in ("zprior__loc", "zprior__log_scale", "pixel_bias"):
            if name in program.theta.layers["decoder"]:
                program.theta.layers["decoder"][name].B.add_(0.7)
    loc, scale = program.inference.shots_posterior(shots(4).unsqueeze(0))
    vae = fewshot.vae_of(program, loc[0])
    x = shots(6, seed=1)
    pyro.set_rng_seed(0)
    ours = fewshot.score(program.conditioned_on(loc, scale), x, samples=64)
    pyro.set_rng_seed(0)
    theirs = fewshot.score(vae.conditioned(None), x, samples=64)
    assert theirs["nelbo"] == pytest.approx(ours["nelbo"], rel=1e-5)
    assert theirs["nll"] == pytest.approx(ours["nll"], rel=1e-5)


def test_image_files_become_the_same_bits_every_time(tmp_path):
    rng = np.random.default_rng(0)
    ink = np.full((56, 40, 3), 255, np.uint8)  # dark strokes on white, RGB, another size than 28x28
    ink[10:45, 15:25] = 0
    Image.fromarray(ink).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 60, (28, 28), dtype=np.uint8)).save(tmp_path / "b.png")  # dark image
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    images, names = fewshot.load_images([tmp_path])
    assert images.shape == (2, 1, 28, 28) and images.dtype == torch.uint8
    assert set(images.unique().tolist()) <= {0, 1}
    assert [n.split("/")[-1] for n in names] == ["a.png", "b.png"]
    a = images[0, 0]
    # inverted, strokes on; padded to a square, so the 10 of 40 columns of ink stay 5 of 28
    assert (
        a[6:22, 12:16].float().mean() > 0.9
        and a[:, :10].float().mean() < 0.05
        and a[:, 18:].float().mean() < 0.05
    )
    again, _ = fewshot.load_images([tmp_path / "a.png", tmp_path / "b.png"])
    assert torch.equal(again, images)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        fewshot.load_images([tmp_path])


def test_fewshot_command_on_a_task_and_on_files(trained_run, tmp_path):
    run = trained_run("hypervae")
    out = tmp_path / "three"
    result = CliRunner().invoke(
        main,
        [
            "fewshot",
            str(run),
            "--task",
            "3",
            "--shots",
            "5",
            "--samples",
            "8",
            "--vae",
            str(trained_run("vae")),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads((out / "fewshot.json").read_text())
    assert written["shots"] == 5 and [r["model"] for r in written["rows"]] == ["fewshot", "prior-mean", "vae"]
    assert all(r["n"] == 1010 - 5 for r in written["rows"])
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    # the model folder is a VAE run that evaluate reads
    vae, state = load_run(out / "model")
    assert vae.config.model == "vae" and state["fewshot"]["shots"] == 5
    result = CliRunner().invoke(
        main, ["evaluate", str(out / "model"), "--limit", "20", "--samples", "4", "--no-progress"]
    )
    assert result.exit_code == 0, result.output

    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.eye(28, dtype=np.uint8) * 255).rotate(30 * i).save(folder / f"{i}.png")
    result = CliRunner().invoke(
        main,
        [
            "fewshot",
            str(run),
            "--images",
            str(folder),
            "--test",
            str(folder / "0.png"),
            "--samples",
            "4",
            "--out",
            str(tmp_path / "files"),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "files" / "fewshot.json").read_text())
    assert written["shots"] == 3 and written["rows"][0]["n"] == 1


def test_fewshot_command_errors(trained_run, tmp_path):
    run = str(trained_run("hypervae"))
    cases = [
        (["--out", str(tmp_path / "a")], "give the shots by one of --images PATH and --task NAME"),
        (["--task", "cat", "--out", str(tmp_path / "b")], "mnist/test has no task 'cat'"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["fewshot", run, *args])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output
    result = CliRunner().invoke(
        main, ["fewshot", str(trained_run("vae")), "--task", "3", "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 1 and "a vae run has no task latent u" in result.output
    out = tmp_path / "d"
    result = CliRunner().invoke(
        main,
        [
            "fewshot",
            run,
            "--task",
            "3",
            "--shots",
            "2",
            "--vae",
            str(trained_run("metavae")),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1 and "a metavae run, not a vae" in result.output
    assert not out.exists()  # refused before the model and its samples were written


# --- the benchmark: −log p(x | k other images of its task) ------------------------------------------


def test_the_plan_never_shows_a_scored_image_its_own_image_and_nests_the_shots():
    data = task_data([6, 9, 5])
    index, pools, tasks = fewshot.curve_plan(data, (0, 1, 2, 4), per_task=3, seed=1)
    assert len(index) == 9 and pools.shape == (9, 4) and tasks.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i, pool, t in zip(index.tolist(), pools, tasks.tolist()):
        assert i not in pool.tolist()  # never itself
        assert len(set(pool.tolist())) == 4  # k shots are k different images
        assert all(int(data.tasks[j]) == t for j in pool.tolist())  # all of its own task
    # the same seed, the same plan; another, another
    again = fewshot.curve_plan(data, (0, 1, 2, 4), per_task=3, seed=1)
    assert all(torch.equal(a, b) for a, b in zip((index, pools, tasks), again))
    assert not torch.equal(fewshot.curve_plan(data, (0, 1, 2, 4), per_task=3, seed=2)[1], pools)


@pytest.mark.parametrize(
    "sizes, shots, message",
    [
        (
            [6, 4],
            (0, 1, 4),
            "task 'task1' of synthetic has 4 image(s): 4 shot(s) and an image to score need 5",
        ),
        ([6, 1], (0,), "task 'task1' of synthetic has 1 image(s): 0 shot(s) and an image to score need 2"),
    ],
)
def test_the_plan_refuses_tasks_too_small_for_the_shots(sizes, shots, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fewshot.curve_plan(task_data(sizes), shots, per_task=2)


def test_the_curve_scores_each_image_under_the_model_of_its_own_shots():
    """k = 1 with a set guide: the model is θ(ū) of the one other image the plan gives it, so an
    image scored under it equals the same image scored by hand under that model."""
    from pyrohvae.importance import importance_scores

    program = program_of()
    data = task_data([5, 5])
    result = fewshot.curve(program, data, (1,), per_task=2, samples=16, seed=3, progress=False)
    index, pools, _ = fewshot.curve_plan(data, (1,), per_task=2, seed=3)
    loc, scale = program.inference.shots_posterior(data.images[pools[:, :1]].float())
    pyro.set_rng_seed(3)
    model = program.conditioned_on(loc, scale)
    by_hand = importance_scores(model.model, model.guide, data.images[index].float().unsqueeze(1), 16)
    assert torch.allclose(result.nll["k=1"], -by_hand["log_p"].reshape(-1), atol=1e-3)
    assert result.models == ["k=1"] and len(result.task) == 4


def test_a_stored_curve_resumes_with_the_scores_an_unbroken_call_gives(tmp_path, monkeypatch):
    """Each model's scores are kept as soon as they are done: a call stopped after the first model
    resumes from the second and gives what one unbroken call gives; a file of another plan or a
    damaged one is scored anew, never read."""
    program, data, store = program_of(), task_data([5, 5]), tmp_path / "scores.pt"
    shots = (0, 1, 2)
    unbroken = fewshot.curve(program, data, shots, per_task=2, samples=8, seed=3, progress=False)
    real, scored = fewshot.scores_given_shots, []

    def stopped_after_one(*args, **kwargs):
        if scored:
            raise KeyboardInterrupt
        scored.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fewshot, "scores_given_shots", stopped_after_one)
    with pytest.raises(KeyboardInterrupt):
        fewshot.curve(program, data, shots, per_task=2, samples=8, seed=3, progress=False, store=store)

    def counted(*args, **kwargs):
        scored.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fewshot, "scores_given_shots", counted)
    scored.clear()
    resumed = fewshot.curve(program, data, shots, per_task=2, samples=8, seed=3, progress=False, store=store)
    assert len(scored) == len(unbroken.models) - 1  # the first model was read back
    assert resumed.models == unbroken.models
    for m in unbroken.models:
        assert torch.equal(resumed.nll[m], unbroken.nll[m]) and torch.equal(
            resumed.nelbo[m], unbroken.nelbo[m]
        )
    scored.clear()
    fewshot.curve(program, data, shots, per_task=2, samples=8, seed=3, progress=False, store=store)
    assert not scored  # all kept
    fewshot.curve(program, data, shots, per_task=2, samples=4, seed=3, progress=False, store=store)
    assert len(scored) == len(unbroken.models)  # another plan: all scored again
    scored.clear()
    store.write_bytes(b"not a torch file")
    again = fewshot.curve(program, data, shots, per_task=2, samples=8, seed=3, progress=False, store=store)
    assert len(scored) == len(unbroken.models) and torch.equal(again.nll["k=2"], unbroken.nll["k=2"])
    scored.clear()
    other = task_data([5, 5], seed=1)  # as many images, other pixels: the same plan but for them
    fewshot.curve(program, other, shots, per_task=2, samples=8, seed=3, progress=False, store=store)
    assert len(scored) == len(unbroken.models)
    scored.clear()
    fewshot.curve(program, data, shots, per_task=2, samples=8, seed=3, progress=False, store=store)
    with torch.no_grad():  # the run trained on: its weights, not its folder, name its scores
        next(program.parameters()).add_(0.01)
    fewshot.curve(program, data, shots, per_task=2, samples=8, seed=3, progress=False, store=store)
    assert len(scored) == 2 * len(unbroken.models)


def test_a_refined_curve_scores_each_image_under_q_u_refined_on_its_own_shots(tmp_path):
    """`refine_steps`: the k-shot models' q(u) is that of `refine` on each image's k shots (the
    curve's scores equal a by-hand scoring under it, and differ from the guide's); the models of no
    shot are the unrefined curve's; an unrefined curve's stored scores are never read for it."""
    program, data, store = program_of(random_context=True), task_data([5, 5]), tmp_path / "scores.pt"
    plain = fewshot.curve(program, data, (0, 2), per_task=2, samples=8, seed=3, progress=False, store=store)
    refined = fewshot.curve(
        program, data, (0, 2), per_task=2, samples=8, seed=3, progress=False, store=store, refine_steps=4
    )
    index, pools, _ = fewshot.curve_plan(data, (0, 2), per_task=2, seed=3)
    guide = fewshot.shots_posteriors(program, data.images, pools[:, :2])
    by_hand = fewshot.refined_posteriors(program, data.images, pools[:, :2], guide, 4, seed=3)
    assert not torch.allclose(by_hand[0], guide[0])
    _, nll = fewshot.scores_given_shots(
        program, data.images[index].float(), by_hand, data.images, pools[:, :2], 8, 3
    )
    assert torch.allclose(refined.nll["k=2"], nll, atol=1e-4)
    assert not torch.allclose(refined.nll["k=2"], plain.nll["k=2"], atol=1e-3)
    assert torch.equal(refined.nll["prior-mean"], plain.nll["prior-mean"])


@pytest.mark.parametrize(*SHOTS_MODELS)
def test_a_shots_prior_is_given_the_same_other_images_as_q_u(
    z_prior, features, template, attention, in_encoder, width, window, pixels, grid
):
    """With `--z-prior shots` the curve's k-shot model reads its k shots twice, in q(u) and in
    p(z | u, shots) (and with `--shot-attention-encoder` in q(z | x, θ(u), shots) too): an image
    scored under it equals the same image scored by hand under the model given those shots, and not
    the model given none. Its few-shot model is no plain VAE."""
    from pyrohvae.importance import importance_scores

    program = program_of(
        **shots_options(z_prior, features, template, attention, in_encoder, width, window, pixels, grid)
    )
    if attention:  # it starts silent: give the shots' maps a say in the logits (and in q(z))
        with torch.no_grad():
            for half in ("decoder", "encoder") if in_encoder else ("decoder",):
                program.theta.layers[half]["attend_out__weight"].B.normal_(0, 0.3)
            if window:
                program.theta.layers["decoder"]["fine_out__weight"].B.normal_(0, 0.3)
            if pixels:
                program.theta.layers["decoder"]["fine_pixel__weight"].B.normal_(0, 0.3)
    data = task_data([5, 5])
    result = fewshot.curve(program, data, (2,), per_task=2, samples=16, seed=3, progress=False)
    index, pools, _ = fewshot.curve_plan(data, (2,), per_task=2, seed=3)
    given = data.images[pools[:, :2]].float()
    loc, scale = program.inference.shots_posterior(given)
    x = data.images[index].float().unsqueeze(1)
    by_hand = {}
    for name, shots in (("given", given), ("none", None)):
        pyro.set_rng_seed(3)
        model = program.conditioned_on(loc, scale, shots=shots)
        by_hand[name] = -importance_scores(model.model, model.guide, x, 16)["log_p"].reshape(-1)
    assert torch.allclose(result.nll["k=2"], by_hand["given"], atol=1e-3)
    assert not torch.allclose(result.nll["k=2"], by_hand["none"], atol=1e-2)
    if in_encoder:  # q(z | x) itself reads the shots
        z_loc = {}
        for name, shots in (("given", given), ("none", None)):
            guide = program.conditioned_on(loc, scale, shots=shots).guide
            z_loc[name] = pyro.poutine.trace(guide).get_trace(x).nodes["z"]["fn"].base_dist.loc
        assert (z_loc["given"] - z_loc["none"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="no plain VAE"):
        fewshot.vae_of(program, loc[0])


def test_draws_from_the_shots_prior_follow_its_mixture():
    """`mixture_from_eps` turns shared normal and uniform draws into draws of p(z | u, shots): each
    component picked as often as its weight, and the draws' mean and variance the mixture's."""
    from pyrohvae.models import mixture_from_eps, shot_mixture
    from pyrohvae.nets import ShotPrior

    prior = ShotPrior(2)
    with torch.no_grad():
        prior.prior_logit.fill_(-0.5)
        prior.log_widen.fill_(-2.3)  # components of sd 0.22, far from N(0, I) and each other
    loc = torch.tensor([[[6.0, 0.0], [-5.0, 3.0], [0.0, -7.0]]])  # one model, 3 shots
    p_z = shot_mixture(prior, loc, torch.full_like(loc, 0.2))
    g = torch.Generator().manual_seed(0)
    n = 40_000
    z = mixture_from_eps(p_z, torch.randn(n, 2, generator=g), torch.rand(n, generator=g))[0]
    w = p_z.mixture_distribution.probs[0, 0]
    mu, sd = p_z.component_distribution.base_dist.loc[0, 0], p_z.component_distribution.base_dist.scale[0, 0]
    mean = (w[:, None] * mu).sum(0)
    var = (w[:, None] * (sd**2 + mu**2)).sum(0) - mean**2
    assert torch.allclose(z.mean(0), mean, atol=4 * float((var / n).sqrt().max()))
    assert torch.allclose(z.var(0), var, rtol=0.03)
    near = (z[:, None] - mu[1:]).norm(dim=-1).lt(1.0).float().mean(0)  # within 4.5 sd of a shot's code
    assert torch.allclose(near, w[1:], atol=0.01)


@pytest.mark.parametrize("pooled", [False, True])
def test_shot_dims_leave_the_other_dimensions_of_z_to_the_prior(pooled):
    """`--shot-dims 2` of z's 5: p(z | u, shots) is the mixture of the first 2 dimensions alone (as
    the shots prior of a z of 2 has it, from the same parameters) times N(0, 1) in each of the other
    3, whatever the shots' codes there; and the program builds its shots prior so."""
    from pyrohvae.models import shot_mixture
    from pyrohvae.nets import ShotPrior

    torch.manual_seed(0)
    split, whole = (
        ShotPrior(5, by_shots=True, pooled=pooled, dims=2),
        ShotPrior(2, by_shots=True, pooled=pooled),
    )
    with torch.no_grad():
        for name, p in split.named_parameters():
            p.normal_(0, 0.3)
            getattr(whole, name).copy_(p[:2] if p.dim() else p)
    loc, scale = torch.randn(3, 4, 5) * 2, torch.rand(3, 4, 5) + 0.1  # 3 tasks, 4 shots
    z = torch.randn(6, 3, 7, 5)
    by_hand = shot_mixture(whole, loc[..., :2], scale[..., :2]).log_prob(z[..., :2])
    by_hand = by_hand + torch.distributions.Normal(0.0, 1.0).log_prob(z[..., 2:]).sum(-1)
    torch.testing.assert_close(shot_mixture(split, loc, scale).log_prob(z), by_hand)
    assert not torch.allclose(shot_mixture(ShotPrior(5), loc, scale).log_prob(z), by_hand)
    program = program_of(z_prior="shots-k", split_context=True, z_dim=5, shot_dims=2)
    assert program.shot_prior.reads.tolist() == [True, True, False, False, False]


def test_two_scales_share_each_shots_weight_and_its_address():
    """`--shot-scales 2`: each shot enters p(z | u, shots) at both widenings, its weight split by the
    learnt share, N(0, I)'s weight as with one scale; with the share at 0 it is the one-scale mixture.
    A warped address sums out the shot, not the scale: log p(z) + log p(x | z) equals log Σ over the
    2k + 1 components of p(c) p(z | c) p(x | z, the shot of c)."""
    import pyro.distributions as dist

    from pyrohvae.models import by_shot, likelihood, shot_logits, shot_mixture, shots_prior
    from pyrohvae.nets import ShotPrior

    torch.manual_seed(0)
    one, two = ShotPrior(3, by_shots=True), ShotPrior(3, by_shots=True, scales=2)
    with torch.no_grad():
        for name, p in one.named_parameters():
            p.normal_(0, 0.3)
            getattr(two, name).copy_(p)
        two.narrow_logit.fill_(0.4)
    loc, scale = torch.randn(2, 4, 3), torch.rand(2, 4, 3) + 0.1  # 2 tasks, 4 shots
    z = torch.randn(5, 2, 6, 3)
    widen, a = one.at(4)
    normal = torch.distributions.Normal
    prior = normal(0.0, 1.0).log_prob(z).sum(-1) + torch.nn.functional.logsigmoid(a)
    rho = torch.sigmoid(torch.tensor(0.4))
    per_shot = []
    for s, w in ((widen, 1 - rho), (two.log_narrow.exp(), rho)):
        at = normal(loc[:, None], (scale**2 + s**2).sqrt()[:, None]).log_prob(z.unsqueeze(-2)).sum(-1)
        per_shot.append(at + torch.log(w * torch.sigmoid(-a) / 4))  # (5, 2, 6, k)
    by_hand = torch.cat([prior.unsqueeze(-1), *per_shot], -1).logsumexp(-1)
    torch.testing.assert_close(shot_mixture(two, loc, scale).log_prob(z), by_hand)
    with torch.no_grad():
        two.narrow_logit.fill_(-40.0)
    torch.testing.assert_close(
        shot_mixture(two, loc, scale).log_prob(z), shot_mixture(one, loc, scale).log_prob(z)
    )
    folded = by_shot(torch.arange(9.0).log(), 4).exp()
    assert folded.tolist() == pytest.approx([0.0, 1 + 5, 2 + 6, 3 + 7, 4 + 8])

    program = program_of(
        split_context=True,
        guide="precision-pool",
        z_prior="shots-k",
        z_dim=4,
        shot_template="warp-address",
        shot_scales=2,
    )
    theta, tasks, items, k = program.theta, 2, 5, 3
    g = torch.Generator().manual_seed(1)
    u = torch.randn(tasks, 1, program.config.u_dim, generator=g)
    with torch.no_grad():
        program.shot_prior.narrow_logit.fill_(0.7)
        params = theta.decoder(u)
        params["warp.weight"] = torch.randn(params["warp.weight"].shape, generator=g)  # not silent
        given = torch.stack([shots(k, seed=1), shots(k, seed=2)])
        p_z, features = shots_prior(theta, program.shot_prior, u, given)
        assert p_z.mixture_distribution.logits.shape[-1] == 2 * k + 1
        z = torch.randn(tasks, items, 4, generator=g)
        per = shot_logits(theta, params, z, p_z, features, given)  # (tasks, items, k + 1, 1, 28, 28)
        assert per.shape == (tasks, items, k + 1, 1, 28, 28)
        x = (torch.rand(tasks, items, 1, 28, 28, generator=g) < 0.3).float()
        summed = p_z.log_prob(z) + likelihood(per, z, p_z).log_prob(x)
        of_shot = torch.cat([per, per[:, :, 1:]], 2)  # component c of shot (c - 1) % k + 1
        joint = (
            p_z.mixture_distribution.logits
            + p_z.component_distribution.log_prob(z.unsqueeze(-2))
            + dist.Bernoulli(logits=of_shot).to_event(3).log_prob(x.unsqueeze(2))
        )
        assert torch.allclose(summed, joint.logsumexp(-1), rtol=1e-5)


@pytest.mark.parametrize("z_prior", ["shots-k", "shots-g"])
def test_a_drawing_takes_the_address_of_the_component_its_z_was_drawn_from(z_prior):
    """A sample of a warped address: z drawn from N(0, I) decodes with the blank, from shot j's
    component with shot j moved to z, and (`--z-prior shots-g`) from the set's Gaussian with the
    set's address, every shot moved to z and averaged, which is none of the shots' own."""
    from pyrohvae.models import mixture_from_eps, shot_logits, shots_prior, shots_sample_logits

    program = program_of(
        split_context=True, guide="precision-pool", z_prior=z_prior, z_dim=4, shot_template="warp-address"
    )
    theta, k, n = program.theta, 3, 400
    g = torch.Generator().manual_seed(1)
    u = torch.randn(2, program.config.u_dim, generator=g)
    given = torch.stack([shots(k, seed=1), shots(k, seed=2)])
    eps, r = torch.randn(n, 4, generator=g), torch.rand(n, generator=g)
    with torch.no_grad():
        for name in ("template__weight", "warp__weight"):  # not silent
            theta.layers["decoder"][name].B.normal_(0, 0.3, generator=g)
        drawn = shots_sample_logits(theta, program.shot_prior, u, given, eps, r)
        p_z, features = shots_prior(theta, program.shot_prior, u.unsqueeze(-2), given)
        z, pick = mixture_from_eps(p_z, eps, r, picks=True)
        per = shot_logits(theta, theta.decoder(u.unsqueeze(-2)), z, p_z, features, given)
    addresses = k + 1 + (z_prior == "shots-g")
    assert per.shape == (2, n, addresses, 1, 28, 28)
    assert pick.unique().tolist() == list(range(addresses))  # every component drawn
    for a in range(addresses):
        at = pick == a
        assert torch.equal(drawn[at], per[:, :, a][at])
    if z_prior == "shots-g":
        at = pick == k + 1
        assert not torch.allclose(drawn[at], per[:, :, 1][at], atol=1e-3)


def test_the_sets_gaussian_narrows_with_the_shots_and_moves_to_their_mean():
    """`--z-prior shots-g`'s last component, the predictive of a new code of the shots' task: its
    spread falls with every added shot towards the codes' spread around their centre (0.5 at the
    start), never below it, and its location moves from the prior's 0 to the codes' mean."""
    from pyrohvae.nets import ShotPrior

    prior = ShotPrior(3, pooled=True)
    g = torch.Generator().manual_seed(0)
    codes = 0.5 * torch.randn(1, 64, 3, generator=g) + torch.tensor([2.0, -1.0, 0.5])
    with torch.no_grad():
        parts = [prior.set_component(codes[:, :k]) for k in (1, 2, 4, 16, 64)]
    spreads = torch.stack([spread[0] for _, spread, _ in parts])  # (5 counts, 3 dims)
    assert (spreads[1:] < spreads[:-1]).all() and (spreads > 0.5).all()
    assert torch.allclose(spreads[-1], torch.full((3,), 0.5), atol=0.01)
    assert parts[0][0].abs().lt(codes[0, 0].abs()).all()  # one code: pulled towards the prior's 0
    assert torch.allclose(parts[-1][0][0], codes[0].mean(0), atol=0.02)


def test_samples_of_a_shots_model_given_its_shots_come_from_its_mixture():
    """Given its shots, a model whose p(z) reads them samples z from the mixture: with N(0, I)'s
    weight near 1 the samples are those of N(0, I), with it near 0 they differ."""
    program = program_of(z_prior="shots", split_context=True, shot_features=True)
    given = shots(3).unsqueeze(0)
    loc, _ = program.inference.shots_posterior(given)
    plain = fewshot.sample_means(program, loc, 6, seed=1)
    with torch.no_grad():
        program.shot_prior.prior_logit.fill_(30.0)
    assert torch.allclose(fewshot.sample_means(program, loc, 6, seed=1, shots=given), plain, atol=1e-6)
    with torch.no_grad():
        program.shot_prior.prior_logit.fill_(-30.0)
    assert not torch.allclose(fewshot.sample_means(program, loc, 6, seed=1, shots=given), plain, atol=1e-3)


def test_a_shots_models_task_samples_read_its_context_as_shots():
    """`sample_task` (the task-model analysis's samples) of a model whose p(z) reads shots draws z
    from p(z | ū, context): as N(0, I)'s samples with the mixture's weight on N(0, I), else not."""
    program = program_of(z_prior="shots", split_context=True)
    context = shots(4).unsqueeze(0)

    def drawn():
        return program.sample_task(context, 5, torch.Generator().manual_seed(2))

    with torch.no_grad():
        program.shot_prior.prior_logit.fill_(30.0)
        u = program.task_u(context)
        eps = torch.randn(5, program.config.z_dim, generator=torch.Generator().manual_seed(2))
        plain = torch.sigmoid(program.sample_logits(eps, u[0]))
    assert torch.allclose(drawn(), plain, atol=1e-6)
    with torch.no_grad():
        program.shot_prior.prior_logit.fill_(-30.0)
    assert drawn().shape == plain.shape and not torch.allclose(drawn(), plain, atol=1e-3)


def test_a_shots_models_sample_grid_reads_each_tasks_context_as_shots():
    """The `sample` grid of a model whose p(z) reads shots: its task rows draw z from p(z | ū, the
    task's context), its prior rows (no shots) from N(0, I)."""
    from pyrohvae.data import TaskData
    from pyrohvae.samples import sample_rows

    program = program_of(z_prior="shots", split_context=True)
    images = (torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(3)) < 0.2).to(torch.uint8)
    data = TaskData(images, torch.arange(2).repeat(6), ["a", "b"], "toy")
    with torch.no_grad():
        program.shot_prior.prior_logit.fill_(30.0)
    plain, labels, _ = sample_rows(program, data, columns=3, prior_rows=1, seed=4)
    with torch.no_grad():
        program.shot_prior.prior_logit.fill_(-30.0)
    read, _, _ = sample_rows(program, data, columns=3, prior_rows=1, seed=4)
    assert labels[:2] == ["a", "b"] and read.shape == plain.shape == (3, 3, 1, 28, 28)
    assert not torch.allclose(read[:2], plain[:2], atol=1e-3) and torch.equal(read[2], plain[2])


def test_without_a_closed_form_kl_z_is_averaged_over_the_particles():
    """A p(z) without a closed-form KL (a mixture) gets KL(q(z | x) || p(z)) from the importance
    particles; for a one-component mixture equal to N(0, I) it meets the analytic KL."""
    import pyro.distributions as dist

    from pyrohvae.importance import importance_scores

    def model(x, mixture):
        with pyro.plate("tasks", x.shape[0], dim=-2), pyro.plate("data", x.shape[1], dim=-1):
            zeros = x.new_zeros(x.shape[:2] + (3,))
            p = dist.Normal(zeros, 1.0).to_event(1)
            if mixture:
                one = dist.Normal(zeros.unsqueeze(-2), 1.0).to_event(1)
                p = dist.MixtureSameFamily(dist.Categorical(logits=x.new_zeros(x.shape[:2] + (1,))), one)
            z = pyro.sample("z", p)
            logits = z[..., :1, None, None].expand(*z.shape[:-1], 1, 28, 28)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

    def guide(x, mixture):
        with pyro.plate("tasks", x.shape[0], dim=-2), pyro.plate("data", x.shape[1], dim=-1):
            loc = x.flatten(-3).mean(-1, keepdim=True).expand(x.shape[:2] + (3,)) * 4 - 1
            pyro.sample("z", dist.Normal(loc, 0.5).to_event(1))

    x = torch.stack([shots(3, seed) for seed in (1, 2)])
    pyro.set_rng_seed(0)
    analytic = importance_scores(lambda x: model(x, False), lambda x: guide(x, False), x, 4000)["kl_z"]
    pyro.set_rng_seed(0)
    sampled = importance_scores(lambda x: model(x, True), lambda x: guide(x, True), x, 4000)["kl_z"]
    assert sampled.shape == analytic.shape == (2, 3)
    assert torch.allclose(sampled, analytic, atol=0.1) and bool((analytic > 0.3).all())


def test_the_report_steps_and_gains_are_paired_differences():
    nll = {
        "training-mean": torch.tensor([10.0, 12, 14]),
        "k=1": torch.tensor([9.0, 11, 12]),
        "k=2": torch.tensor([9.0, 11.5, 12]),
    }
    curve = fewshot.Curve(list(nll), {k: v + 1 for k, v in nll.items()}, nll, torch.zeros(3), ["t"], 8)
    vae = fewshot.Curve(
        ["vae"],
        {"vae": torch.tensor([12.0, 12, 12])},
        {"vae": torch.tensor([11.0, 12, 13])},
        torch.zeros(3),
        ["t"],
        8,
    )
    report = fewshot.curve_report(curve, vae)
    first, second = report["changes"]
    assert (first["from"], first["to"]) == (0, 1) and first["change"] == pytest.approx(-4 / 3)
    assert first["stderr"] == pytest.approx(float(torch.tensor([-1.0, -1, -2]).std()) / 3**0.5)
    assert first["falls"] and not second["falls"]  # +1/6: it rose
    gains = {g["model"]: g["gain"] for g in report["gains"]}
    assert gains["k=1"] == pytest.approx((2 + 1 + 1) / 3) and gains["training-mean"] == pytest.approx(0)
    assert report["set_figure"] is None  # k = 2, 3, 4 missing


def test_precision_pooling_narrows_with_every_shot_and_reads_any_number():
    program = program_of(guide="precision-pool")
    x = shots(6)
    scales = [program.inference.shots_posterior(x[:k].unsqueeze(0))[1] for k in range(1, 7)]
    assert all(bool((b < a).all()) for a, b in itertools.pairwise(scales))
    # the posterior of N(0, I) given independent Gaussian factors: one factor's own location and
    # precision give it exactly
    loc1, scale1 = program.inference.items(x[:1].unsqueeze(0))
    lam = scale1.pow(-2)[0, 0]
    loc, scale = program.inference.shots_posterior(x[:1].unsqueeze(0))
    assert torch.allclose(scale[0], (1 + lam).rsqrt())
    assert torch.allclose(loc[0], lam * loc1[0, 0] / (1 + lam))


def test_split_context_reads_the_first_k_and_scores_the_rest():
    """q(u) reads only the first k images of each task; the model scores only the others."""
    from pyro import poutine

    program = program_of(split_context=True, batch_size=6)
    x = shots(12).reshape(2, 6, 1, 28, 28)
    other = x.clone()
    other[:, 3:] = 1 - other[:, 3:]  # the scored images changed, the context (k = 3) not
    traced = {}
    for name, batch in (("x", x), ("other", other)):
        pyro.set_rng_seed(0)
        guide = poutine.trace(program.guide).get_trace(batch, None, context_size=3)
        replayed = poutine.replay(program.model, trace=guide)
        model = poutine.trace(replayed).get_trace(batch, None, context_size=3)
        traced[name] = guide, model
    g, m = traced["x"]
    assert torch.equal(g.nodes["u"]["fn"].base_dist.loc, traced["other"][0].nodes["u"]["fn"].base_dist.loc)
    assert m.nodes["x"]["value"].shape[:2] == (2, 3) and torch.equal(m.nodes["x"]["value"], x[:, 3:])
    # KL(u) stays spread over all six items: the u site's scale is that of the data sites times 3/6
    assert g.nodes["u"]["scale"] == pytest.approx(m.nodes["z"]["scale"] * 3 / 6)
    # in training every step draws its own k, 1 to 5; in evaluation there is none
    program.train()
    ks = {program.step_kwargs(1)["context_size"] for _ in range(300)}
    assert ks == set(range(1, 6))
    program.eval()
    assert "context_size" not in program.step_kwargs(1)


def shots_step_options(template: str) -> dict:
    """A shots model whose training steps split a context of 6 images, its decoder's template as given."""
    return {
        "z_prior": "shots-k",
        "split_context": True,
        "guide": "precision-pool",
        "batch_size": 6,
        "shot_template": template,
    }


def replayed_model(program, guide, x, **kwargs):
    """The model's trace of one training step, replayed on the guide's draws."""
    from pyro import poutine

    return poutine.trace(poutine.replay(program.model, trace=guide)).get_trace(x, None, **kwargs)


def step_traces(program, x, **kwargs):
    """The guide's and the model's traces of one training step of `program` on x, from seed 0."""
    from pyro import poutine

    pyro.set_rng_seed(0)
    guide = poutine.trace(program.guide).get_trace(x, None, **kwargs)
    return guide, replayed_model(program, guide, x, **kwargs)


@pytest.mark.parametrize("template", ["none", "warp-address"])
def test_an_empty_context_scores_every_image_under_the_model_of_no_shots(template):
    """`--no-shot-share`: a step of context size 0 scores all its images, q(u) is p(u) (KL(u) = 0),
    and p(z) reads no shot (N(0, I), the blank address alone); the share of such steps is the one
    asked, and a run without it draws its context sizes as before."""
    options = shots_step_options(template)
    program = program_of(**options, no_shot_share=0.25)
    x = shots(12).reshape(2, 6, 1, 28, 28)
    guide, model = step_traces(program, x, context_size=0)
    q_u, u = guide.nodes["u"]["fn"].base_dist, guide.nodes["u"]["value"]
    assert torch.equal(q_u.loc, torch.zeros_like(q_u.loc)) and torch.equal(
        q_u.scale, torch.ones_like(q_u.scale)
    )
    assert torch.allclose(guide.nodes["u"]["fn"].log_prob(u), model.nodes["u"]["fn"].log_prob(u))
    assert torch.equal(model.nodes["x"]["value"], x)  # every image scored, none read as a shot
    z = model.nodes["z"]["value"]
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(model.nodes["z"]["fn"].log_prob(z), standard, atol=1e-5)
    program.train()
    torch.manual_seed(0)
    ks = torch.tensor([program.step_kwargs(1)["context_size"] for _ in range(2000)])
    assert abs(float((ks == 0).float().mean()) - 0.25) < 0.03 and ks.max() == 5
    plain = program_of(**options).train()
    torch.manual_seed(0)
    drawn = [plain.step_kwargs(1)["context_size"] for _ in range(50)]
    torch.manual_seed(0)
    assert drawn == [split_context_size(6) for _ in range(50)]


@pytest.mark.parametrize("template", ["none", "warp-address"])
def test_a_step_of_u_alone_reads_the_context_in_q_u_and_no_shot_in_p_z(template):
    """`--u-alone-share`: in such a step q(u) reads the context as in any step and the model scores
    the other images, but p(z) reads no shot (N(0, I)) and neither does the decoder; the shares drawn
    are the ones asked, and never both kinds in one step."""
    options = shots_step_options(template)
    program = program_of(**options, u_alone_share=0.3)
    x = shots(12).reshape(2, 6, 1, 28, 28)
    guide, model = step_traces(program, x, context_size=2, read_shots=False)
    _, read = step_traces(program, x, context_size=2)
    loc = program.inference.posterior(x[:, :2])[0]
    assert torch.allclose(guide.nodes["u"]["fn"].base_dist.loc.squeeze(-2), loc)  # q(u | the context)
    assert torch.equal(model.nodes["x"]["value"], x[:, 2:])  # the context read, not scored
    z = model.nodes["z"]["value"]
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(model.nodes["z"]["fn"].log_prob(z), standard, atol=1e-5)
    assert not torch.allclose(read.nodes["z"]["fn"].log_prob(z), standard, atol=1e-2)
    if (
        template != "none"
    ):  # the read step sums over the addressed shot (the blank or one of 2), this one has none
        assert read.nodes["x"]["fn"].mixture_distribution.logits.shape[-1] == 3
        assert not hasattr(model.nodes["x"]["fn"], "mixture_distribution")
    program.train()
    torch.manual_seed(0)
    drawn = [program.step_kwargs(1) for _ in range(3000)]
    alone = torch.tensor([not k.get("read_shots", True) for k in drawn]).float()
    assert abs(float(alone.mean()) - 0.3) < 0.03 and all(k["context_size"] >= 1 for k in drawn)
    both = program_of(**options, no_shot_share=0.25, u_alone_share=0.25).train()
    torch.manual_seed(0)
    drawn = [both.step_kwargs(1) for _ in range(3000)]
    empty = torch.tensor([k["context_size"] == 0 for k in drawn]).float()
    alone = torch.tensor([not k.get("read_shots", True) for k in drawn]).float()
    assert abs(float(empty.mean()) - 0.25) < 0.03 and abs(float(alone.mean()) - 0.25) < 0.03
    assert not (empty * alone).any()


@pytest.mark.parametrize("template", ["none", "warp-address"])
def test_u_reads_all_reads_the_whole_minibatch_in_q_u_and_the_context_alone_as_shots(template):
    """`--u-reads-all`: q(u) reads every image of the task, the scored ones too, while the model
    scores the images after the context and p(z) reads the context alone as its shots (the same z
    scored as without the option); an empty context scores every image under q(u | all of them)."""
    options = shots_step_options(template)
    x = shots(12).reshape(2, 6, 1, 28, 28)
    every = program_of(**options, u_reads_all=True)
    guide, model = step_traces(every, x, context_size=2)
    loc = every.inference.posterior(x)[0]
    assert torch.allclose(guide.nodes["u"]["fn"].base_dist.loc.squeeze(-2), loc)  # q(u | all 6)
    assert not torch.allclose(loc, every.inference.posterior(x[:, :2])[0])
    assert torch.equal(model.nodes["x"]["value"], x[:, 2:])  # the context is not scored
    # p(z) reads the same 2 shots as the program without the option: the same density of the same z
    z = model.nodes["z"]["value"]
    context = program_of(**options)
    _, alone = step_traces(context, x, context_size=2)
    assert not torch.equal(alone.nodes["z"]["value"], z)  # q(u | 2) differs, so does its draw
    replayed = replayed_model(context, guide, x, context_size=2)
    assert torch.allclose(replayed.nodes["z"]["fn"].log_prob(z), model.nodes["z"]["fn"].log_prob(z))
    guide, model = step_traces(program_of(**options, u_reads_all=True, no_shot_share=0.5), x, context_size=0)
    assert torch.allclose(guide.nodes["u"]["fn"].base_dist.loc.squeeze(-2), loc)
    assert torch.equal(model.nodes["x"]["value"], x)
    z = model.nodes["z"]["value"]
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(model.nodes["z"]["fn"].log_prob(z), standard, atol=1e-5)


@pytest.mark.parametrize(
    "law, small, large",
    # k in 1..19 of 20 images; log-uniform: P(k <= 2) = log 3 / log 20 = 0.37, P(k >= 10) = log 2 / log 20
    # = 0.23; uniform: 2 / 19 = 0.11 and 10 / 19 = 0.53
    [("log-uniform", 0.37, 0.23), ("uniform", 0.11, 0.53)],
)
def test_context_sizes_draw_each_step_s_k_by_their_law(law, small, large):
    program = program_of(split_context=True, batch_size=20, context_sizes=law).train()
    torch.manual_seed(0)
    ks = torch.tensor([program.step_kwargs(1)["context_size"] for _ in range(3000)])
    assert ks.min() == 1 and ks.max() == 19
    assert abs(float((ks <= 2).float().mean()) - small) < 0.03
    assert abs(float((ks >= 10).float().mean()) - large) < 0.03


def test_exclude_classes_takes_patterns_and_refuses_one_that_matches_nothing():
    from pyrohvae.config import excluded_tasks
    from pyrohvae.data import DataError

    names = ["Korean/character01", "Korean/character02", "Latin/character01", "3"]
    assert excluded_tasks(names, ["Korean/*", "3"]) == ["Korean/character01", "Korean/character02", "3"]
    with pytest.raises(DataError, match="--exclude-classes 'Greek/\\*' matches no task"):
        excluded_tasks(names, ["Greek/*"])


@pytest.fixture(scope="module")
def held_out_runs(tmp_path_factory, data_root):
    """A HyperVAE (the default preset) and a VAE trained a few steps on MNIST without the digit 3."""
    runs = {}
    for model in ("hypervae", "vae"):
        out = tmp_path_factory.mktemp("held-out") / model
        args = [
            "train",
            "--dataset",
            "mnist",
            "--model",
            model,
            "--exclude-classes",
            "3",
            "--steps",
            "20",
            "--batch-size",
            "20",
            "--out",
            str(out),
            "--no-progress",
            "--no-tensorboard",
        ]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        runs[model] = str(out)
    return runs


def test_fewshot_curve_command_scores_the_held_out_digit(held_out_runs, tmp_path):
    out = tmp_path / "curve"
    invocation = [
        "fewshot-curve",
        held_out_runs["hypervae"],
        "--shots",
        "0,2,1",
        "--per-task",
        "3",
        "--samples",
        "8",
        "--vae",
        held_out_runs["vae"],
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(main, invocation)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "curve.json").read_text())
    assert written["data"] == "mnist/test" and written["tasks"] == 1 and written["images"] == 3
    assert [r["model"] for r in written["rows"]] == ["training-mean", "prior-mean", "k=1", "k=2"]
    assert [(c["from"], c["to"]) for c in written["changes"]] == [(0, 1), (1, 2)]
    assert {g["model"] for g in written["gains"]} == {"training-mean", "prior-mean", "k=1", "k=2"}
    assert written["vae"]["n"] == 3 and written["set_figure"] is None  # k = 3 and 4 not asked
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "k=2" in result.output and "gain over VAE" in result.output
    # each model's scores were kept as they were done: the same command again scores nothing
    assert (out / "scores-run.pt").is_file() and (out / "scores-vae.pt").is_file()
    first = written
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fewshot, "scores_given_shots", lambda *a, **k: pytest.fail("scored again"))
        again = CliRunner().invoke(main, invocation)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "curve.json").read_text()) == first
    # the training images of the held-out digit: another part, the same kind of result
    result = CliRunner().invoke(
        main,
        [
            "fewshot-curve",
            held_out_runs["hypervae"],
            "--split",
            "held-out",
            "--shots",
            "1",
            "--per-task",
            "2",
            "--samples",
            "4",
            "--out",
            str(tmp_path / "h"),
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["data"] == "mnist/train"


def test_fewshot_curve_command_errors_write_nothing(held_out_runs, trained_run, tmp_path):
    folder = tmp_path / "tasks"
    for task, n in (("ring", 3), ("dot", 1)):
        (folder / task).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.eye(28, k=i, dtype=np.uint8) * 255).save(folder / task / f"{i}.png")
    run = held_out_runs["hypervae"]
    cases = [
        (
            [run, "--shots", "0,1,2000"],
            "task '3' of mnist/test has 1010 image(s): 2000 shot(s) and an image to score need 2001",
        ),
        ([run, "--dataset", str(folder), "--shots", "0"], "task 'dot' has 1 image(s)"),
        ([run, "--shots", "1,x"], "shot counts separated by commas"),
        (
            [str(trained_run("hypervae")), "--shots", "1"],
            "the test part of mnist holds no task the run was not trained on",
        ),
        ([str(trained_run("hypervae")), "--split", "held-out"], "this run holds no held-out tasks"),
        ([run, "--vae", str(trained_run("metavae"))], "a metavae run, not a vae"),
        ([held_out_runs["vae"], "--refine-steps", "3"], "a vae run has no u"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        result = CliRunner().invoke(
            main, ["fewshot-curve", *args, "--samples", "2", "--out", str(out), "--no-progress"]
        )
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
        assert not out.exists()


def test_the_api_gives_the_commands_curve(held_out_runs, tmp_path, monkeypatch):
    import pyrohvae as ph

    run, vae = ph.load(held_out_runs["hypervae"]), ph.load(held_out_runs["vae"])
    result = run.fewshot_curve(shots=(1,), per_task=2, samples=4, vae=vae, keep_in=tmp_path)
    assert result["images"] == 2 and [r["model"] for r in result["rows"]] == ["k=1"]
    expected = result["vae"]["nll"] - result["rows"][0]["nll"]
    assert result["gains"][0]["gain"] == pytest.approx(expected, abs=1e-4)
    monkeypatch.setattr(fewshot, "scores_given_shots", lambda *a, **k: pytest.fail("scored again"))
    assert run.fewshot_curve(shots=(1,), per_task=2, samples=4, vae=vae, keep_in=tmp_path) == result


def test_refine_lowers_the_shots_loss_and_leaves_the_weights_alone():
    from pyro.infer import Trace_ELBO

    program = program_of(random_context=True)
    x = shots(8).reshape(2, 4, 1, 28, 28)
    loc, scale = program.inference.shots_posterior(x)
    before = {k: v.clone() for k, v in program.state_dict().items()}

    def loss(q):  # the shots' −ELBO under q(u), averaged over 32 draws from the same random state
        pyro.set_rng_seed(0)
        with torch.no_grad():
            elbo = Trace_ELBO(max_plate_nesting=2, num_particles=32, vectorize_particles=True)
            return float(elbo.differentiable_loss(program.model, program.guide, x, q_u=q))

    refined = fewshot.refine(program, x, loc, scale, steps=20, lr=0.05)
    assert refined[0].shape == loc.shape and not torch.equal(refined[0], loc)
    assert loss(refined) < loss((loc, scale))
    assert all(torch.equal(v, program.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in program.parameters())


def test_leave_one_out_scores_each_shot_among_the_others_of_its_task():
    x = shots(6).reshape(2, 3, 1, 28, 28)
    scored, others = fewshot.leave_one_out(x)
    assert scored.shape == (6, 1, 1, 28, 28) and others.shape == (6, 2, 1, 28, 28)
    for t, i in itertools.product(range(2), range(3)):
        assert torch.equal(scored[3 * t + i, 0], x[t, i])
        assert torch.equal(others[3 * t + i], x[t, [j for j in range(3) if j != i]])


def test_refine_loo_lowers_the_loss_of_each_shot_under_the_others(monkeypatch):
    """With a shots prior, `loo` refines q(u) on the objective of the k-shot model: each shot under
    p(z | u, the other shots), KL(u) once a task (each of a task's k rows carrying 1/k of it), and
    lowers it; where a task has one shot there is no other, and it is the plain refinement."""
    from pyro.infer import Trace_ELBO

    program = program_of(**shots_options("shots-k", False, "none", 0, False, 32, 0, False, 0))
    x = shots(8).reshape(2, 4, 1, 28, 28)
    loc, scale = program.inference.shots_posterior(x)
    scored, others = fewshot.leave_one_out(x)

    def loo_loss(q):  # the tasks' leave-one-out −ELBO under q(u), 8 draws from one random state
        pyro.set_rng_seed(0)
        with torch.no_grad():  # one draw at a time: the shots prior's mixture has no particle dim
            elbo = Trace_ELBO(max_plate_nesting=2, num_particles=8)
            q = tuple(p.repeat_interleave(4, 0) for p in q)
            return float(
                elbo.differentiable_loss(
                    program.model, program.guide, scored, q_u=q, shots=others, kl_u_weight=0.25
                )
            )

    calls, real = [], Trace_ELBO.differentiable_loss

    def spy(self, model, guide, *args, **kwargs):
        calls.append((args, kwargs))
        return real(self, model, guide, *args, **kwargs)

    before = loo_loss((loc, scale))
    monkeypatch.setattr(Trace_ELBO, "differentiable_loss", spy)
    refined = fewshot.refine(program, x, loc, scale, steps=10, lr=0.05, loo=True)
    monkeypatch.undo()
    (args, kwargs), *_ = calls
    assert torch.equal(args[0], scored) and torch.equal(kwargs["shots"], others)
    assert kwargs["kl_u_weight"] == 0.25 and torch.equal(kwargs["q_u"][0], loc.repeat_interleave(4, 0))
    assert loo_loss(refined) < before - 5
    one = x[:, :1]
    pyro.set_rng_seed(1)
    single_loo = fewshot.refine(program, one, loc, scale, steps=5, loo=True)
    pyro.set_rng_seed(1)
    single = fewshot.refine(program, one, loc, scale, steps=5)
    assert all(torch.equal(a, b) for a, b in zip(single_loo, single))


@pytest.mark.parametrize(
    "layout, pixel_bias, name, paper_rank",
    [
        ("paper", False, "fc2.bias", True),
        ("spatial", False, "fc2.bias", False),
        ("paper", True, "pixel_bias", False),
    ],
)
def test_how_many_directions_the_task_can_move_a_tensor(layout, pixel_bias, name, paper_rank):
    """The part of a generated tensor that depends on u lies in the span of U·H·V over all H: for a
    bias generated as (n, 1), the h_dim columns of U; generated as a (channels, positions) or (28, 28)
    matrix, up to h_dim² directions."""
    program = program_of(theta_layout=layout, pixel_bias=pixel_bias)
    generated = program.theta.decoder(torch.randn(200, 1, 10) * 3)[name].detach().reshape(200, -1)
    rank = int(torch.linalg.matrix_rank(generated - generated.mean(0), rtol=1e-4))
    h_dim = program.config.h_dim
    assert rank <= h_dim if paper_rank else rank > h_dim


@pytest.mark.parametrize(
    "options, message",
    [
        ({"model": "vae", "u_dim": 5}, "--u-dim, --h-dim and --theta-layout apply to hypervae only"),
        ({"theta_layout": "square"}, "unknown θ layout 'square'"),
        ({"kl_u_weight": 0.0}, "--kl-u-weight 0.0: a weight above 0"),
        (
            {"model": "vae", "kl_u_weight": 0.5},
            "--kl-u-warmup, --kl-u-weight and --kl-u-scale apply to hypervae only",
        ),
        ({"model": "vae", "kl_u_scale": "task"}, "--kl-u-scale apply to hypervae only"),
        ({"split_context": True, "random_context": True}, "give one"),
        ({"split_context": True, "batch_size": 1}, "--split-context needs --batch-size 2 or more"),
        ({"z_prior": "shots"}, "--z-prior shots needs --split-context"),
        (
            {"split_context": True, "shot_template": "mean"},
            "--shot-template needs --z-prior shots or shots-k",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_template": "all"},
            "unknown --shot-template 'all'",
        ),
        ({"split_context": True, "shot_features": True}, "--shot-features needs --z-prior shots or shots-k"),
        (
            {"z_prior": "shots-g", "split_context": True, "shot_template": "matched"},
            "--shot-template needs --z-prior shots or shots-k",
        ),
        ({"z_prior": "shots-g"}, "--z-prior shots-g needs --split-context"),
        ({"context_sizes": "uniform"}, "--context-sizes needs --split-context"),
        ({"split_context": True, "context_sizes": "even"}, "unknown --context-sizes 'even'"),
        ({"split_context": True, "shot_dims": 4}, "--shot-dims needs --z-prior shots, shots-k or shots-g"),
        (
            {"z_prior": "shots-g", "split_context": True, "shot_scales": 2},
            "--shot-scales 2 needs --z-prior shots or shots-k",
        ),
        (
            {"split_context": True, "shot_attention": 1},
            "--shot-attention needs --z-prior shots, shots-k or shots-g",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_attention_encoder": True},
            "--shot-attention-encoder needs --shot-attention N",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_attention": 3},
            "--shot-attention 3: heads that divide 32, its width",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_attention": 4, "shot_attention_dim": 30},
            "--shot-attention 4: heads that divide 30, its width (--shot-attention-dim)",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_attention_dim": 64},
            "--shot-attention-dim needs --shot-attention N",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_dims": 11},
            "--shot-dims 11: at most --z-dim (10)",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_attention_window": 5},
            "--shot-attention-window needs --shot-attention N",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_attention": 1, "shot_attention_window": 4},
            "--shot-attention-window 4: an odd side",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_attention": 1, "shot_attention_pixels": True},
            "--shot-attention-pixels needs --shot-attention-window W",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_template": "address", "warp_grid": 4},
            "--warp-grid needs --shot-template warp-address",
        ),
        (
            {"z_prior": "shots", "split_context": True, "shot_template": "warp-address", "warp_grid": 1},
            "--warp-grid 1: one control point",
        ),
        ({"no_shot_share": 0.1}, "--no-shot-share needs --split-context and --guide precision-pool"),
        (
            {"split_context": True, "no_shot_share": 0.1},
            "--no-shot-share needs --split-context and --guide precision-pool",
        ),
        (
            {"split_context": True, "guide": "precision-pool", "no_shot_share": 0.1, "elbo": "jit"},
            "--no-shot-share and --elbo jit",
        ),
        ({"u_reads_all": True}, "--u-reads-all needs --split-context"),
        (
            {"split_context": True, "u_alone_share": 0.2},
            "--u-alone-share needs --split-context and --z-prior",
        ),
        (
            {"z_prior": "shots", "split_context": True, "u_alone_share": 0.2, "elbo": "jit"},
            "--u-alone-share and --elbo jit",
        ),
        (
            {
                "z_prior": "shots",
                "split_context": True,
                "guide": "precision-pool",
                "no_shot_share": 0.5,
                "u_alone_share": 0.5,
            },
            "--no-shot-share and --u-alone-share leave no step that reads shots",
        ),
    ],
)
def test_the_few_shot_options_refuse_what_they_cannot_do(options, message):
    from pyrohvae.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig(dataset="omniglot", **options)


def test_kl_u_weight_scales_kl_u_after_the_warm_up():
    config = RunConfig(dataset="mnist", kl_u_weight=0.1, kl_u_warmup=10)
    assert config.kl_weights(5)[0] == pytest.approx(0.05) and config.kl_weights(50)[0] == pytest.approx(0.1)


@pytest.mark.data
def test_unseen_tasks_are_those_the_run_did_not_train_on(data_root):
    """A config made afresh does not know which tasks its run trained on; the run's own does."""
    from pyrohvae.config import RunConfig
    from pyrohvae.fewshot import unseen_tasks

    fresh = RunConfig(dataset="mnist", exclude_classes=["3"])
    with pytest.raises(ValueError, match="records no training tasks"):
        unseen_tasks(fresh, "test", data_root)
    trained = RunConfig(
        dataset="mnist", exclude_classes=["3"], train_tasks=[str(d) for d in range(10) if d != 3]
    )
    test = unseen_tasks(trained, "test", data_root)
    assert test.task_names == ["3"] and len(test) == 1010


def test_the_curve_figure_of_a_vae_run_draws_its_one_model_and_a_legend_of_it(tmp_path):
    import warnings

    from pyrohvae.fewshot import plot_curve

    result = {
        "data": "folder",
        "tasks": 3,
        "images": 12,
        "rows": [{"model": "vae", "shots": 0, "nll": 130.0, "nll_stderr": 1.5}],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns of a legend with nothing labelled in it
        plot_curve(result, "vae (run)", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_an_address_is_summed_out_of_the_likelihood_exactly():
    """`--shot-template address`: the model's log p(z | shots) + log p(x | z, shots) equals log Σ_a
    p(a) p(z | a) p(x | z, a), the address a enumerated, where p(x | z, a) reads z's logits plus the
    template filter on shot a's pixels (±1), and on a blank for a = 0 (N(0, I)'s share), which is
    also the model of no shots."""
    import pyro.distributions as dist
    import torch.nn.functional as F

    from pyrohvae.models import address_logits, likelihood, shot_logits, shots_prior
    from pyrohvae.nets import decode

    program = program_of(
        split_context=True, guide="precision-pool", z_prior="shots-k", z_dim=4, shot_template="address"
    )
    theta, tasks, items, k = program.theta, 2, 5, 3
    g = torch.Generator().manual_seed(1)
    u = torch.randn(tasks, 1, program.config.u_dim, generator=g)
    with torch.no_grad():
        params = theta.decoder(u)
        weight = params["template.weight"]
        params["template.weight"] = torch.randn(weight.shape, generator=g)  # not silent
        params["template.bias"] = params["template.bias"] + 0.3
        given = torch.stack([shots(k, seed=1), shots(k, seed=2)])
        p_z, _ = shots_prior(theta, program.shot_prior, u, given)
        z = torch.randn(tasks, items, 4, generator=g)
        logits = decode(params, z)
        per = address_logits(params, z, given)
        assert per.shape == (tasks, items, k + 1, 1, 28, 28)
        for t in range(tasks):
            w, b = params["template.weight"][t].reshape(1, 1, 5, 5), params["template.bias"][t].reshape(1)
            blank = F.conv2d(torch.zeros(1, 1, 28, 28), w, b, padding=2)
            filtered = F.conv2d(2 * given[t] - 1, w, b, padding=2)  # (k, 1, 28, 28)
            assert torch.allclose(per[t, :, 0], logits[t] + blank, atol=1e-5)
            assert torch.allclose(per[t, :, 1:], logits[t].unsqueeze(1) + filtered, atol=1e-5)
        assert torch.allclose(shot_logits(theta, params, z), per[:, :, 0], atol=1e-5)
        x = (torch.rand(tasks, items, 1, 28, 28, generator=g) < 0.3).float()
        summed = p_z.log_prob(z) + likelihood(per, z, p_z).log_prob(x)
        joint = (
            p_z.mixture_distribution.logits  # log p(a), (tasks, 1, k + 1)
            + p_z.component_distribution.log_prob(z.unsqueeze(-2))  # log p(z | a)
            + dist.Bernoulli(logits=per).to_event(3).log_prob(x.unsqueeze(2))  # log p(x | z, a)
        )
        assert summed.shape == (tasks, items)
        assert torch.allclose(summed, joint.logsumexp(-1), rtol=1e-5)
        # a is no blend: the shots' mean image through the filter gives another likelihood
        blend = logits.unsqueeze(2) + per[:, :, 1:].sub(logits.unsqueeze(2)).mean(2, keepdim=True)
        assert not torch.allclose(
            summed, p_z.log_prob(z) + dist.Bernoulli(logits=blend[:, :, 0]).to_event(3).log_prob(x), rtol=1e-3
        )


@pytest.mark.parametrize("grad", [False, True])
def test_a_deep_address_decodes_each_shot_as_the_deep_template_decodes_it(grad):
    """`--shot-template deep-address`: the logits for address a are the decoder's for z with shot
    a's image (a blank for a = 0) in its 14×14 map and through the filter, as `deep` decodes one
    image; both paths of the decoder (training, and scoring without gradients)."""
    import torch.nn.functional as F

    from pyrohvae.models import address_logits
    from pyrohvae.nets import decode

    program = program_of(
        split_context=True, guide="precision-pool", z_prior="shots-k", z_dim=4, shot_template="deep-address"
    )
    tasks, items, k = 2, 3, 2
    g = torch.Generator().manual_seed(2)
    with torch.set_grad_enabled(grad):
        params = program.theta.decoder(torch.randn(tasks, 1, program.config.u_dim, generator=g))
        for name in ("template_in.weight", "template.weight"):
            params[name] = torch.randn(params[name].shape, generator=g)
        given = torch.stack([shots(k, seed=3), shots(k, seed=4)])
        z = torch.randn(tasks, items, 4, generator=g)
        per = address_logits(params, z, given)
        assert per.shape == (tasks, items, k + 1, 1, 28, 28)
        images = torch.cat([torch.zeros(tasks, 1, 1, 28, 28), 2 * given - 1], 1)
        for a in range(k + 1):
            image = images[:, a : a + 1].expand(tasks, items, 1, 28, 28)
            alone = decode(params, z, image)
            for t in range(tasks):
                w, b = params["template.weight"][t].reshape(1, 1, 5, 5), params["template.bias"][t].reshape(1)
                alone[t] += F.conv2d(images[t, a : a + 1], w, b, padding=2)
            assert torch.allclose(per[:, :, a], alone, atol=1e-4)
        assert not torch.allclose(per[:, :, 1], per[:, :, 2], atol=1e-2)


def test_a_warped_address_moves_each_shot_by_the_offset_of_z_from_its_code():
    """`--shot-template warp-address`: a z at a shot's code takes that shot's image unmoved, whatever
    the warp's weights; the warp's bias alone moves every shot (by 2 pixels here, the background
    coming in at the edge); address 0 stays blank."""
    from pyrohvae.models import warped

    tasks, items, k, z_dim = 2, 3, 2, 4
    g = torch.Generator().manual_seed(5)
    given = torch.stack([shots(k, seed=6), shots(k, seed=7)])
    codes = torch.randn(tasks, 1, k, z_dim, generator=g)
    params = {
        "warp.weight": torch.randn(tasks, 1, 6, z_dim, generator=g),
        "warp.bias": torch.zeros(tasks, 1, 6),
    }
    z = torch.randn(tasks, items, z_dim, generator=g)
    z[:, 0] = codes[:, 0, 1]  # item 0 at shot 1's code
    images = warped(params, z, codes, given)
    assert images.shape == (tasks, items, k + 1, 1, 28, 28)
    assert images[:, :, 0].eq(0).all()
    assert torch.allclose(images[:, 0, 2], 2 * given[:, 1] - 1, atol=1e-5)
    assert not torch.allclose(images[:, 1, 2], 2 * given[:, 1] - 1, atol=1e-2)
    params = {"warp.weight": torch.zeros(tasks, 1, 6, z_dim), "warp.bias": torch.zeros(tasks, 1, 6)}
    params["warp.bias"][..., 2] = 4 / 28  # x + 2 pixels, in affine_grid's [-1, 1]
    moved = warped(params, z, codes, given)[:, :, 1:]
    signs = (2 * given - 1).unsqueeze(1).expand_as(moved)
    assert torch.allclose(moved[..., :-2], signs[..., 2:], atol=1e-5)
    assert torch.allclose(moved[..., -2:], torch.tensor(-1.0), atol=1e-5)


def test_a_warp_grid_bends_each_shot_by_the_offset_of_z_from_its_code():
    """`--warp-grid`: a z at a shot's code takes that shot as the affine move alone does, whatever the
    field's weights; the same displacement at every control point moves every shot as a whole (2
    pixels here), and one control point's displacement moves the pixels near it and none two control
    points away (rows and columns from 19 here, past the bicubic kernel's reach)."""
    from pyrohvae.models import warped

    tasks, items, k, z_dim, side = 2, 3, 2, 4, 4
    g = torch.Generator().manual_seed(5)
    given = torch.stack([shots(k, seed=6), shots(k, seed=7)])
    codes = torch.randn(tasks, 1, k, z_dim, generator=g)
    z = torch.randn(tasks, items, z_dim, generator=g)
    z[:, 0] = codes[:, 0, 1]  # item 0 at shot 1's code
    affine = {"warp.weight": torch.zeros(tasks, 1, 6, z_dim), "warp.bias": torch.zeros(tasks, 1, 6)}
    field = {
        "flow.weight": torch.randn(tasks, 1, 2 * side * side, z_dim, generator=g),
        "flow.bias": torch.zeros(tasks, 1, 2 * side * side),
    }
    images = warped({**affine, **field}, z, codes, given)
    signs = 2 * given - 1
    assert torch.allclose(images[:, 0, 2], signs[:, 1], atol=1e-5)
    assert not torch.allclose(images[:, 1, 2], signs[:, 1], atol=1e-2)
    field = {
        "flow.weight": torch.zeros_like(field["flow.weight"]),
        "flow.bias": torch.zeros(tasks, 1, 2, side, side),
    }
    field["flow.bias"][:, :, 0] = 4 / 28  # x + 2 pixels everywhere, in affine_grid's [-1, 1]
    field["flow.bias"] = field["flow.bias"].flatten(-3)
    moved = warped({**affine, **field}, z, codes, given)[:, :, 1:]
    assert torch.allclose(moved[..., :-2], signs.unsqueeze(1).expand_as(moved)[..., 2:], atol=1e-5)
    corner = torch.zeros(tasks, 1, 2, side, side)
    corner[:, :, 1, 0, 0] = 0.3  # the top left control point's y
    field["flow.bias"] = corner.flatten(-3)
    bent = warped({**affine, **field}, z, codes, given)[:, :, 1:]
    unmoved = signs.unsqueeze(1).expand_as(bent)
    assert not torch.allclose(bent[..., :8, :8], unmoved[..., :8, :8], atol=1e-2)
    assert torch.allclose(bent[..., 19:, 19:], unmoved[..., 19:, 19:], atol=1e-5)  # past its reach
