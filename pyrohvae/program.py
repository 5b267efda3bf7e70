"""A model, its guide and every network they use, built from a run's config.

Besides `model(x, task)` and `guide(x, task)` for training (`objective()`: their negative ELBO as
a module, whose parameters go to a torch optimizer), each program says how to score data
under one fixed model of a task (`conditioned`), which the evaluation code uses for all of them:
`context` is a set of items of the task, (tasks, m, 1, 28, 28), and `choice` picks among the
program's generative networks (`choices`; only MetaVAE has more than one).
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import JitTrace_ELBO, RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule, pyro_method
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from torch import nn

from . import guides
from .batches import MixedBatches, TaskBatches
from .config import ConfigError, RunConfig
from .models import (
    context_share,
    hypervae_guide,
    hypervae_model,
    make_prior,
    metavae_guide,
    metavae_model,
    shot_logits,
    shots_sample_logits,
    vae_guide,
    vae_model,
    z_from_eps,
)
from .nets import Decoder, ShotPrior, ThetaGenerator

# The guide's networks' module path in the state of runs saved before it was `inference`.
_GUIDE_NETS = re.compile(r"^guide_nets(?=\.|$)")


def _renamed(state: dict) -> OrderedDict:
    return OrderedDict((_GUIDE_NETS.sub("inference", k), v) for k, v in state.items())


@dataclass
class TaskModel:
    """The model and guide of one fixed model per task, and for HyperVAE the q(u | context) it
    came from and KL(q(u | context) || p(u)), each per task."""

    model: Callable
    guide: Callable
    q_u: dist.Distribution | None = None
    kl_u: torch.Tensor | None = None


ELBOS = {  # config.ELBOS by name
    "trace": Trace_ELBO,
    "meanfield": TraceMeanField_ELBO,
    "tracegraph": TraceGraph_ELBO,
    "renyi": functools.partial(RenyiELBO, alpha=0.0),
    "jit": functools.partial(JitTrace_ELBO, ignore_jit_warnings=True),
}


class Objective(nn.Module):
    """−ELBO(model, guide) of a program as a module, what Pyro's `ELBO()(model, guide)` gives for a
    model and a guide that are modules (ours are two methods of one): called on a batch, the
    differentiable loss; `parameters()` are the program's. `loss_and_grads` is what a training step
    needs, for every estimator: those without a differentiable loss (TraceGraph_ELBO, RenyiELBO)
    fill the gradients through their own `loss_and_grads`. JitTrace_ELBO finds parameters by name in Pyro's
    param store, where module-local parameters never go: it runs with the program's parameters (the
    same tensors) in a param-store scope of its own, so two programs in one process share nothing."""

    def __init__(self, program: nn.Module, elbo):
        super().__init__()
        self.program, self.elbo = program, elbo
        # bound once: JitTrace_ELBO keys its compiled graph by the model's and the guide's id()
        self.model, self.guide = program.model, program.guide
        self.differentiable = hasattr(elbo, "differentiable_loss") and not isinstance(elbo, JitTrace_ELBO)
        self._store = None  # the jit's param-store scope
        # The jit bakes keyword arguments into its graph as constants (one graph for each value seen):
        # the KL weights go in as tensors instead, so that one graph follows a KL schedule.
        self._weights_in = (
            isinstance(elbo, JitTrace_ELBO) and "kl_u_weight" in inspect.signature(self.model).parameters
        )
        if self._weights_in:
            self.model, self.guide = _weights_first(program.model), _weights_first(program.guide)

    def forward(self, *args, **kwargs):
        return self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)

    def loss_and_grads(self, *args, **kwargs) -> float:
        if self.differentiable:
            loss = self(*args, **kwargs)
            loss.backward()
            return float(loss.detach())
        if isinstance(self.elbo, JitTrace_ELBO):
            if self._weights_in:
                x, *rest = args
                weights = (kwargs.pop(name, 1.0) for name in ("kl_u_weight", "kl_z_weight"))
                args = (x, *(torch.as_tensor(w, dtype=x.dtype, device=x.device) for w in weights), *rest)
            while args and args[-1] is None:  # torch.jit traces tensors only (the task of a VAE's batch)
                args = args[:-1]
            with (
                pyro.get_param_store().scope(self._store) as self._store,
                pyro.settings.context(module_local_params=False),
                warnings.catch_warnings(),
            ):
                # Pyro's tracer, not the user's code: a warning at each compile they cannot act on
                warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated", FutureWarning)
                return self._jit_loss_and_grads(args, kwargs)
        return float(self.elbo.loss_and_grads(self.model, self.guide, *args, **kwargs))

    def _jit_loss_and_grads(self, args, kwargs) -> float:
        # Compiling runs model and guide twice more, drawing from the random streams: a step that
        # compiled is run again from the state it began in, so that every step draws alike and a
        # resumed run (which compiles at its first step) ends where an uninterrupted one does.
        compiled = getattr(self.elbo, "_loss_and_surrogate_loss", None)
        graphs = len(compiled.compiled) if compiled is not None else 0
        rng, grads = pyro.util.get_rng_state(), [p.grad for p in self.parameters()]
        loss = self.elbo.loss_and_grads(self.model, self.guide, *args, **kwargs)
        if len(self.elbo._loss_and_surrogate_loss.compiled) > graphs:
            pyro.util.set_rng_state(rng)
            for p, grad in zip(self.parameters(), grads):
                p.grad = grad
            loss = self.elbo.loss_and_grads(self.model, self.guide, *args, **kwargs)
        return float(loss)


def _weights_first(fn):
    """fn(x, task, ..., kl_u_weight=, kl_z_weight=) called as f(x, kl_u_weight, kl_z_weight, task, ...):
    the weights where the jit reads its inputs, the positional arguments."""

    @functools.wraps(fn)
    def weighted(x, kl_u_weight, kl_z_weight, *args, **kwargs):
        return fn(x, *args, kl_u_weight=kl_u_weight, kl_z_weight=kl_z_weight, **kwargs)

    return weighted


class ParamStoreOptimizer(TypeError):
    """A param-store optimizer was handed a program. A TypeError, not a RuntimeError, which Pyro's
    trace would lengthen with the trace's shapes: the message stays one line."""


