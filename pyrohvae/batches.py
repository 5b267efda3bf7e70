"""Minibatches for training, drawn by a generator of their own so that runs resume exactly.

With `flip` > 0 (a background model's training, `train --flip`), a share `flip` of every image's
pixels is flipped at random, afresh each step, by the same generator.
"""

from __future__ import annotations

import torch

from .data import TaskData


class TaskBatches:
    """`tasks_per_step` distinct tasks per step, `batch_size` images from each.

    Tasks are drawn with probability proportional to their size, so every training image is
    equally likely to be seen, as in a plain VAE; the images of a task without replacement, or
    with replacement where the task is smaller than a batch.

    With `characters` > 0 (Omniglot's alphabets as tasks, `--task-characters`), a share
    `characters_share` of the tasks' minibatches are drawn from `characters` of the task's characters
    (all of them where it has fewer), chosen at random: sets narrower than an alphabet, where the
    drawing scored is often of a character among the shots read.
    """

    def __init__(
        self,
        data: TaskData,
        batch_size: int,
        tasks_per_step: int,
        seed: int,
        flip: float = 0.0,
        characters: int = 0,
        characters_share: float = 1.0,
    ):
        if tasks_per_step > data.num_tasks:
            raise ValueError(
                f"--tasks-per-step {tasks_per_step} exceeds the {data.num_tasks} tasks of {data.name}"
            )
        if characters and data.groups is None:
            raise ValueError(f"--task-characters: the tasks of {data.name} are not made of characters")
        self.data = data
        self.batch_size = batch_size
        self.tasks_per_step = tasks_per_step
        self.members = data.task_members()
        self.weights = data.task_sizes().double()
        self.generator, self.flip = torch.Generator().manual_seed(seed), flip
        self.characters, self.characters_share = characters, characters_share
        if characters:
            self.by_character = [
                [members[data.groups[members] == c] for c in torch.unique(data.groups[members])]
                for members in self.members
            ]

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (tasks_per_step, batch_size, 1, 28, 28) and their tasks (tasks_per_step,)."""
        g = self.generator
        tasks = torch.multinomial(self.weights, self.tasks_per_step, generator=g)
        picks = []
        for t in tasks.tolist():
            members = self.members[t]
            if self.characters and torch.rand((), generator=g) < self.characters_share:
                own = self.by_character[t]
                picked = torch.randperm(len(own), generator=g)[: self.characters]
                members = torch.cat([own[i] for i in picked])
            if len(members) >= self.batch_size:
                idx = torch.randperm(len(members), generator=g)[: self.batch_size]
            else:
                idx = torch.randint(len(members), (self.batch_size,), generator=g)
            picks.append(members[idx])
        return _flipped(self.data.images[torch.stack(picks)], self.flip, g), tasks

    def __iter__(self):
        return self


class MixedBatches:
    """One batch of `batch_size` images drawn across all tasks (the plain VAE's minibatches)."""

    def __init__(self, data: TaskData, batch_size: int, seed: int, flip: float = 0.0):
        self.data = data
        self.batch_size = batch_size
        self.generator, self.flip = torch.Generator().manual_seed(seed), flip

    def __next__(self) -> tuple[torch.Tensor, None]:
        """uint8 images (1, batch_size, 1, 28, 28); no task."""
        idx = torch.randperm(len(self.data), generator=self.generator)[: self.batch_size]
        return _flipped(self.data.images[idx].unsqueeze(0), self.flip, self.generator), None

    def __iter__(self):
        return self


def _flipped(x: torch.Tensor, flip: float, generator: torch.Generator) -> torch.Tensor:
    if not flip:
        return x
    return x ^ (torch.rand(x.shape, generator=generator) < flip).to(x.dtype)
