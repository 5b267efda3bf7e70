"""Importance-sampled log-likelihood with the guide as proposal.

Per datum, log p(x) ≈ logsumexp_k [log p(x, z_k) − log q(z_k | x)] − log K, z_k ~ q(z | x).

Two paths over the same model and guide (for HyperVAE, those of `program.conditioned`, with θ
fixed so that only z is sampled):

- `reference_log_likelihood`: `pyro.infer.Importance`, one run per datum; what users of Pyro reach
  for. Its weights sum every site of the traces, so it is run on one datum at a time.
- `importance_scores`: the traces run once per chunk of particles inside a particle plate
  (dim −3), per-datum log-probabilities read off the sites of the "data" plate; chunked over
  particles so that memory stays bounded.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.infer import Importance
from pyro.infer.importance import psis_diagnostic

MAX_PLATE_NESTING = 2


def reference_log_likelihood(model, guide, x: torch.Tensor, num_samples: int) -> float:
    """log p(x) for one datum x of shape (1, 1, 1, 28, 28) by `pyro.infer.Importance`."""
    assert x.shape[:2] == (1, 1), "Importance sums the whole trace: one datum per run"
    with torch.no_grad():
        posterior = Importance(model, guide, num_samples=num_samples).run(x)
        return float(posterior.get_log_normalizer())


def _in_data_plate(site) -> bool:
    return (
        site["type"] == "sample"
        and not site["infer"].get("_deterministic")
        and any(frame.name == "data" for frame in site["cond_indep_stack"])
    )


def _per_datum(trace, shape) -> torch.Tensor:
    """Sum of the unscaled log-probabilities of the item sites, as a (particles, tasks, items) tensor."""
    trace.compute_log_prob(lambda name, site: _in_data_plate(site))
    sites = [site["unscaled_log_prob"] for site in trace.nodes.values() if _in_data_plate(site)]
    return sum(sites).expand(shape)


@torch.no_grad()
def importance_scores(model, guide, x: torch.Tensor, num_samples: int, max_images: int = 8192) -> dict:
    """Per-datum scores of a batch x (tasks, items, 1, 28, 28), each a (tasks, items) tensor:

    - `log_p`: the importance-sampled log p(x) with `num_samples` particles;
    - `recon`: E_q[−log p(x | z)], averaged over the same particles;
    - `kl_z`: KL(q(z | x) || p(z)), analytic, or where p(z) has no closed form averaged over the
      same particles;
    - `log_w_var`: the variance of the log-weights (for diagnostics).

    At most `max_images` decoder passes (particles × data) run at once.
    """
    tasks, items = x.shape[:2]
    chunk = max(1, min(num_samples, max_images // (tasks * items)))
    lse, recon_sum, sq, mean_w = [], 0.0, 0.0, 0.0
    kl_sum = 0.0
    done = 0
    while done < num_samples:
        k = min(chunk, num_samples - done)
        with pyro.plate("particles", k, dim=-(MAX_PLATE_NESTING + 1)):
            guide_trace = poutine.trace(guide).get_trace(x)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
        shape = (k, tasks, items)
        log_w = _per_datum(model_trace, shape) - _per_datum(guide_trace, shape)
        log_px_z = model_trace.nodes["x"]["unscaled_log_prob"].expand(shape)
        lse.append(torch.logsumexp(log_w, 0))
        recon_sum = recon_sum - log_px_z.sum(0)
        sq = sq + (log_w**2).sum(0)
        mean_w = mean_w + log_w.sum(0)
        z_q, z_p = guide_trace.nodes["z"], model_trace.nodes["z"]
        kl_sum = kl_sum + (z_q["unscaled_log_prob"] - z_p["unscaled_log_prob"]).expand(shape).sum(0)
        done += k
    try:
        kl_z = torch.distributions.kl_divergence(z_q["fn"], z_p["fn"]).reshape(-1, tasks, items)[0]
    except NotImplementedError:  # a p(z) without a closed form (a mixture): by the particles
        kl_z = kl_sum / num_samples
    mean = mean_w / num_samples
    return {
        "log_p": torch.logsumexp(torch.stack(lse), 0) - math.log(num_samples),
        "recon": recon_sum / num_samples,
        "kl_z": kl_z,
        "log_w_var": sq / num_samples - mean**2,
    }


def psis_khat(model, guide, x: torch.Tensor, num_samples: int) -> float:
    """Pareto k̂ of the importance weights of one datum (1, 1, 1, 28, 28), by Pyro's
    `psis_diagnostic`: below 0.5 the proposal is good, above 0.7 the estimate is unreliable."""
    chunk = math.gcd(num_samples, 256)
    # Pyro's Pareto fit makes its grid by torch.arange on the default device: on a GPU it would meet
    # the weights there with a CPU tensor (pyro.ops.stats.fit_generalized_pareto, pyro-ppl 1.9).
    with torch.device(x.device):
        return float(
            psis_diagnostic(
                model,
                guide,
                x,
                num_particles=num_samples,
                max_simultaneous_particles=chunk,
                max_plate_nesting=MAX_PLATE_NESTING,
            )
        )