def _refuse_pyro_optim() -> None:
    """Pyro's SVI gives pyro.optim the parameters a param-only trace of the step saw, as param-store
    tensors; a program's are module-local, and SVI would fail with an AttributeError deep inside."""
    if pyro.settings.get("module_local_params") and any(
        isinstance(m, TraceMessenger) and m.param_only for m in _PYRO_STACK
    ):
        raise ParamStoreOptimizer(
            "pyro.infer.SVI with a pyro.optim optimizer, or JitTrace_ELBO used directly, cannot see a "
            "pyrohvae program's parameters (module-local, not in Pyro's param store): train `loss = "
            "program.objective()` (RunConfig's `elbo` picks the estimator, jit included) with "
            "`torch.optim.Adam(loss.parameters())`, as pyrohvae.trainer.Trainer does"
        )


def split_context_size(items: int, law: str = "log-uniform") -> int:
    """A training step's context size under `split_context`: k of a task's `items` images are what
    q(u) reads and the other items − k are scored, k in 1..items − 1, log-uniform (`law`), so that
    contexts of one or two shots are as common in training as in few-shot use, or uniform. Drawn
    from torch's global generator, which checkpoints keep: a resumed run draws the same k."""
    if items < 2:
        raise ConfigError("--split-context needs --batch-size 2 or more: a context and an image to score")
    r = float(torch.rand(()))
    k = int(math.exp(r * math.log(items))) if law == "log-uniform" else 1 + int(r * (items - 1))
    return min(max(k, 1), items - 1)


