"""The generative stories and their guides, side by side.

Data come as a batch of shape (tasks, items, 1, 28, 28): `pyro.plate("tasks", dim=-2)` holds one u
per task, `pyro.plate("data", dim=-1)` one z and one x per item. Every model and guide is scaled by
1/|D| (the paper's scaling of Eq. 9, |D| the number of items in the batch), so their losses read in
nats per image and compare directly. The networks live in `nets.py`; p(u) is here, by name
(`PRIORS`), as is what every reader of q(u | D) shares (`TaskGuide`); how a guide reads a task is
its own file's (`guides/`).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from .config import ADDRESSED_TEMPLATES as ADDRESSED
from .config import ConfigError
from .nets import (
    IMAGE_SHAPE,
    decode,
    encode,
    encode_with_features,
    shot_memory,
    stack_params,
    template_logits,
    weights,
)


def per_datum(tasks: int, items: int):
    """The paper's 1/|D|, averaged over the tasks of the batch."""
    return poutine.scale(scale=1.0 / (tasks * items))


def plates(tasks: int, items: int):
    """The paper's 1/|D|, the tasks' plate (u: dim -2) and the items' (z and x: dim -1)."""
    return per_datum(tasks, items), pyro.plate("tasks", tasks, dim=-2), pyro.plate("data", items, dim=-1)


def context_share(items: int, context: int) -> float:
    """The factor on KL(u) when `context` of a task's `items` images are q(u)'s context and not
    scored (`split_context`): the loss is per scored image, and KL(u) stays spread over all the
    task's items, as in the objective without a split."""
    return (items - context) / items


def batch_shape(x: torch.Tensor | None, tasks: int | None, items: int | None) -> tuple[int, int]:
    """(tasks, items) of a batch x, or as given where there is no x: a model called without data
    draws from the prior predictive (`pyro.infer.Predictive(program.model)(None, tasks=T, items=I)`)."""
    if x is not None:
        return x.shape[0], x.shape[1]
    if tasks is None or items is None:
        raise ValueError("give the data x, or the numbers of tasks and items to draw")
    return tasks, items


def record(prefix: str, params: dict[str, torch.Tensor], event_shapes: dict) -> None:
    """Put generated weights in the trace, so they can be read from it like any other site.

    What `pyro.deterministic` does, less its support check: that would compare every generated
    weight with itself (is it a real number?) at every step, for nothing.
    """
    for name, value in params.items():
        delta = dist.Delta(value, event_dim=len(event_shapes[name]), validate_args=False).mask(False)
        pyro.sample(f"{prefix}.{name}", delta, obs=value, infer={"_deterministic": True})


def vae_model(decoder, z_dim: int, x: torch.Tensor | None, task=None, tasks=None, items=None) -> None:
    """z ~ N(0, I), x ~ Bernoulli(decoder(z)), one decoder for all tasks."""
    zeros = next(decoder.parameters()).new_zeros(z_dim)
    scale, task_plate, data_plate = plates(*batch_shape(x, tasks, items))
    with scale, task_plate, data_plate:
        z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(3), obs=x)


def vae_guide(encoder, x: torch.Tensor) -> None:
    """q(z | x) by one amortized encoder."""
    scale, task_plate, data_plate = plates(*x.shape[:2])
    with scale, task_plate, data_plate:
        loc, z_scale = encoder(x)
        pyro.sample("z", dist.Normal(loc, z_scale).to_event(1))


