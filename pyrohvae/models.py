"""The generative stories.

Data come as a batch of shape (tasks, items, 1, 28, 28): `pyro.plate("tasks", dim=-2)` holds one u
per task, `pyro.plate("data", dim=-1)` one z and one x per item. Both models are scaled by 1/|D|
(the paper's scaling of Eq. 9, |D| the number of items in the batch), so their losses read in nats
per image and compare directly.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from .nets import decode, stack_params


def per_datum(x: torch.Tensor):
    """The paper's 1/|D|, averaged over the tasks of the batch."""
    return poutine.scale(scale=1.0 / (x.shape[0] * x.shape[1]))


def record(prefix: str, params: dict[str, torch.Tensor], event_shapes: dict) -> None:
    """Put generated weights in the trace, so they can be read from it like any other site.

    What `pyro.deterministic` does, less its support check: that would compare every generated
    weight with itself (is it a real number?) at every step, for nothing.
    """
    for name, value in params.items():
        delta = dist.Delta(value, event_dim=len(event_shapes[name]), validate_args=False).mask(False)
        pyro.sample(f"{prefix}.{name}", delta, obs=value, infer={"_deterministic": True})


def vae_model(decoder, z_dim: int, x: torch.Tensor, task=None) -> None:
    """z ~ N(0, I), x ~ Bernoulli(decoder(z)), one decoder for all tasks."""
    pyro.module("decoder", decoder)
    tasks, items = x.shape[:2]
    zeros = x.new_zeros(z_dim)
    with per_datum(x), pyro.plate("tasks", tasks, dim=-2), pyro.plate("data", items, dim=-1):
        z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(3), obs=x)


def hypervae_model(
    theta, prior, z_dim: int, x: torch.Tensor, task=None, kl_u_weight: float = 1.0, record_theta: bool = False
) -> None:
    """u ~ p(u) per task, θ = θ(u); z ~ N(0, I), x ~ Bernoulli(decoder_θ(z)) per item.

    Only the decoder half of θ(u) is generated here; the guide generates the encoder half.
    `kl_u_weight` scales the u site in model and guide alike, i.e. KL(q(u|D) || p(u)) in the
    loss, for a warm-up from 0 to 1 (1: the paper's objective). `record_theta` puts θ(u) in the
    trace (`theta.decoder.fc2.weight`, ...); off by default, since its 18 sites cost about 7% of a
    training step and nothing in training reads them.
    """
    pyro.module("theta", theta.half("decoder"))
    pyro.module("prior", prior)
    tasks, items = x.shape[:2]
    zeros = x.new_zeros(z_dim)
    with per_datum(x), pyro.plate("tasks", tasks, dim=-2):
        with poutine.scale(scale=kl_u_weight):
            u = pyro.sample("u", prior())
        params = theta.decoder(u)
        if record_theta:
            record("theta.decoder", params, theta.shapes["decoder"])
        with pyro.plate("data", items, dim=-1):
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decode(params, z)).to_event(3), obs=x)


def metavae_model(decoders, z_dim: int, x: torch.Tensor, task: torch.Tensor) -> None:
    """MetaVAE's generative side: one decoder per training task; x of task t ~ decoder_t(z).

    `task` holds the training-task index of each row of the batch. Only the decoders of those
    tasks are registered, so a step moves no other decoder (not even by Adam's momentum).
    """
    used = task.unique().tolist()
    for t in used:
        pyro.module(f"decoder{t}", decoders[t])
    if len(used) == 1:  # one decoder for every row: shared weights, nothing stacked
        params = dict(decoders[used[0]].named_parameters())
    else:
        params = stack_params([decoders[t] for t in task.tolist()])
    tasks, items = x.shape[:2]
    zeros = x.new_zeros(z_dim)
    with per_datum(x), pyro.plate("tasks", tasks, dim=-2), pyro.plate("data", items, dim=-1):
        z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decode(params, z)).to_event(3), obs=x)
