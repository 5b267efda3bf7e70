"""The training loop, written as in Pyro's `examples/svi_torch.py`, with hooks beside it.

A step: the negative ELBO of a minibatch from the program's ELBO module (`Trace_ELBO()(model,
guide)`, or the config's estimator: `Program.objective`), its backward pass, one fused
`torch.optim.Adam` update of every parameter; the learning rate follows the config's schedule
through a torch `LambdaLR`. With
several ranks the ELBO module is wrapped in `DistributedDataParallel`, which averages the
gradients across ranks during the backward pass.

Everything else a run does is a hook: an object with `on_step(trainer, step, loss)` (after every
step; `loss` None where a non-finite loss was skipped), `on_checkpoint(trainer, step)` (at every
checkpoint step, in the order the hooks are given), `on_log(trainer, line)` (every metrics line,
for the hooks `monitor.MetricsFile` was given as listeners) and `close()` (at the end, however the
loop ends). The checkpoint file, the metrics file, the progress bar and TensorBoard are hooks
(`train.py`, `monitor.py`). A run asked to stop (SIGINT, SIGTERM: `train.py`) stops after the step
in progress, checkpointed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import pyro
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR

from . import checkpoint
from .distributed import Ranks


class Hook:
    """A hook that does nothing; subclasses override what they need."""

    def on_step(self, trainer: Trainer, step: int, loss: float | None) -> None:
        pass

    def on_checkpoint(self, trainer: Trainer, step: int) -> None:
        pass

    def on_log(self, trainer: Trainer, line: dict) -> None:
        """A metrics line (`monitor.MetricsFile`), for a hook it was given to as a listener."""

    def close(self) -> None:
        pass


class NonFiniteLoss(Exception):
    """A step's loss was NaN or infinite and the run was asked to stop there."""


class Trainer:
    """A program, its ELBO module, optimizer and schedule, and where training stands: `step`
    (steps done), `seconds` (of training), `skipped` (updates skipped for a non-finite loss),
    `batch` (the minibatch of the last step, on the device, for hooks that look at it)."""

    def __init__(self, program, ranks: Ranks | None = None, device_ids=None):
        self.program, self.config, self.ranks = program, program.config, ranks or Ranks()
        objective = program.objective()
        self.optimizer = torch.optim.Adam(objective.parameters(), lr=self.config.lr, fused=True)
        config = self.config  # the rate of step s (from 1) is lr_at(s): the scheduler counts from 0
        self.scheduler = LambdaLR(self.optimizer, lambda done: config.lr_at(done + 1) / config.lr)
        if self.ranks.parallel and not objective.differentiable:
            raise ValueError(
                f"--elbo {self.config.elbo} gives no differentiable loss for DistributedDataParallel to "
                "average: train it in one process"
            )
        # Broadcasts rank 0's parameters and buffers at construction; averages gradients in backward.
        self.objective = DistributedDataParallel(objective, device_ids) if self.ranks.parallel else objective
        self.device = program.device
        self.step, self.seconds, self.skipped, self.batch = 0, 0.0, 0, None
        self.checked = False  # whether a step ran under Pyro's validation (`update`)

    def update(self, x: torch.Tensor, task=None) -> tuple[float, bool]:
        """One step on the minibatch x (tasks, items, 1, 28, 28): the loss (the mean over ranks),
        and whether the parameters moved (not for a non-finite loss)."""
        kwargs = self.program.step_kwargs(self.step + 1)
        # Pyro's validation (on unless a user turned it off) checks every site's arguments,
        # support and shapes: about 1 ms of a step of 5 images on the CPU, and on a GPU a wait for
        # the device at each check. The first step a trainer takes runs as the user has it, so a
        # program that breaks Pyro's rules fails there with Pyro's message; the rest run
        # unchecked, and a NaN they make is a non-finite loss (`run`'s `on_nan`).
        with pyro.validation_enabled(False) if self.checked else contextlib.nullcontext():
            if self.ranks.parallel:
                loss = self.objective(x, task, **kwargs)
                loss.backward()
                loss = self.ranks.mean(float(loss.detach()))
            else:
                loss = self.objective.loss_and_grads(x, task, **kwargs)
        self.checked = True
        finite = math.isfinite(loss)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # None, not zeros: Adam leaves alone what no step touched
        self.scheduler.step()
        self.step += 1
        return loss, finite

    def state(self) -> dict:
        return {
            "step": self.step,
            "seconds": self.seconds,
            "skipped": self.skipped,
            "program": self.program.state_dict(),
            "optim": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        """Where a checkpoint left off; a format-1 checkpoint's optimizer through
        `checkpoint.load_format1_optimizer`."""
        self.program.load_state_dict(state["program"])
        self.step, self.seconds, self.skipped = state["step"], state["seconds"], state.get("skipped", 0)
        if "scheduler" in state:
            self.optimizer.load_state_dict(state["optim"])
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            checkpoint.load_format1_optimizer(
                self.optimizer,
                self.scheduler,
                dict(self.program.named_parameters()),
                state["optim"],
                self.step,
                self.config.lr_at(self.step + 1),
            )

    # A caller's torch.no_grad() (a notebook cell) would make the loss's backward pass fail, or
    # with it skipped, "train" without moving a parameter.
    @torch.enable_grad()
    def run(
        self,
        batches,
        hooks: list[Hook],
        checkpoint_due: Callable[[int], bool],
        on_nan: str = "stop",
        stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Steps until `config.steps`, from `batches` (`batches.py`), hooks after each. `stop` is
        asked after every step: when it says so, the step reached is checkpointed and the loop
        ends early. Returns whether the run reached `config.steps`."""
        try:
            while self.step < self.config.steps:
                tic = time.perf_counter()
                self.batch = self._next(batches)
                loss, updated = self.update(*self.batch)
                self.seconds += time.perf_counter() - tic
                if not updated and on_nan == "stop":
                    raise NonFiniteLoss(f"loss is {loss} at step {self.step}")
                self.skipped += not updated
                for hook in hooks:
                    hook.on_step(self, self.step, loss if updated else None)
                due = checkpoint_due(self.step)
                stopping = stop()
                if due or stopping:
                    for hook in hooks:
                        hook.on_checkpoint(self, self.step)
                if stopping:
                    return False
            return True
        finally:
            for hook in hooks:
                hook.close()

    def _next(self, batches) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, task = self.ranks.shard(*next(batches))
        return x.to(self.device, torch.float32), task