class StandardNormal(PyroModule):
    """p(u) = N(0, I), the paper's prior."""

    def __init__(self, u_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(u_dim))
        self.register_buffer("scale", torch.ones(u_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class Mixture(PyroModule):
    """p(u) = Σ_k π_k N(μ_k, diag σ_k²), a learnable mixture of `components` Gaussians.

    Starts as the standard normal (all components at 0 with unit scale, means spread a little so
    they can separate), so a run begins where the paper's does. Its parameters are attributes of a
    PyroModule: a variant can make them `PyroParam`s with constraints, or `PyroSample`s.
    """

    def __init__(self, u_dim: int, components: int = 10):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(0.1 * torch.randn(components, u_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, u_dim))

    def forward(self) -> dist.Distribution:
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.Normal(self.locs, self.log_scales.exp()).to_event(1),
        )


PRIORS = {"normal": StandardNormal, "mixture": Mixture}


def make_prior(name: str, u_dim: int) -> nn.Module:
    try:
        return PRIORS[name](u_dim)
    except KeyError:
        raise ConfigError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}") from None


def z_prior(params: dict, z_dim: int, like: torch.Tensor) -> dist.Distribution:
    """p(z): N(0, I) (the paper), or N(loc, scale) generated as part of θ(u) where θ has them."""
    if "zprior.loc" in params:
        return dist.Normal(params["zprior.loc"], params["zprior.log_scale"].exp()).to_event(1)
    return dist.Normal(like.new_zeros(z_dim), 1.0).to_event(1)