class Program(PyroModule):
    """What every program shares, and what its callers ask of it (sampling, a task's model, the
    task posterior) instead of asking which model it is. Its kind, for callers that differ by it:"""

    task_latent = False  # its models differ by a task latent u with a posterior q(u | D) (HyperVAE)
    models_by_task = False  # it has more than one model: one per task
    generative_prior = True  # it draws from the model alone (a prior over all it generates)
    data_parallel = True  # its ranks stay identical under DistributedDataParallel

    @classmethod
    def minibatches(cls, config: RunConfig, data, world: int = 1):
        """The training minibatches; with `world` ranks, of the global batch they share out."""
        return TaskBatches(
            data,
            config.batch_size,
            config.tasks_per_step * world,
            config.seed,
            config.flip,
            config.task_characters,
            config.task_characters_share,
        )

    def objective(self) -> Objective:
        """−ELBO(model, guide) as a module (`Trace_ELBO()(model, guide)`, or the config's `elbo` with
        its `particles`): called on a batch it gives the differentiable loss, and its `parameters()`
        are this program's."""
        elbo = ELBOS[self.config.elbo](num_particles=self.config.particles, max_plate_nesting=2)
        return Objective(self, elbo)

    def step_kwargs(self, step: int) -> dict:
        """The keyword arguments of model and guide at training step `step` (none: the ELBO as is)."""
        return {}

    def known_tasks(self, data):
        """The part of `data` whose tasks this program has a model for (all of them, but MetaVAE's)."""
        return data

    def task_model(
        self, shots: torch.Tensor, combine: str = "product"
    ) -> tuple[TaskModel, torch.Tensor | None]:
        """The model of the task that `shots` (k, 1, 28, 28) show, and its ū (None without u)."""
        return self.conditioned(None), None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As torch's, also for the state of a run saved before the guide's networks were named
        `inference` (they were `guide_nets`)."""
        renamed = _renamed(state_dict)
        metadata = getattr(state_dict, "_metadata", None)
        if metadata is not None:  # per-module versions, keyed by the module's path
            renamed._metadata = _renamed(metadata)
        return super().load_state_dict(renamed, strict=strict, assign=assign)

    # Each program answers these in its own way.
    def model(self, x, task=None, **kwargs):
        raise NotImplementedError

    def guide(self, x, task=None, **kwargs):
        raise NotImplementedError

    def parts(self) -> dict[str, nn.Module]:
        """Its networks by what they do, for `info`."""
        raise NotImplementedError

    def choices(self, task_name: str | None) -> list:
        """The `choice`s of `conditioned` to try for data of a task (MetaVAE: its decoders)."""
        raise NotImplementedError

    def conditioned(self, context, choice=None, shots=None) -> TaskModel:
        """Model and guide of the one model that `context` (tasks, m, 1, 28, 28) picks. `shots`
        (tasks, k, 1, 28, 28): images of each task apart from those it will score, for a model whose
        p(z) reads shots; others leave them."""
        raise NotImplementedError

    def sample_logits(self, eps: torch.Tensor, which=None) -> torch.Tensor:
        """Bernoulli logits of p(x | z) for z = the standard normal draws `eps` (*batch, n, z_dim) put
        through p(z), under the model `which` picks: a HyperVAE's u (*batch, u_dim), a MetaVAE's
        training task; a VAE has one."""
        raise NotImplementedError


class VAEProgram(Program):
    """The plain VAE baseline: one encoder and one decoder for all tasks."""

    def __init__(self, config: RunConfig):
        super().__init__()
        self.config = config
        self.decoder = Decoder(config.z_dim, config.hidden, config.pixel_bias)
        self.inference = guides.get(config.guide, "vae")(config)

    @classmethod
    def minibatches(cls, config: RunConfig, data, world: int = 1):
        """`batch_size` images drawn across all tasks (× `world`): a VAE knows no task."""
        return MixedBatches(data, config.batch_size * world, config.seed, config.flip)

    @pyro_method
    def model(self, x, task=None, tasks=None, items=None):
        _refuse_pyro_optim()
        vae_model(self.decoder, self.config.z_dim, x, tasks=tasks, items=items)

    @pyro_method
    def guide(self, x, task=None):
        vae_guide(self.inference.encoder, x)

    def parts(self) -> dict[str, nn.Module]:
        return {"inference network (encoder)": self.inference, "generative network (decoder)": self.decoder}

    def choices(self, task_name: str | None) -> list:
        return [None]

    def conditioned(self, context, choice=None, shots=None) -> TaskModel:
        return TaskModel(self.model, self.guide)

    def sample_logits(self, eps: torch.Tensor, which=None) -> torch.Tensor:
        return self.decoder(eps)


class HyperVAEProgram(Program):
    """HyperVAE: the hyper-decoder θ(u), the prior on u and the guide's networks."""

    task_latent = models_by_task = True

    def __init__(self, config: RunConfig):
        super().__init__()
        self.config = config
        self.theta = ThetaGenerator(
            config.u_dim,
            config.z_dim,
            config.hidden,
            config.h_dim,
            config.theta_init_scale,
            z_prior=config.z_prior == "task",
            layout=config.theta_layout,
            pixel_bias=config.pixel_bias,
            extra_inputs=config.hidden if config.shot_features else 0,
            template=config.shot_template,
            attention=config.shot_attention,
            encoder_attention=config.shot_attention_encoder,
            attention_dim=config.shot_attention_dim,
            attention_window=config.shot_attention_window,
            attention_pixels=config.shot_attention_pixels,
            warp_grid=config.warp_grid,
        )
        self.prior = make_prior(config.prior, config.u_dim)
        self.inference = guides.get(config.guide, "hypervae")(config)
        self.shot_prior = (
            ShotPrior(
                config.z_dim,
                config.z_prior == "shots-k",
                config.z_prior == "shots-g",
                config.shot_dims,
                config.shot_scales,
            )
            if config.reads_shots
            else None
        )
        self.task_sizes = None  # the training tasks' image counts, for --kl-u-scale task (`train`)

    def kl_u_share(self, kl_u_weight, x: torch.Tensor, task):
        """KL(u)'s weight for the minibatch x of `task`: as given, or with --kl-u-scale task in
        training, times the minibatch's images over the task's (tasks, 1): KL(u) counted once for
        the task's data, each minibatch an unbiased share of its description length."""
        if self.config.kl_u_scale != "task" or task is None or not self.training:
            return kl_u_weight
        if self.task_sizes is None:
            raise ValueError("--kl-u-scale task: the program has no training task sizes (train gives them)")
        return kl_u_weight * (x.shape[1] / self.task_sizes.to(x.device)[task]).unsqueeze(-1)

    @pyro_method
    def model(
        self,
        x,
        task=None,
        kl_u_weight=1.0,
        kl_z_weight=1.0,
        record_theta=False,
        tasks=None,
        items=None,
        context_size=None,
        q_u=None,
        shots=None,
        read_shots=True,
    ):
        _refuse_pyro_optim()
        kl_u_weight = self.kl_u_share(kl_u_weight, x, task)
        if context_size is not None:  # the first `context_size` items of each task are q(u)'s context
            if self.shot_prior is not None and context_size and read_shots:
                shots = x[:, :context_size]
            x, kl_u_weight = x[:, context_size:], kl_u_weight * context_share(x.shape[1], context_size)
        hypervae_model(
            self.theta,
            self.prior,
            x,
            kl_u_weight=kl_u_weight,
            kl_z_weight=kl_z_weight,
            record_theta=record_theta,
            tasks=tasks,
            items=items,
            shot_prior=self.shot_prior,
            shots=shots if self.shot_prior is not None else None,
        )

    @pyro_method
    def guide(
        self,
        x,
        task=None,
        kl_u_weight=1.0,
        kl_z_weight=1.0,
        record_theta=False,
        context_size=None,
        q_u=None,
        shots=None,  # the model's; q(z | x) reads them where its encoder attends to them
        read_shots=True,  # False: the model's p(z) reads none of the context (`u_alone_share`)
    ):
        if not read_shots:
            shots = x[:, :0]
        hypervae_guide(
            self.theta,
            self.inference,
            x,
            self.kl_u_share(kl_u_weight, x, task),
            kl_z_weight,
            record_theta,
            context_size,
            q_u,
            shots,
            u_reads_all=self.config.u_reads_all,
        )

    def step_kwargs(self, step: int) -> dict:
        """The weights of KL(u) and KL(z) at `step` (the config's warm-up and annealing), and with
        `split_context` the size of the step's context (`split_context_size`; 0, an empty context,
        in the share `no_shot_share` of steps), and in the share `u_alone_share` `read_shots=False`:
        the model's p(z) reads none of the context, which q(u) reads."""
        config = self.config
        kl_u, kl_z = config.kl_weights(step)
        kwargs = {"kl_u_weight": kl_u, "kl_z_weight": kl_z}
        if config.split_context and self.training:
            # drawn only where asked, so that the other runs' random streams (and resumes) are as before
            r = float(torch.rand(())) if config.no_shot_share or config.u_alone_share else 1.0
            empty = r < config.no_shot_share
            kwargs["context_size"] = (
                0 if empty else split_context_size(config.batch_size, config.context_sizes)
            )
            if not empty and r < config.no_shot_share + config.u_alone_share:
                kwargs["read_shots"] = False
        return kwargs

    def parts(self) -> dict[str, nn.Module]:
        return {
            "hyper-encoder q(u|d)": self.inference,
            "hyper-decoder trunk (u -> H)": self.theta.trunk,
            "matrix layers -> main encoder": self.theta.layers["encoder"],
            "matrix layers -> main decoder": self.theta.layers["decoder"],
            "prior p(u)": self.prior,
            **({"p(z | u, shots)": self.shot_prior} if self.shot_prior is not None else {}),
        }

    def choices(self, task_name: str | None) -> list:
        return [None]

    def task_model(self, shots: torch.Tensor, combine: str = "product") -> tuple[TaskModel, torch.Tensor]:
        """θ(ū), ū the mean of q(u | the k shots (k, 1, 28, 28)) (`TaskGuide.shots_posterior`)."""
        loc, scale = self.inference.shots_posterior(shots.unsqueeze(0), combine)
        return self.conditioned_on(loc, scale), loc

    def prior_mean_u(self) -> torch.Tensor:
        """E[u] under p(u), (1, u_dim): the model θ(E[u]) knows nothing of the task."""
        return self.prior().mean.reshape(1, -1)

    @torch.no_grad()
    def task_u(self, context: torch.Tensor) -> torch.Tensor:
        """Mean of q(u | D_t) for a batch (tasks, items, 1, 28, 28): (tasks, u_dim)."""
        loc, _ = self.inference.posterior(context)
        return loc

    @torch.no_grad()
    def conditioned(self, context, choice=None, shots=None) -> TaskModel:
        """Model and guide with u fixed at the mean ū of q(u | context) and hidden from traces (θ(ū)
        with it), so that only z is sampled and only z and x are scored: the main VAE θ(ū) of
        each task. The context is not taken for the shots of p(z | u, shots) (`z_prior="shots"`),
        since callers may score the context's own images; without `shots` such a model gets
        p(z) = N(0, I)."""
        return self.conditioned_on(*self.inference.posterior(context), shots=shots)

    @torch.no_grad()
    def conditioned_on(self, loc: torch.Tensor, scale: torch.Tensor, shots=None) -> TaskModel:
        """As `conditioned`, for a q(u) given by its location and scale, each (tasks, u_dim). With
        `shots` (tasks, k, 1, 28, 28), images of each task apart from those scored, a model whose p(z)
        reads shots (`z_prior="shots"`) reads these; other models leave them."""
        u = loc.unsqueeze(-2)
        model = self.model if shots is None else functools.partial(self.model, shots=shots)
        guide = self.guide if shots is None else functools.partial(self.guide, shots=shots)

        def fix(fn):
            # θ(ū) is fixed too, and hidden like u should a caller record it (record_theta=True):
            # else every importance trace would keep a copy of it
            hidden = poutine.block(
                hide_fn=lambda site: site["name"] == "u" or site["name"].startswith("theta.")
            )
            return hidden(poutine.condition(fn, data={"u": u}))

        q = self.inference.q_u(loc, scale)
        return TaskModel(fix(model), fix(guide), q, self.kl_u(q))

    @torch.no_grad()
    def kl_u(self, q: dist.Distribution) -> torch.Tensor:
        """KL(q || p(u)) per task: analytic where torch has the pair, else by 4,096 draws."""
        p = self.prior()
        try:
            return torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            u = q.sample((4096,))
            return (q.log_prob(u) - p.log_prob(u)).mean(0)

    def sample_logits(self, eps: torch.Tensor, which=None) -> torch.Tensor:
        """Logits of p(x | z, θ(u)) for z = the standard normal draws `eps` put through p(z | u)
        (z = eps under the paper's N(0, I)); u = `which` (*batch, u_dim) broadcasts against eps
        (*batch, n, z_dim). A p(z) that reads shots is sampled by `sample_models`."""
        params = self.theta.decoder(which.unsqueeze(-2))
        return shot_logits(self.theta, params, z_from_eps(params, eps))

    @torch.no_grad()
    def sample_models(self, u: torch.Tensor, n: int, generator: torch.Generator, shots=None) -> torch.Tensor:
        """n Bernoulli means of each main VAE θ(u), u (models, u_dim), all from the same noise of
        `generator`: (models, n, 1, 28, 28). z ~ p(z | u), or p(z | u, shots) where p(z) reads shots and
        `shots` (models, k, 1, 28, 28) holds k ≥ 1; k = 0 is p(z | u) of no shot, as training's steps
        of an empty context have it."""
        eps = torch.randn(n, self.config.z_dim, generator=generator).to(u.device)
        if self.shot_prior is None or shots is None or not shots.shape[1]:
            return torch.sigmoid(self.sample_logits(eps, u))
        r = torch.rand(n, generator=generator).to(u.device)  # picks each draw's component of the mixture
        return torch.sigmoid(shots_sample_logits(self.theta, self.shot_prior, u, shots, eps, r))

    @torch.no_grad()
    def sample_task(
        self, context, n: int, generator: torch.Generator, choice=None, shots=None
    ) -> torch.Tensor:
        """n Bernoulli means of the main VAE θ(ū) chosen from `context` (1, m, 1, 28, 28)
        (`sample_models`); p(z) that reads shots reads `shots` (1, k, 1, 28, 28), else the context."""
        shots = context if shots is None else shots
        return self.sample_models(self.task_u(context), n, generator, shots)[0]


