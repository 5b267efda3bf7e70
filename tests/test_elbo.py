"""The loss Pyro's ELBO returns is the paper's objective (Eq. 9, scaled by 1/|D|)."""

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyrohvae.config import RunConfig
from pyrohvae.nets import decode, encode
from pyrohvae.program import build

LOG_2PI = math.log(2 * math.pi)


def normal_log_density(v, loc, scale):
    return (-0.5 * ((v - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def normal_kl(loc, scale):
    """KL(N(loc, scale²) || N(0, I)), summed over the last dim."""
    return (0.5 * (loc**2 + scale**2 - 1) - torch.log(scale)).sum(-1)


def bernoulli_log_lik(logits, x):
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(-3).sum(-1)


def setup_program(**options):
    pyro.clear_param_store()
    torch.manual_seed(0)
    program = build(RunConfig(dataset="mnist", model="hypervae", **options)).double()
    x = (torch.rand(2, 7, 1, 28, 28) < 0.3).double()  # 2 tasks of 7 items
    return program, x


@pytest.fixture
def setup():
    return setup_program()


def guide_draws(program, x, seed):
    """The u and z that the ELBO's own guide run draws for this seed, and q(u|d)'s parameters."""
    pyro.set_rng_seed(seed)
    trace = poutine.trace(program.guide).get_trace(x)
    q_u = trace.nodes["u"]["fn"].base_dist
    return trace.nodes["u"]["value"], trace.nodes["z"]["value"], q_u.loc, q_u.scale


@pytest.mark.parametrize(
    "kl_u_weight,kl_z_weight,z_prior",
    [(1.0, 1.0, "normal"), (0.25, 1.0, "normal"), (1.0, 7.0, "normal"), (1.0, 1.0, "task")],
)
def test_trace_elbo_is_eq9_for_the_same_noise(kl_u_weight, kl_z_weight, z_prior):
    """With a KL(u) warm-up weight w < 1, only the per-task term is multiplied by w; with a KL(z)
    weight, only log q(z|x) − log p(z); with p(z | u) generated, p(z) is θ(u)'s own Gaussian."""
    program, x = setup_program(z_prior=z_prior)
    T, N = x.shape[:2]
    pyro.set_rng_seed(3)
    loss = Trace_ELBO(max_plate_nesting=2).loss(
        program.model, program.guide, x, None, kl_u_weight, kl_z_weight
    )
    u, z, u_loc, u_scale = guide_draws(program, x, seed=3)
    with torch.no_grad():
        z_loc, z_scale = encode(program.theta.encoder(u), x)
        theta = program.theta.decoder(u)
        logits = decode(theta, z)
        if z_prior == "task":
            prior_loc, prior_scale = theta["zprior.loc"], theta["zprior.log_scale"].exp()
            assert prior_loc.shape == (T, 1, 10) and not torch.allclose(prior_loc[0], prior_loc[1])
        else:
            prior_loc, prior_scale = torch.zeros_like(z), torch.ones_like(z)
        per_item = -bernoulli_log_lik(logits, x) + kl_z_weight * (
            normal_log_density(z, z_loc, z_scale) - normal_log_density(z, prior_loc, prior_scale)
        )  # (T, N): L(x_i | z, θ(u)) + log q(z|x) - log p(z)
        per_task = normal_log_density(u, u_loc, u_scale) - normal_log_density(
            u, torch.zeros_like(u), torch.ones_like(u)
        )  # (T, 1): log q(u|d) - log p(u)
        by_hand = (per_item.sum() + kl_u_weight * per_task.sum()) / (T * N)
    assert loss == pytest.approx(float(by_hand), abs=1e-4)


def test_mean_field_elbo_is_eq9_with_analytic_kls(setup):
    """Eq. 9 as written: E[L(x|z,θ)] + KL(q(z|x)||p(z)) per item, KL(q(u|D)||p(u)) per task."""
    program, x = setup
    T, N = x.shape[:2]
    pyro.set_rng_seed(5)
    loss = TraceMeanField_ELBO(max_plate_nesting=2).loss(program.model, program.guide, x)
    u, z, u_loc, u_scale = guide_draws(program, x, seed=5)
    with torch.no_grad():
        z_loc, z_scale = encode(program.theta.encoder(u), x)
        logits = decode(program.theta.decoder(u), z)
        per_item = -bernoulli_log_lik(logits, x) + normal_kl(z_loc, z_scale)
        by_hand = (per_item.sum() + normal_kl(u_loc, u_scale).sum()) / (T * N)
    assert loss == pytest.approx(float(by_hand), abs=1e-4)


def test_vae_trace_elbo_is_the_negative_elbo(setup):
    pyro.clear_param_store()
    torch.manual_seed(0)
    program = build(RunConfig(dataset="mnist", model="vae")).double()
    x = setup[1][:1]
    pyro.set_rng_seed(4)
    loss = Trace_ELBO(max_plate_nesting=2).loss(program.model, program.guide, x)
    pyro.set_rng_seed(4)
    z = poutine.trace(program.guide).get_trace(x).nodes["z"]["value"]
    with torch.no_grad():
        z_loc, z_scale = program.guide_nets.encoder(x)
        per_item = (
            -bernoulli_log_lik(program.decoder(z), x)
            + normal_log_density(z, z_loc, z_scale)
            - normal_log_density(z, torch.zeros_like(z), torch.ones_like(z))
        )
    assert loss == pytest.approx(float(per_item.mean()), abs=1e-4)


def test_theta_is_recorded_in_the_traces_on_request(setup):
    program, x = setup
    guide_trace = poutine.trace(program.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(program.model, trace=guide_trace)).get_trace(x)
    samples = [
        n for t in (guide_trace, model_trace) for n, site in t.nodes.items() if site["type"] == "sample"
    ]
    assert not any(n.startswith("theta.") for n in samples)  # θ's own parameters are param sites
    loss = Trace_ELBO(max_plate_nesting=2).loss
    pyro.set_rng_seed(0)
    without = loss(program.model, program.guide, x)
    pyro.set_rng_seed(0)
    assert loss(program.model, program.guide, x, record_theta=True) == pytest.approx(without, rel=1e-6)

    guide_trace = poutine.trace(program.guide).get_trace(x, record_theta=True)
    replayed = poutine.replay(program.model, trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(x, record_theta=True)
    assert model_trace.nodes["theta.decoder.fc2.weight"]["value"].shape == (2, 1, 3136, 100)
    assert guide_trace.nodes["theta.encoder.conv1.weight"]["value"].shape == (2, 1, 32, 1, 3, 3)
    # the model builds only the decoder half, the guide only the encoder half
    assert not any(n.startswith("theta.encoder") for n in model_trace.nodes)
    assert not any(n.startswith("theta.decoder") for n in guide_trace.nodes)