def shot_mixture(shot_prior, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
    """p(z | u, shots): N(0, I) with weight w, and with weight (1 − w) / k a Gaussian at each of
    the k shots' posteriors q(z | shot, θ(u)) = N(loc, scale), each (tasks, k, z_dim), widened by
    `shot_prior`'s learnt scale, so that an image near a shot's code costs few nats of KL(z) and
    more shots cover more of the task. Batch shape (tasks, 1), as z's within the tasks' plate.

    The Neural Statistician's context-conditioned prior, with the context read as a kernel density
    rather than by a network: the k shots enter as k components, which a fixed-size summary (u)
    cannot forget as k grows. With `shot_prior.pooled` (`--z-prior shots-g`), one more component
    last: the set's Gaussian (`ShotPrior.set_component`), which sharpens with k undiluted. With
    `--shot-dims` n, the mixture places only z's first n dimensions; the rest are N(0, I) apart. With
    `--shot-scales 2`, k more components after the first k: the shots again, at the second widening,
    each shot's weight shared between its two (`by_shot` folds them back into one per shot)."""
    tasks, k, z_dim = loc.shape
    widen, a = shot_prior.at(k)
    locs = [loc.new_zeros(tasks, 1, z_dim), loc]
    scales = [loc.new_ones(tasks, 1, z_dim), (scale**2 + widen**2).sqrt()]
    weights = [F.logsigmoid(a).expand(tasks, 1), (F.logsigmoid(-a) - math.log(k)).expand(tasks, k)]
    if shot_prior.scales == 2:
        share = shot_prior.narrow_logit
        locs.append(loc)
        scales.append((scale**2 + (2 * shot_prior.log_narrow).exp()).sqrt())
        weights = [weights[0], weights[1] + F.logsigmoid(-share), weights[1] + F.logsigmoid(share)]
    if shot_prior.pooled:
        centre, spread, logit = shot_prior.set_component(loc)
        locs, scales = locs + [centre.unsqueeze(1)], scales + [spread.unsqueeze(1)]
        weights.append(logit.expand(tasks, 1))
    locs, scales, weights = torch.cat(locs, 1), torch.cat(scales, 1), torch.cat(weights, 1)
    if shot_prior.dims:  # `--shot-dims`: the other dimensions N(0, 1) in every component
        locs, scales = locs.where(shot_prior.reads, 0.0), scales.where(shot_prior.reads, 1.0)
    return dist.MixtureSameFamily(
        dist.Categorical(logits=weights.unsqueeze(1)),
        dist.Normal(locs.unsqueeze(1), scales.unsqueeze(1)).to_event(1),
    )


def by_shot(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Log-weights over a `shot_mixture`'s components (..., 1 + s·k), s its scales per shot, as
    (..., 1 + k): N(0, I)'s, then each shot's, its scales summed (the address a shot's components
    share); unchanged where s is 1."""
    if logits.shape[-1] == k + 1:
        return logits
    return torch.cat([logits[..., :1], logits[..., 1:].unflatten(-1, (-1, k)).logsumexp(-2)], -1)


def shots_prior(theta, shot_prior, u: torch.Tensor, shots: torch.Tensor):
    """p(z | u, shots) (`shot_mixture`) at the shots' codes under the encoder θ(u), and the shots'
    trunk features (tasks, k, hidden) that `decoder_input` matches to z."""
    loc, scale, features = encode_with_features(theta.encoder(u), shots)
    return shot_mixture(shot_prior, loc, scale), features


def mixture_from_eps(p_z: dist.MixtureSameFamily, eps: torch.Tensor, r: torch.Tensor, picks: bool = False):
    """z ~ `p_z` (a `shot_mixture`, batch (models, 1)) from standard normal draws eps (n, z_dim) and
    uniform draws r (n,) that pick each draw's component: the same eps and r give corresponding z in
    every model. Returns (models, n, z_dim), and with `picks` also the components drawn (models, n)."""
    weights = p_z.mixture_distribution.probs[:, 0]  # (models, components)
    edges = weights.cumsum(-1)[:, None, :-1]
    pick = (r[None, :, None] >= edges).sum(-1)  # (models, n): the first component whose edge r passes
    normal = p_z.component_distribution.base_dist
    index = pick[..., None].expand(-1, -1, eps.shape[-1])
    loc, scale = (t[:, 0].gather(1, index) for t in (normal.loc, normal.scale))
    return (loc + scale * eps, pick) if picks else loc + scale * eps


def shots_sample_logits(theta, shot_prior, u, shots, eps, r) -> torch.Tensor:
    """Logits of p(x | z, θ(u)) with z ~ p(z | u, shots) (`mixture_from_eps`), u (models, u_dim),
    shots (models, k, 1, 28, 28): (models, n, 1, 28, 28)."""
    params = theta.decoder(u.unsqueeze(-2))
    p_z, features = shots_prior(theta, shot_prior, u.unsqueeze(-2), shots)
    z, pick = mixture_from_eps(p_z, eps, r, picks=True)
    logits = shot_logits(theta, params, z, p_z, features, shots)
    if theta.template not in ADDRESSED:
        return logits
    # the drawing's address is the shot whose component its z came from, as the generative story has it
    k = shots.shape[-4]
    address = torch.where(pick > 0, (pick - 1) % k + 1, pick)
    pick = torch.where(pick > shot_prior.scales * k, k + 1, address) if shot_prior.pooled else address
    index = pick[..., None, None, None, None].expand(-1, -1, 1, *IMAGE_SHAPE)
    return logits.gather(2, index).squeeze(2)


def shot_logits(theta, params: dict, z: torch.Tensor, p_z=None, features=None, shots=None) -> torch.Tensor:
    """Logits of p(x | z, θ(u), shots), `params` the decoder half of θ(u): the decoder on
    `decoder_input`, and, where θ has a template filter (`--shot-template`), the shots' images
    weighed as `theta.template` says (`template_image`) through it; with attention heads
    (`--shot-attention`), its first feature map also reads the shots' (`nets.shot_memory`);
    without shots, z alone."""
    if shots is not None and theta.attention:
        params = {**params, **shot_memory(params, shots, theta.attention)}
    image = None
    if shots is not None and theta.template in ADDRESSED:
        # the shots' codes (tasks, 1, k, z_dim), at the first of their scales
        k = shots.shape[-4]
        codes = p_z.component_distribution.base_dist.loc[..., 1 : k + 1, :]
        inputs = decoder_input(z, p_z, features, theta.feature_width)
        return address_logits(params, inputs, shots, z, codes, has_set_component(p_z, k))
    if shots is not None and "template.weight" in params:
        image = template_image(z, p_z, shots, theta.template)
    logits = decode(params, decoder_input(z, p_z, features, theta.feature_width), image)
    if "template.weight" not in params:
        return logits
    if shots is None:  # no shot: the filter sees a blank image, which gives its bias at every pixel
        return logits + params["template.bias"][..., None, None]
    return logits + template_logits(params, image)


def has_set_component(p_z: dist.MixtureSameFamily, k: int) -> bool:
    """Whether the `shot_mixture` p_z of k shots ends in the set's Gaussian (`--z-prior shots-g`),
    which an addressing template reads as one address more: every shot at once. Told by the count of
    components, which at k = 1 is also that of one shot at two widenings (`--shot-scales 2`); there
    the set's image is the one shot's, so either reading gives the same likelihood."""
    return p_z.mixture_distribution.logits.shape[-1] == k + 2


def address_logits(
    params: dict, inputs: torch.Tensor, shots: torch.Tensor, z=None, codes=None, whole_set: bool = False
) -> torch.Tensor:
    """`--shot-template address`: the decoder's logits of its `inputs` (..., tasks, items, width: z,
    and the shots' features where it reads them) plus, for each address a, what the template filter
    makes of one image: a blank for a = 0 (N(0, I)'s share: the filter's bias alone), the a-th shot's
    pixels (±1) for the others; with `deep-address` the image also enters the decoder's 14×14 map
    (`nets.decode`); with `warp-address` each shot's image is first moved (`warped`) by the offset
    of z from the shot's code (`codes`, (tasks, 1, k, z_dim)). With `whole_set` (the set's component
    of `--z-prior shots-g`), one address more, last: the mean of every shot's image, each moved to z
    as its own address moves it, so that a drawing from the set's centre takes the strokes the shots
    share (as Generative Matching Networks read all their examples) rather than one shot's. Returns
    (..., tasks, items, k + 1 (+ 1), 1, 28, 28), the logits of p(x | z, θ(u), a) for every a."""
    if "warp.weight" in params:
        images = warped(params, z, codes, shots)  # (..., tasks, items, k + 1, 1, 28, 28)
        if whole_set:
            images = torch.cat([images, images[..., 1:, :, :, :].mean(-4, keepdim=True)], -4)
        filtered = template_logits(params, images.flatten(-5, -4)).unflatten(-4, images.shape[-5:-3])
        return decode(params, inputs).unsqueeze(-4) + filtered
    signs = 2 * shots - 1  # (tasks, k, 1, 28, 28)
    parts = [signs.new_zeros(signs.shape[0], 1, *IMAGE_SHAPE), signs]
    images = torch.cat(parts + [signs.mean(1, keepdim=True)] if whole_set else parts, 1).unsqueeze(-5)
    if "template_in.weight" in params:
        logits = decode(params, inputs, images.expand(*inputs.shape[:-1], *images.shape[-4:]))
    else:
        logits = decode(params, inputs).unsqueeze(-4)
    return logits + template_logits(params, images.squeeze(-5)).unsqueeze(-5)


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # the affine map of `F.affine_grid` that moves nothing


def warped(params: dict, z: torch.Tensor, codes: torch.Tensor, shots: torch.Tensor) -> torch.Tensor:
    """`--shot-template warp-address`: every shot's image (tasks, k, 1, 28, 28) moved for every z
    (..., tasks, items, z_dim) by the affine map identity + `warp`(z − the shot's code): a drawing
    whose code lies where its shot's does takes the shot as it is, one whose code differs (placed,
    sized or slanted otherwise) the shot moved to match. With `--warp-grid` G, the sampling grid is
    also bent by `flow`(z − the shot's code), the displacements of G×G control points spread
    bicubically over the image. As ±1, background outside the shot, with a blank first (address 0):
    (..., tasks, items, k + 1, 1, 28, 28)."""
    offset = z.unsqueeze(-2) - codes  # (..., tasks, items, k, z_dim)
    w, b = params["warp.weight"], params["warp.bias"]  # (tasks, 1, 6, z_dim), (tasks, 1, 6)
    move = torch.einsum("...kz,...oz->...ko", offset, w) + b.unsqueeze(-2)
    affine = (move + move.new_tensor(IDENTITY)).unflatten(-1, (2, 3))  # (..., tasks, items, k, 2, 3)
    batch = affine.shape[:-2]
    grid = F.affine_grid(affine.reshape(-1, 2, 3), (batch.numel(), *IMAGE_SHAPE), align_corners=False)
    if "flow.weight" in params:
        w, b = params["flow.weight"], params["flow.bias"]  # (tasks, 1, 2G², z_dim), (tasks, 1, 2G²)
        points = torch.einsum("...kz,...oz->...ko", offset, w) + b.unsqueeze(-2)
        side = math.isqrt(points.shape[-1] // 2)
        field = F.interpolate(
            points.reshape(-1, 2, side, side), size=IMAGE_SHAPE[1:], mode="bicubic", align_corners=True
        )
        grid = grid + field.permute(0, 2, 3, 1)  # (x, y) displacements in affine_grid's [-1, 1]
    source = shots.unsqueeze(-5).expand(*batch, *IMAGE_SHAPE).reshape(-1, *IMAGE_SHAPE)
    moved = 2 * F.grid_sample(source, grid, align_corners=False) - 1  # zeros outside: background
    blank = moved.new_zeros(*batch[:-1], 1, *IMAGE_SHAPE)
    return torch.cat([blank, moved.reshape(*batch, *IMAGE_SHAPE)], -4)


def likelihood(logits: torch.Tensor, z: torch.Tensor, p_z) -> dist.Distribution:
    """p(x | z, θ(u), shots): Bernoulli of `logits`; for an addressing template (logits with an
    address dim, `address_logits`) the address a summed out, each weighed by p(a | z), the share of
    its component of the `shot_mixture` p_z in explaining z. Summing it out is exact, p(a) p(z | a)
    = p(z) p(a | z), so the ELBO and importance weights are those of the model with a among its
    latents, enumerated."""
    if logits.dim() == z.dim() + 2:  # no address dim
        return dist.Bernoulli(logits=logits).to_event(3)
    address = dist.Categorical(logits=address_joint(z, p_z, logits.shape[-4] - 1))
    return dist.MixtureSameFamily(address, dist.Bernoulli(logits=logits).to_event(3))


def address_joint(z: torch.Tensor, p_z: dist.MixtureSameFamily, k: int) -> torch.Tensor:
    """log p(a) p(z | a) for each address a of the `shot_mixture` p_z with k addresses after N(0,
    I)'s (its k shots, and the set's last where it has one): (..., tasks, items, k + 1), a shot's
    scales summed (`by_shot`)."""
    components = p_z.component_distribution.log_prob(z.unsqueeze(-2))  # (..., tasks, items, 1 + s·k)
    return by_shot(components + p_z.mixture_distribution.logits, k)


def responsibilities(z: torch.Tensor, p_z: dist.MixtureSameFamily, k: int) -> torch.Tensor:
    """How much each of the k shots' components of the `shot_mixture` p_z explains z: (..., tasks,
    items, k), N(0, I)'s share left out."""
    return address_joint(z, p_z, k).softmax(-1)[..., 1:]