class MetaVAEProgram(Program):
    """MetaVAE (Choi et al. 2019): one inference network q(z | x, D) shared by all tasks, and one
    generative network per training task."""

    models_by_task = True
    generative_prior = False  # which decoder would it draw from?
    data_parallel = False  # its ranks would step different decoders

    def __init__(self, config: RunConfig):
        super().__init__()
        if not config.train_tasks:
            raise ConfigError("metavae needs config.train_tasks (set when training starts)")
        self.config = config
        self.decoders = PyroModule[nn.ModuleList](
            Decoder(config.z_dim, config.hidden, config.pixel_bias) for _ in config.train_tasks
        )
        self.inference = guides.get(config.guide, "metavae")(config)
        self.task_index = {name: i for i, name in enumerate(config.train_tasks)}

    @pyro_method
    def model(self, x, task, items=None):
        _refuse_pyro_optim()
        metavae_model(self.decoders, self.config.z_dim, x, task, items=items)

    @pyro_method
    def guide(self, x, task=None, context=None):
        metavae_guide(self.inference.encoder, x, context)

    def parts(self) -> dict[str, nn.Module]:
        return {
            "inference network q(z|x,D)": self.inference,
            f"generative networks ({len(self.decoders)} tasks)": self.decoders,
        }

    def choices(self, task_name: str | None) -> list:
        """The decoder of a training task, or every decoder for data of a task not trained on
        (or of no known task: None)."""
        if task_name in self.task_index:
            return [self.task_index[task_name]]
        return list(range(len(self.decoders)))

    def conditioned(self, context, choice, shots=None) -> TaskModel:
        task = torch.full((context.shape[0],), choice, dtype=torch.long, device=context.device)
        return TaskModel(
            functools.partial(self.model, task=task), functools.partial(self.guide, context=context)
        )

    def sample_logits(self, eps: torch.Tensor, which=None) -> torch.Tensor:
        return self.decoders[which](eps)

    def known_tasks(self, data):
        return data.without_tasks(sorted(set(data.task_names) - set(self.config.train_tasks)))

    def task_model(self, shots, combine="product"):
        raise ValueError("a metavae's models are its training tasks' decoders; use a hypervae or vae run")

    @torch.no_grad()
    def sample_task(
        self, context, n: int, generator: torch.Generator, choice=None, shots=None
    ) -> torch.Tensor:
        """n Bernoulli means of the decoder `choice`, z ~ p(z); the context and shots play no part."""
        z = torch.randn(n, self.config.z_dim, generator=generator).to(context.device)
        return torch.sigmoid(self.sample_logits(z, choice))


PROGRAMS = {"vae": VAEProgram, "hypervae": HyperVAEProgram, "metavae": MetaVAEProgram}


def program_class(config: RunConfig) -> type[Program]:
    return PROGRAMS[config.model]


def build(config: RunConfig) -> Program:
    return program_class(config)(config)
