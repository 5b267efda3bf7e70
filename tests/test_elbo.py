"""The loss Pyro's ELBO returns is the paper's objective (Eq. 9, scaled by 1/|D|)."""

import itertools
import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from conftest import SHOTS_MODELS, shots_options
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyrohvae import nets
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


@pytest.mark.parametrize("split", [False, True])
def test_kl_u_at_the_task_scale_counts_it_once_per_task_s_data(split):
    """`--kl-u-scale task`: in training a minibatch of N of a task's n images carries N / n of its
    KL(u), the data terms as before (with a split context KL(u) still spread over all N); in
    scoring KL(u) counts once per minibatch, as without the option."""
    x = (torch.rand(2, 7, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).double()
    task, kwargs = torch.tensor([1, 0]), {"context_size": 3} if split else {}
    elbo = Trace_ELBO(max_plate_nesting=2)
    losses = {}
    for scale in ("minibatch", "task"):
        program, _ = setup_program(kl_u_scale=scale, split_context=split, guide="precision-pool")
        program.task_sizes = torch.tensor([14, 70])
        program.train()
        pyro.set_rng_seed(3)
        losses[scale] = elbo.loss(program.model, program.guide, x, task, **kwargs)
    pyro.set_rng_seed(3)
    guide = poutine.trace(program.guide).get_trace(x, task, **kwargs)
    model = poutine.trace(poutine.replay(program.model, trace=guide)).get_trace(x, task, **kwargs)
    u = guide.nodes["u"]["value"]
    kl_u = guide.nodes["u"]["fn"].log_prob(u) - model.nodes["u"]["fn"].log_prob(u)  # (T, 1), one draw
    share = torch.tensor([[7 / 70], [7 / 14]], dtype=torch.float64)  # task 1 has 70 images, task 0 14
    scored, spread = (4, 4 / 7) if split else (7, 1.0)
    expected = float((kl_u.detach() * (share - 1)).sum() * spread / (2 * scored))
    assert abs(expected) > 0.05
    assert losses["task"] - losses["minibatch"] == pytest.approx(expected, rel=1e-6)
    program.eval()
    pyro.set_rng_seed(3)
    in_scoring = elbo.loss(program.model, program.guide, x, task, **kwargs)
    assert in_scoring == pytest.approx(losses["minibatch"], rel=1e-9)


@pytest.mark.parametrize(*SHOTS_MODELS)
def test_the_shots_prior_is_a_mixture_at_the_contexts_codes(
    z_prior, features, template, attention, in_encoder, width, window, pixels, grid
):
    """With `--z-prior shots` and a context of k = 3, each scored image's p(z) is N(0, I) with
    weight w and a Gaussian at each context image's code q(z | shot, θ(u)), widened, with weight
    (1 − w) / 3: the loss is Eq. 9 with that log p(z), and only the other 4 items scored. With
    `shots-k`, the log widening and the logit of w are less their slopes times log 3. With
    `--shot-features`, the decoder reads z and the shots' trunk features weighed by each shot's
    responsibility for z under that mixture. With `--shot-template`, the logits gain the shots as
    ±1 images through the 5×5 filter of the task's θ(u), weighed by the same responsibilities
    (matched) or by their components' weights (1 − w) / 3 (mean); `deep` also adds the matched image
    through θ(u)'s 3×3 stride-2 convolution to deconv1's output before its ReLU. With `shots-g`, one
    more component of logit s + s' log 3 against N(0, I)'s log w and each shot's log((1 − w) / 3):
    the predictive of a code whose task's centre c ~ N(0, b²) has the 3 codes ~ N(c, v²), the
    Gaussian N(Σ loc / v² / P, 1 / P + v²) with P = 1 / b² + 3 / v². With `--shot-attention`, the
    decoder's first map attends to the shots' maps (`attend_decode`), and with
    `--shot-attention-encoder` the encoder's last map to the shots' maps by its own convolutions
    (`attend_encode`), for q(z) and not for the shots' own codes; `--shot-attention-dim` their width.
    With `--shot-attention-window`, the decoder's 14×14 map also reads the shots' 14×14 maps near each
    position (`fine_by_hand`), and with `--shot-attention-pixels` the logits gain the shots' pixels
    read by the same weights, through a 3×3 filter. With `warp-address` each addressed shot is moved
    by z's offset from its code, and with `--warp-grid` also bent (`warp_by_hand`); with `shots-g`
    the set's component is an address too, whose image is the mean of the k shots', each as moved
    for its own address."""
    program, x = setup_program(
        **shots_options(z_prior, features, template, attention, in_encoder, width, window, pixels, grid)
    )
    T, N, k = *x.shape[:2], 3
    log_widen, logit = torch.linspace(-2, 0, 10, dtype=x.dtype), torch.tensor(-1.5, dtype=x.dtype)
    with torch.no_grad():
        for name, layer in [
            *program.theta.layers["decoder"].items(),
            *program.theta.layers["encoder"].items(),
        ]:
            # silent at the start: give the shots a say
            if name.startswith(("template", "attend_out", "fine_out", "fine_pixel", "warp", "flow")):
                # an addressed shot's filter small enough that the shots' addresses weigh in the sum
                spread = 0.02 if template.endswith("address") and name.startswith("template") else 0.3
                layer.B.normal_(0, spread)
                layer.U.normal_(0, spread)
        program.shot_prior.log_widen.copy_(log_widen)
        program.shot_prior.prior_logit.fill_(logit)
        if z_prior == "shots-g":
            program.shot_prior.log_between.copy_(torch.linspace(-0.5, 0.5, 10))
            program.shot_prior.log_within.copy_(torch.linspace(-1.5, -0.2, 10))
            program.shot_prior.set_logit.fill_(0.4)
            program.shot_prior.set_slope.fill_(-0.2)
        if z_prior in ("shots-k", "shots-g"):
            program.shot_prior.widen_slope.copy_(torch.linspace(0.5, -0.3, 10))
            program.shot_prior.logit_slope.fill_(0.7)
            log_widen = log_widen - torch.linspace(0.5, -0.3, 10, dtype=x.dtype) * math.log(k)
            logit = logit - 0.7 * math.log(k)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO(max_plate_nesting=2).loss(program.model, program.guide, x, None, context_size=k)
    pyro.set_rng_seed(3)
    trace = poutine.trace(program.guide).get_trace(x, None, context_size=k)
    u, z = trace.nodes["u"]["value"], trace.nodes["z"]["value"]
    q_u = trace.nodes["u"]["fn"].base_dist
    with torch.no_grad():
        scored = x[:, k:]
        encoder = program.theta.encoder(u)
        z_loc, z_scale = encode(encoder, scored)
        if in_encoder:
            for t in range(T):
                p = {n: v[t, 0] for n, v in encoder.items()}
                z_loc[t], z_scale[t] = attend_encode(p, scored[t], x[t, :k], attention)
        assert in_encoder == ("attend_out.weight" in encoder)
        shot_loc, shot_scale = encode(encoder, x[:, :k])  # (T, k, z_dim)
        widen, w = log_widen.exp(), torch.sigmoid(logit)
        components = [math.log(w) + normal_log_density(z, torch.zeros_like(z), torch.ones_like(z))]
        for j in range(k):
            spread = (shot_scale[:, j : j + 1] ** 2 + widen**2).sqrt()
            components.append(math.log((1 - w) / k) + normal_log_density(z, shot_loc[:, j : j + 1], spread))
        if z_prior == "shots-g":
            b2 = torch.linspace(-0.5, 0.5, 10, dtype=x.dtype).exp() ** 2
            v2 = torch.linspace(-1.5, -0.2, 10, dtype=x.dtype).exp() ** 2
            precision = 1 / b2 + k / v2
            centre = shot_loc.sum(1, keepdim=True) / v2 / precision
            spread = (1 / precision + v2).sqrt()
            components.append(0.4 - 0.2 * math.log(k) + normal_log_density(z, centre, spread))
            # the three groups' weights w, 1 − w and e^logit normalised together
            norm = torch.logsumexp(torch.tensor([math.log(w), math.log(1 - w), 0.4 - 0.2 * math.log(k)]), 0)
            components = [c - norm for c in components]
        log_p_z = torch.logsumexp(torch.stack(components), 0)  # (T, N − k)
        decoded = z
        r = torch.stack(components, -1).softmax(-1)[..., 1:]  # (T, N − k, k)
        if features:
            shot_h = nets.features(encoder, x[:, :k])  # (T, k, hidden)
            decoded = torch.cat([z, (r.unsqueeze(-1) * shot_h.unsqueeze(1)).sum(-2)], -1)
        decoder = program.theta.decoder(u)
        logits = decode(decoder, decoded)
        if attention:
            for t in range(T):
                p = {n: v[t, 0] for n, v in decoder.items()}
                logits[t] = attend_decode(p, z[t], x[t, :k], attention, window)
        assert bool(attention) == ("attend_out.weight" in decoder)
        assert bool(window) == ("fine_out.weight" in decoder)
        assert pixels == ("fine_pixel.weight" in decoder)
        assert not attention or decoder["attend_pos"].shape[-1] == width
        if template == "mean":
            r = torch.full_like(r, (1 - w) / k)
        log_lik = bernoulli_log_lik(logits, scored)
        if template.endswith("address"):  # one shot's image by the address a, summed out
            # log p(a | z), (T, N − k, k + 1); with shots-g one address more, the set's: every shot
            log_r = torch.stack(components, -1).log_softmax(-1)
            shot_images = []
            for j in range(k):
                image = (2 * x[:, j : j + 1] - 1).expand_as(scored)
                if template == "warp-address":
                    image = torch.stack(
                        [warp_by_hand(decoder, t, z[t] - shot_loc[t, j], x[t, j]) for t in range(T)]
                    )
                shot_images.append(image)
            whole_set = [torch.stack(shot_images).mean(0)] if z_prior == "shots-g" else []
            per_address = []
            for a, image in enumerate([torch.zeros_like(scored), *shot_images, *whole_set]):
                at = logits.clone()
                for t in range(T):
                    if template == "deep-address":
                        at[t] = deep_decode({n: p[t, 0] for n, p in decoder.items()}, decoded[t], image[t])
                    kernel, bias = decoder["template.weight"][t, 0], decoder["template.bias"][t, 0]
                    at[t] = at[t] + F.conv2d(image[t], kernel, bias, padding=2)
                per_address.append(log_r[..., a] + bernoulli_log_lik(at, scored))
            log_lik = torch.logsumexp(torch.stack(per_address), 0)
        elif template != "none":
            signs = 2 * x[:, :k] - 1
            for t in range(T):
                image = (r[t, :, :, None, None, None] * signs[t]).sum(1)  # (N − k, 1, 28, 28)
                if template == "deep":
                    logits[t] = deep_decode({n: p[t, 0] for n, p in decoder.items()}, decoded[t], image)
                kernel, bias = decoder["template.weight"][t, 0], decoder["template.bias"][t, 0]
                logits[t] = logits[t] + F.conv2d(image, kernel, bias, padding=2)
            log_lik = bernoulli_log_lik(logits, scored)
        assert (template != "none") == ("template.weight" in decoder)
        assert (template in ("deep", "deep-address")) == ("template_in.weight" in decoder)
        assert (template == "warp-address") == ("warp.weight" in decoder)
        assert bool(grid) == ("flow.weight" in decoder)
        per_item = -log_lik + normal_log_density(z, z_loc, z_scale) - log_p_z
        per_task = normal_log_density(u, q_u.loc, q_u.scale) - normal_log_density(
            u, torch.zeros_like(u), torch.ones_like(u)
        )
        # per scored image; KL(u) spread over all N items as without a split: (N − k) / N of it
        by_hand = (per_item.sum() + (N - k) / N * per_task.sum()) / (T * (N - k))
    assert z.shape[:2] == (T, N - k)
    assert loss == pytest.approx(float(by_hand), abs=1e-4)


def warp_by_hand(decoder: dict, t: int, offset: torch.Tensor, shot: torch.Tensor) -> torch.Tensor:
    """`--shot-template warp-address` written out for task t: the shot (1, 28, 28) moved for each of
    the n drawings by the affine map identity + warp(offset), offset (n, z_dim) z less the shot's
    code, and with `--warp-grid` G the sampling grid bent by flow(offset), G×G control points of (x, y)
    displacements resized bicubically to 28×28; sampled bilinearly with zeros outside, as ±1:
    (n, 1, 28, 28)."""
    move = F.linear(offset, decoder["warp.weight"][t, 0], decoder["warp.bias"][t, 0])
    affine = move.reshape(-1, 2, 3) + torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=move.dtype)
    grid = F.affine_grid(affine, (len(offset), 1, 28, 28), align_corners=False)
    if "flow.weight" in decoder:
        points = F.linear(offset, decoder["flow.weight"][t, 0], decoder["flow.bias"][t, 0])
        side = int((points.shape[-1] // 2) ** 0.5)
        field = F.interpolate(points.reshape(-1, 2, side, side), (28, 28), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1)
    return 2 * F.grid_sample(shot.expand(len(offset), 1, 28, 28), grid, align_corners=False) - 1


def deep_decode(p: dict, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The main decoder of one task's θ, written out, with `--shot-template deep`'s image added to
    deconv1's output."""
    h = F.relu(F.linear(F.relu(F.linear(z, p["fc1.weight"], p["fc1.bias"])), p["fc2.weight"], p["fc2.bias"]))
    h = F.conv_transpose2d(h.reshape(-1, 64, 7, 7), p["deconv1.weight"], p["deconv1.bias"], 2, 1, 1)
    h = F.relu(h + F.conv2d(image, p["template_in.weight"], p["template_in.bias"], stride=2, padding=1))
    return F.conv_transpose2d(h, p["deconv2.weight"], p["deconv2.bias"], 2, 1, 1)


def attend_by_hand(p: dict, h: torch.Tensor, maps: torch.Tensor, heads: int) -> torch.Tensor:
    """`--shot-attention` written out for one task's θ: each of the 49 positions of the map h (n, 64,
    7, 7), by a query of its 64 features plus its position's embedding, reads in each of the heads
    (width / heads of the width's dimensions each, the width `attend_pos`'s) a softmax mixture over
    the shots' 7×7 positions of `maps` (k, 64, 7, 7) (keys: their features plus the position's
    embedding; one more key of value 0), scaled by 1/√(width / heads), and adds the heads' reads back
    through `attend_out`."""

    def linear(v, name):
        return F.linear(v, p[f"{name}.weight"], p[f"{name}.bias"])

    m = maps.permute(0, 2, 3, 1).reshape(-1, 64)  # (k · 49, 64), shot by shot, rows of positions
    pos = p["attend_pos"]
    width = pos.shape[-1]
    keys = torch.cat([linear(m, "attend_key") + pos.repeat(len(maps), 1), p["attend_null"][None]])
    values = torch.cat([linear(m, "attend_value"), torch.zeros(1, width, dtype=m.dtype)])
    q = linear(h.permute(0, 2, 3, 1).reshape(-1, 49, 64), "attend_query") + pos  # (n, 49, width)
    reads = []
    for part in torch.arange(width).chunk(heads):
        scores = q[..., part] @ keys[:, part].T / math.sqrt(len(part))
        reads.append(scores.softmax(-1) @ values[:, part])
    read = linear(torch.cat(reads, -1), "attend_out")  # (n, 49, 64)
    return h + read.reshape(-1, 7, 7, 64).permute(0, 3, 1, 2)


def convs_by_hand(p: dict, x: torch.Tensor, prefix: str = "") -> torch.Tensor:
    """The encoder's two convolutions (or the decoder's reader of the shots, `shots_`), with ReLUs."""
    for name in ("conv1", "conv2"):
        x = F.relu(F.conv2d(x, p[f"{prefix}{name}.weight"], p[f"{prefix}{name}.bias"], stride=2, padding=1))
    return x


def fine_by_hand(p: dict, h: torch.Tensor, maps: torch.Tensor, window: int, shots: torch.Tensor):
    """`--shot-attention-window` written out for one task's θ: each position (i, j) of the 14×14 map
    h (n, 32, 14, 14), by a query of its features, reads a softmax mixture over the positions
    (i + dy, j + dx) of the shots' maps (k, 32, 14, 14) for every offset of the window that stays on
    the map (keys: their features plus the offset's embedding, offsets in rows) and one more key of
    value 0, scaled by 1/√width, and adds the read back through `fine_out`. Returns that map and the
    image (n, 1, 28, 28) whose pixels (2i + a, 2j + b) mix by the same weights the shots' pixels
    (2(i + dy) + a, 2(j + dx) + b), as ±1, and 0 for the null key (`--shot-attention-pixels`)."""

    def linear(v, name):
        return F.linear(v, p[f"{name}.weight"], p[f"{name}.bias"])

    q = linear(h.permute(0, 2, 3, 1), "fine_query")  # (n, 14, 14, width)
    keys, values = (linear(maps.permute(0, 2, 3, 1), name) for name in ("fine_key", "fine_value"))
    width, r, side = q.shape[-1], window // 2, h.shape[-1]
    scores = [(q * p["fine_null"]).sum(-1, keepdim=True)]  # (n, 14, 14, 1)
    reads = [torch.zeros_like(q).unsqueeze(-2)]
    signs = 2 * shots[:, 0] - 1  # (k, 28, 28)
    pixels = [torch.zeros(side, side, 1, 2, 2, dtype=q.dtype)]  # (14, 14, shots, a, b)
    for o, (dy, dx) in enumerate(itertools.product(range(-r, r + 1), repeat=2)):
        key = torch.zeros(len(maps), side, side, width, dtype=q.dtype)
        value, on = torch.zeros_like(key), torch.zeros(side, side, dtype=torch.bool)
        rows, cols = slice(max(0, -dy), min(side, side - dy)), slice(max(0, -dx), min(side, side - dx))
        shifted = (slice(rows.start + dy, rows.stop + dy), slice(cols.start + dx, cols.stop + dx))
        key[:, rows, cols], value[:, rows, cols] = keys[:, *shifted], values[:, *shifted]
        on[rows, cols] = True
        pixel = torch.zeros(side, side, len(maps), 2, 2, dtype=q.dtype)
        for i, j in itertools.product(range(side), repeat=2):
            if on[i, j]:
                y, x = 2 * (i + dy), 2 * (j + dx)
                pixel[i, j] = signs[:, y : y + 2, x : x + 2]
        pixels.append(pixel)
        score = torch.einsum("nijd,sijd->nijs", q, key + p["fine_offset"][o])
        scores.append(score.masked_fill(~on[..., None], -math.inf))
        reads.append(value.permute(1, 2, 0, 3).unsqueeze(0).expand(len(h), -1, -1, -1, -1))
    weights = (torch.cat(scores, -1) / math.sqrt(width)).softmax(-1)  # (n, 14, 14, 1 + W²·k)
    read = (weights.unsqueeze(-1) * torch.cat(reads, -2)).sum(-2)
    copied = torch.einsum("nijs,ijsab->niajb", weights, torch.cat(pixels, 2)).reshape(len(h), 1, 28, 28)
    return h + linear(read, "fine_out").permute(0, 3, 1, 2), copied


def attend_decode(p: dict, z: torch.Tensor, shots: torch.Tensor, heads: int, window: int = 0) -> torch.Tensor:
    """The main decoder of one task's θ, written out, its first map attending to the shots' maps
    made by its own reader (`shots_conv1`, `shots_conv2`), and with a `window` its 14×14 map to the
    shots' maps after `shots_conv1`, and its logits to the pixels that read copies, times 10, through
    `fine_pixel`."""
    h = F.relu(F.linear(F.relu(F.linear(z, p["fc1.weight"], p["fc1.bias"])), p["fc2.weight"], p["fc2.bias"]))
    h = attend_by_hand(p, h.reshape(-1, 64, 7, 7), convs_by_hand(p, shots, "shots_"), heads)
    h = F.relu(F.conv_transpose2d(h, p["deconv1.weight"], p["deconv1.bias"], 2, 1, 1))
    copied = None
    if window:
        first = F.relu(F.conv2d(shots, p["shots_conv1.weight"], p["shots_conv1.bias"], stride=2, padding=1))
        h, copied = fine_by_hand(p, h, first, window, shots)
    logits = F.conv_transpose2d(h, p["deconv2.weight"], p["deconv2.bias"], 2, 1, 1)
    if "fine_pixel.weight" in p:
        logits = logits + F.conv2d(10 * copied, p["fine_pixel.weight"], p["fine_pixel.bias"], padding=1)
    return logits


def attend_encode(p: dict, x: torch.Tensor, shots: torch.Tensor, heads: int):
    """The main encoder of one task's θ, written out, its last map attending to the shots' maps made
    by its own convolutions: q(z | x, θ, shots)'s location and scale."""
    h = attend_by_hand(p, convs_by_hand(p, x), convs_by_hand(p, shots), heads)
    h = F.relu(F.linear(h.flatten(1), p["fc.weight"], p["fc.bias"]))
    return F.linear(h, p["loc.weight"], p["loc.bias"]), (
        0.5 * F.linear(h, p["logvar.weight"], p["logvar.bias"])
    ).exp()


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
        z_loc, z_scale = program.inference.encoder(x)
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


# --- the estimators a researcher swaps in (`--elbo`, `--particles`) ---------------------------


@pytest.mark.parametrize(
    "elbo, model, particles",
    [
        ("trace", "hypervae", 1),
        ("meanfield", "hypervae", 1),
        ("tracegraph", "hypervae", 1),
        ("renyi", "hypervae", 4),
        ("jit", "hypervae", 1),
        ("jit", "vae", 2),
        ("renyi", "vae", 4),
    ],
)
def test_every_estimator_trains_a_program_with_a_torch_optimizer(elbo, model, particles):
    from pyrohvae.trainer import Trainer

    pyro.set_rng_seed(0)
    config = RunConfig(dataset="mnist", model=model, preset="paper", elbo=elbo, particles=particles)
    trainer = Trainer(build(config))
    x = (torch.rand(2 if model == "hypervae" else 1, 6, 1, 28, 28) < 0.2).float()
    before = {n: p.detach().clone() for n, p in trainer.program.named_parameters()}
    losses = [trainer.update(x)[0] for _ in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5]) - 5 * 20, losses  # 20 nats an image lower, at least
    moved = [n for n, p in trainer.program.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)  # every gradient was filled, whatever the estimator
    assert not pyro.get_param_store().keys()  # the jit's param-store scope left nothing behind


@pytest.mark.parametrize("model", ["hypervae", "vae"])
def test_the_jit_estimator_gives_trace_elbos_loss_and_gradients(model):
    """`--elbo jit` (a faster step at few images, benchmarks/RESULTS.md) computes what Trace_ELBO
    does: on the same draws, the same loss and gradients to float precision, the compiling step too."""
    x = (torch.rand(1, 5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    steps = {}
    for elbo in ("trace", "jit"):
        pyro.set_rng_seed(0)
        program = build(RunConfig(dataset="mnist", model=model, preset="paper", elbo=elbo))
        objective, steps[elbo] = program.objective(), []
        for i in range(3):
            pyro.set_rng_seed(10 + i)
            program.zero_grad()
            loss = objective.loss_and_grads(x) if model == "hypervae" else objective.loss_and_grads(x, None)
            steps[elbo].append((loss, {n: p.grad.clone() for n, p in program.named_parameters()}))
    for (loss, grads), (jit_loss, jit_grads) in zip(steps["trace"], steps["jit"]):
        assert jit_loss == pytest.approx(loss, rel=1e-6)
        for name, g in grads.items():
            torch.testing.assert_close(jit_grads[name], g, rtol=1e-5, atol=1e-5 * float(g.abs().max()))
    assert steps["trace"][0][0] != steps["trace"][1][0]  # each step its own draws


@pytest.mark.parametrize("split", [False, True])
def test_the_jit_follows_a_kl_schedule_and_context_sizes(split):
    """The default preset anneals KL(z) (and with `--split-context` draws a context size each step):
    under `--elbo jit` each step's loss and gradients are Trace_ELBO's with that step's weights and
    context, the weights read by one graph as its inputs, one graph per context size."""
    x = (torch.rand(2, 6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    steps = {}
    for elbo in ("trace", "jit"):
        pyro.set_rng_seed(0)
        config = RunConfig(dataset="mnist", elbo=elbo, split_context=split, kl_z_anneal=4, kl_u_warmup=3)
        program = build(config)
        objective, steps[elbo] = program.objective(), []
        for step in (1, 2, 3, 9):
            pyro.set_rng_seed(10 + step)
            kwargs = program.step_kwargs(step)
            if split:
                kwargs["context_size"] = 2 if step < 3 else 3
            program.zero_grad()
            loss = objective.loss_and_grads(x, **kwargs)
            steps[elbo].append((kwargs, loss, {n: p.grad.clone() for n, p in program.named_parameters()}))
    weights = [(kwargs["kl_u_weight"], kwargs["kl_z_weight"]) for kwargs, *_ in steps["jit"]]
    assert len(set(weights)) == 4  # a weight that changes every step
    for (_, loss, grads), (_, jit_loss, jit_grads) in zip(steps["trace"], steps["jit"]):
        assert jit_loss == pytest.approx(loss, rel=1e-6)
        for name, g in grads.items():
            torch.testing.assert_close(jit_grads[name], g, rtol=1e-5, atol=1e-5 * float(g.abs().max()))
    assert len(objective.elbo._loss_and_surrogate_loss.compiled) == (2 if split else 1)


def test_the_importance_weighted_bound_is_tighter_than_the_elbo():
    from pyrohvae.trainer import Trainer

    pyro.set_rng_seed(0)
    x = (torch.rand(1, 6, 1, 28, 28) < 0.2).float()
    trainer = Trainer(build(RunConfig(dataset="mnist", model="vae", lr=1e-3)))
    for _ in range(40):  # a posterior narrower than the prior, so that K draws have a gap to close
        trainer.update(x)
    program, losses = trainer.program, {}
    for elbo, particles in (("trace", 1), ("renyi", 16)):
        program.config.elbo, program.config.particles = elbo, particles
        objective = program.objective()
        with torch.no_grad():
            draws = [float(objective.elbo.loss(objective.model, objective.guide, x)) for _ in range(20)]
        losses[elbo] = sum(draws) / len(draws)
    # measured 2.5 nats lower (standard errors 0.6 and 0.1); the ELBO's own noise is what may lift it
    assert losses["renyi"] < losses["trace"] - 1.0, losses


def test_pyro_svi_with_pyro_optim_refuses_in_one_line_that_names_the_way():
    from pyro.infer import SVI

    program = build(RunConfig(dataset="mnist", preset="paper"))
    svi = SVI(program.model, program.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO(max_plate_nesting=2))
    with pytest.raises(TypeError) as caught:
        svi.step((torch.rand(1, 4, 1, 28, 28) < 0.2).float())
    message = str(caught.value)
    assert "\n" not in message and "program.objective()" in message and "torch.optim" in message


def test_estimators_that_cannot_run_are_refused_before_training():
    from pyrohvae.config import ConfigError
    from pyrohvae.distributed import Ranks
    from pyrohvae.trainer import Trainer

    with pytest.raises(ConfigError, match="--elbo jit"):
        RunConfig(dataset="mnist", elbo="jit", random_context=True)  # a size drawn inside the guide
    with pytest.raises(ConfigError, match="--elbo"):
        RunConfig(dataset="mnist", elbo="iwae")
    with pytest.raises(ConfigError, match="--particles"):
        RunConfig(dataset="mnist", particles=0)
    with pytest.raises(ValueError, match="one process"):  # before DistributedDataParallel is built
        Trainer(build(RunConfig(dataset="mnist", preset="paper", elbo="renyi")), Ranks(rank=0, world=2))


@pytest.mark.parametrize("validating", [True, False])
def test_the_first_step_runs_under_pyros_validation_as_the_user_has_it_and_the_rest_without(validating):
    """Validation checks every site on every step, 1 ms of a small step and a device wait per check
    on a GPU: a trainer's first step runs as the user set it, so a program that breaks Pyro's rules
    fails there; the later steps run without it, and the user's setting is left as it was."""
    from pyro.infer.util import is_validation_enabled

    from pyrohvae.trainer import Trainer

    trainer = Trainer(build(RunConfig(dataset="mnist", model="vae")))
    seen, loss_and_grads = [], trainer.objective.loss_and_grads

    def spy(*args, **kwargs):
        seen.append(is_validation_enabled())
        return loss_and_grads(*args, **kwargs)

    trainer.objective.loss_and_grads = spy
    x = (torch.rand(1, 4, 1, 28, 28) < 0.2).float()
    with pyro.validation_enabled(validating):
        for _ in range(3):
            trainer.update(x)
        assert is_validation_enabled() == validating
    assert seen == [validating, False, False]


def test_a_program_that_breaks_pyros_rules_fails_at_the_first_step():
    from pyrohvae.trainer import Trainer

    trainer = Trainer(build(RunConfig(dataset="mnist", model="vae")))
    x = torch.full((1, 4, 1, 28, 28), 0.5)  # not a binary image: outside Bernoulli's support
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="support"):
        trainer.update(x)