def template_image(z: torch.Tensor, p_z, shots: torch.Tensor, template: str) -> torch.Tensor:
    """The shots' images (tasks, k, 1, 28, 28) as ±1, weighed by their `responsibilities` for z
    ("matched": the pixels a drawing matched to a shot starts from, as Generative Matching
    Networks' decoder reads its matched examples; 0 where N(0, I) explains z) or by their
    components' weights in p_z ("mean": the shots' mean, the same for every z). Returns
    (..., tasks, items, 1, 28, 28) against z (..., tasks, items, z_dim)."""
    signs = (2 * shots - 1).flatten(-3)  # (tasks, k, 784)
    if template in ("matched", "deep"):
        return (responsibilities(z, p_z, signs.shape[-2]) @ signs).unflatten(-1, IMAGE_SHAPE)
    weights = by_shot(p_z.mixture_distribution.logits, signs.shape[-2]).exp()[..., 1:]  # (tasks, 1, k)
    return (weights @ signs).unflatten(-1, IMAGE_SHAPE).expand(*z.shape[:-1], *IMAGE_SHAPE)


def decoder_input(z: torch.Tensor, p_z=None, features=None, width: int = 0) -> torch.Tensor:
    """What the decoder reads: z, and with `width` > 0 (`shot_features`) the shots' trunk features
    (tasks, k, width) weighed by each shot's responsibility for z under the `shot_mixture` p_z,
    zeros for N(0, I)'s share, and all zeros without shots: a matching of z to the shots that
    hands the decoder what the nearest shots look like, as Generative Matching Networks do."""
    if not width:
        return z
    if features is None:
        return torch.cat([z, z.new_zeros(*z.shape[:-1], width)], -1)
    # (..., tasks, items, k) @ (..., tasks, k, width)
    return torch.cat([z, responsibilities(z, p_z, features.shape[-2]) @ features], -1)


def z_from_eps(params: dict, eps: torch.Tensor) -> torch.Tensor:
    """z ~ p(z | θ) from standard normal draws: the same eps give corresponding z in every model."""
    if "zprior.loc" in params:
        return params["zprior.loc"] + params["zprior.log_scale"].exp() * eps
    return eps


def hypervae_model(
    theta,
    prior,
    x: torch.Tensor | None,
    task=None,
    kl_u_weight: float = 1.0,
    kl_z_weight: float = 1.0,
    record_theta: bool = False,
    tasks: int | None = None,
    items: int | None = None,
    shot_prior=None,
    shots: torch.Tensor | None = None,
) -> None:
    """u ~ p(u) per task, θ = θ(u); z ~ p(z | θ), x ~ Bernoulli(decoder_θ(z)) per item, with
    p(z | θ) = N(0, I) (the paper) or generated by θ(u) (`z_prior="task"`); given `shots`
    (tasks, k, 1, 28, 28), other images of each task, and the parameters `shot_prior`, p(z | u,
    shots) is `shot_mixture` of the shots' codes under the encoder θ(u) (`z_prior="shots"`); where
    θ reads shot features (`theta.feature_width`), the decoder also reads the shots' features matched
    to z (`decoder_input`), and where θ has a `template` filter, the shots' pixels enter the logits
    through it (`shot_logits`, `--shot-template`); where θ has attention heads (`--shot-attention`),
    the decoder's first map reads the shots' maps.

    Only the decoder half of θ(u) is generated here; the guide generates the encoder half.
    `kl_u_weight` scales the u site in model and guide alike, i.e. KL(q(u|D) || p(u)) in the
    loss, for a warm-up from 0 to 1 (1: the paper's objective); `kl_z_weight` the z sites, i.e.
    KL(q(z|x) || p(z)), for an annealing from above 1 down to 1. `record_theta` puts θ(u) in the
    trace (`theta.decoder.fc2.weight`, ...); off by default, since its 18 sites cost about 7% of a
    training step and nothing in training reads them.
    """
    scale, task_plate, data_plate = plates(*batch_shape(x, tasks, items))
    with scale, task_plate:
        with poutine.scale(scale=kl_u_weight):
            u = pyro.sample("u", prior())
        params = theta.decoder(u, items=None if record_theta or x is None else x.shape[-4])
        if record_theta:
            record("theta.decoder", params, theta.shapes["decoder"])
        if shots is not None and shots.shape[1]:
            p_z, features = shots_prior(theta, shot_prior, u, shots)
        else:
            p_z, features, shots = z_prior(params, theta.z_dim, u), None, None
        with data_plate:
            with poutine.scale(scale=kl_z_weight):
                z = pyro.sample("z", p_z)
            logits = shot_logits(theta, params, z, p_z, features, shots)
            pyro.sample("x", likelihood(logits, z, p_z), obs=x)


def hypervae_guide(
    theta,
    reader,
    x: torch.Tensor,
    kl_u_weight: float = 1.0,
    kl_z_weight: float = 1.0,
    record_theta: bool = False,
    context_size: int | None = None,
    q_u: tuple[torch.Tensor, torch.Tensor] | None = None,
    shots: torch.Tensor | None = None,
    u_reads_all: bool = False,
) -> None:
    """q(u | D_t) per task, by the guide's `reader` (a `TaskGuide`), then q(z | x, θ(u)): the
    main VAE's encoder with weights θ(u) for every item. The encoder half of θ(u) is generated here.

    With `context_size` k, q(u) reads the first k items of each task and q(z) the others, which
    alone the model scores (`split_context`; k = 0: q(u) reads an empty context), or with
    `u_reads_all` q(u) reads all of them, the scored ones too, while the shots stay the first k; with `q_u`
    (location, scale, each (tasks, u_dim)), q(u) is that Gaussian, read from nothing (a posterior
    refined by gradient steps, `fewshot.refine`). Where θ's encoder attends to the shots
    (`--shot-attention-encoder`), q(z | x, θ(u), shots) reads the context, or `shots` (tasks, k, 1,
    28, 28) where given (the model's shots, in scoring). The weights and `record_theta` are the
    model's."""
    if context_size is not None:
        kl_u_weight = kl_u_weight * context_share(x.shape[1], context_size)  # as the model's
        context, x = x if u_reads_all else x[:, :context_size], x[:, context_size:]
        shots = context[:, :context_size] if shots is None and context_size else shots
    else:
        context = reader.context(x)
    scale, task_plate, data_plate = plates(*x.shape[:2])
    with scale, task_plate:
        loc, u_scale = reader.posterior(context) if q_u is None else q_u
        with poutine.scale(scale=kl_u_weight):
            u = pyro.sample("u", reader.q_u(loc.unsqueeze(-2), u_scale.unsqueeze(-2)))
        params = theta.encoder(u, items=None if record_theta else x.shape[-4])
        if record_theta:
            with poutine.infer_config(config_fn=_auxiliary):
                record("theta.encoder", params, theta.shapes["encoder"])
        if theta.encoder_attention and shots is not None and shots.shape[1]:
            params = {**params, **shot_memory(params, shots, theta.attention, reader="")}
        with data_plate:
            z_loc, z_scale = encode(params, x)
            with poutine.scale(scale=kl_z_weight):
                pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))


def _auxiliary(site) -> dict:
    # The encoder half of θ exists in the guide only; Pyro wants such sites marked.
    return {"is_auxiliary": True}


COMBINES = ("product", "mean")  # how `shots_posterior` joins the posteriors of one-draw shots


class TaskGuide(PyroModule):
    """The reader of q(u | D_t) that `hypervae_guide` asks for every task.

    A subclass says how a task is read: `task_posterior(x)` maps a batch (tasks, items, 1, 28, 28)
    to the location and scale of q(u | D_t), each (tasks, u_dim).
    """

    model = "hypervae"
    # True for a guide that reads one draw of a task, however many it is given: a few-shot model
    # then combines the posteriors of the shots (`shots_posterior`); else the guide reads the shots
    # as a set.
    one_draw = False

    def __init__(self, config):
        super().__init__()
        self.u_dim = config.u_dim
        self.u_scale_init = config.u_scale_init
        self.random_context = config.random_context
        self.prior = config.prior
        if self.random_context and self.one_draw:
            raise ConfigError(f"--random-context: the {self.name} guide reads one draw, not a set")

    def task_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(u | D_t), each (tasks, u_dim): `task_posterior`'s, its scale
        times `u_scale_init`. The constant factor is a shift of the log-scale, i.e. where the
        scale starts: Adam's steps are the same whatever the shift."""
        loc, scale = self.task_posterior(x)
        return loc, scale * self.u_scale_init if self.u_scale_init != 1.0 else scale

    @torch.no_grad()
    def shots_posterior(
        self, shots: torch.Tensor, combine: str = "product"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(u | shots) for tasks of k shots each (tasks, k, 1, 28, 28), each
        (tasks, u_dim). A guide that reads a set reads each task's shots as one; one that reads one
        draw gives a posterior per shot, combined by their product with the prior divided out
        (`combine="product"`, for p(u) = N(0, I)) or by the mean of their locations and scales
        (`"mean"`)."""
        if not self.one_draw:
            return self.posterior(shots)
        tasks, k = shots.shape[:2]
        # every shot a task of one draw
        loc, scale = self.posterior(shots.reshape(tasks * k, 1, *shots.shape[2:]))
        loc, scale = loc.reshape(tasks, k, -1), scale.reshape(tasks, k, -1)
        if combine == "mean":
            return loc.mean(1), scale.mean(1)
        if combine != "product":
            raise ValueError(f"unknown --combine {combine!r}; choose one of {', '.join(COMBINES)}")
        if self.prior != "normal":
            raise ValueError(
                f"--combine product divides out a N(0, I) prior; this run's prior is "
                f"{self.prior!r}: use --combine mean"
            )
        precisions = scale.pow(-2)
        precision = torch.maximum(precisions.sum(1) - (k - 1), precisions.max(1).values)
        # the prior N(0, I) divided out contributes nothing to the precision-weighted location
        return (precisions * loc).sum(1) / precision, precision.rsqrt()

    @staticmethod
    def q_u(loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        """q(u | D) from `posterior`'s location and scale: a diagonal Normal, u's dims one event."""
        return dist.Normal(loc, scale).to_event(1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """What q(u) reads of the batch: all of it, or in training with `random_context` its first
        k items (a random subset: minibatches come shuffled), k log-uniform in 1..items, so that
        contexts of a few shots are as common in training as they are in few-shot use."""
        if not (self.training and self.random_context):
            return x
        items = x.shape[1]
        k = int(math.exp(float(torch.rand(())) * math.log(items + 1)))
        return x[:, : min(max(k, 1), items)]


def metavae_model(decoders, z_dim: int, x: torch.Tensor | None, task: torch.Tensor, items=None) -> None:
    """MetaVAE's generative side: one decoder per training task; x of task t ~ decoder_t(z).

    `task` holds the training-task index of each row of the batch. The other decoders get no
    gradient, so a step moves none of them (not even by Adam's momentum: torch's Adam skips a
    parameter without a gradient).
    """
    used = task.unique().tolist()
    if len(used) == 1:  # one decoder for every row: shared weights, nothing stacked
        params = weights(decoders[used[0]])
    else:
        params = stack_params([decoders[t] for t in task.tolist()])
    zeros = next(iter(params.values())).new_zeros(z_dim)
    scale, task_plate, data_plate = plates(*batch_shape(x, len(task), items))
    with scale, task_plate, data_plate:
        z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decode(params, z)).to_event(3), obs=x)


def metavae_guide(encoder, x: torch.Tensor, context: torch.Tensor | None = None) -> None:
    """q(z | x, D): one inference network for all tasks, which also reads a context set D
    (tasks, m, 1, 28, 28) of the item's task, by default the task's items x themselves."""
    scale, task_plate, data_plate = plates(*x.shape[:2])
    with scale, task_plate, data_plate:
        loc, z_scale = encoder(x, x if context is None else context)
        pyro.sample("z", dist.Normal(loc, z_scale).to_event(1))
