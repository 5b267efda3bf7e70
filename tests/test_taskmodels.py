"""The task-model matrix: its protocol (no image scored under a model chosen from itself), its
measures on models whose task dependence is known, and the `task-models` command."""

import json

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from pyrohvae import taskmodels
from pyrohvae.cli import main
from pyrohvae.data import TaskData
from pyrohvae.program import TaskModel


def toy_data(tasks=3, per_task=12, seed=0):
    """Task t: images whose pixels are on with probability 0.1 + 0.25 t: tasks told apart by ink."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.arange(tasks).repeat_interleave(per_task) * 0.25 + 0.1
    images = (torch.rand(len(probs), 1, 28, 28, generator=g) < probs[:, None, None, None]).to(torch.uint8)
    perm = torch.randperm(len(probs), generator=g)  # tasks interleaved, as in real data
    return TaskData(
        images[perm],
        torch.arange(tasks).repeat_interleave(per_task)[perm],
        [f"t{i}" for i in range(tasks)],
        "toy",
    )


class InkModels(nn.Module):
    """A program with one model per context: pixels ~ Bernoulli(the context's mean ink), with a
    dummy z so that the scoring path is the real one. `shared=True`: every context gives the same
    model. Every context it is given is remembered, to check what was scored against what."""

    def __init__(self, shared=False):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.shared = shared
        self.seen = []

    device = torch.device("cpu")

    def choices(self, name):
        return [None]

    def conditioned(self, summary, choice=None, shots=None):
        ink = torch.tensor(0.4) if self.shared else summary.mean().clamp(0.02, 0.98)
        context = summary.reshape(-1, 28 * 28)
        self.seen.append(context)

        def model(x):
            # an image equal to one of the context's would betray the protocol: score it absurdly well
            leak = (x.reshape(*x.shape[:2], 1, -1) == context).all(-1).any(-1)
            with pyro.plate("tasks", x.shape[0], dim=-2), pyro.plate("data", x.shape[1], dim=-1):
                pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
                probs = ink.expand(x.shape)
                log_lik = dist.Bernoulli(probs=probs).to_event(3).log_prob(x)
                pyro.factor("x", torch.where(leak, torch.zeros_like(log_lik), log_lik))

        def guide(x):
            with pyro.plate("tasks", x.shape[0], dim=-2), pyro.plate("data", x.shape[1], dim=-1):
                pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))

        return TaskModel(model, guide)

    def sample_task(self, summary, n, generator, choice=None, shots=None):
        ink = 0.4 if self.shared else float(summary.mean())
        return (torch.rand(n, 1, 28, 28, generator=generator) < ink).float()


def test_contexts_are_disjoint_halves_of_each_task():
    data = toy_data(tasks=3, per_task=11)
    ctx = taskmodels.contexts(data, size=4, seed=1)
    for t, members in enumerate(data.task_members()):
        first = {tuple(r) for r in ctx.first[t].reshape(-1, 784).tolist()}
        second = {tuple(r) for r in ctx.second[t].reshape(-1, 784).tolist()}
        assert len(first) == 4 and len(second) == 4 and not first & second
        in_first = ctx.in_first[members]
        assert int(in_first.sum()) == 6  # the larger half of 11
        own_first = {tuple(r) for r in data.images[members[in_first]].reshape(-1, 784).tolist()}
        assert first <= own_first and not second & own_first


def test_no_image_is_scored_under_a_model_chosen_from_itself():
    data = toy_data()
    program = InkModels()
    scores = taskmodels.score_matrix(program, data, samples=2, context_size=5, progress=False)
    # a leak would give an own −ELBO of about 0 nats; honest scores are hundreds of nats
    assert float(scores.nelbo.min()) > 100
    assert len(program.seen) == 2 * data.num_tasks  # two contexts per task


def test_models_that_differ_by_task_are_told_apart_and_a_shared_one_is_not():
    data = toy_data()
    scores = taskmodels.score_matrix(InkModels(), data, samples=2, context_size=5, progress=False)
    assert scores.accuracy() == 1.0
    m = scores.matrix()
    assert torch.equal(m.argmin(1), torch.arange(3))  # every row lowest on the diagonal
    assert scores.gap() > 50
    shared = taskmodels.score_matrix(InkModels(shared=True), data, samples=2, context_size=5, progress=False)
    assert abs(shared.gap()) < 1e-6
    assert shared.summary()["chance"] == pytest.approx(1 / 3)


def test_a_shots_models_task_model_reads_its_context_as_shots(monkeypatch):
    """A model whose p(z) reads shots is scored with ū from its task's whole context and up to
    `CONTEXT_SHOTS` of that context as the shots (never the scored image: the context never holds it);
    with the mixture's weight all on N(0, I) its scores are those of the model without shots, up
    to KL(z) estimated by draws rather than exactly."""
    from pyrohvae.config import RunConfig
    from pyrohvae.program import build

    data = toy_data(tasks=2, per_task=50)
    pyro.clear_param_store()
    torch.manual_seed(0)
    config = RunConfig(dataset="mnist", model="hypervae", z_prior="shots", split_context=True)
    program = build(config).eval()
    with torch.no_grad():
        program.shot_prior.prior_logit.fill_(30.0)
    given = []
    conditioned_on = program.conditioned_on

    def recorded(loc, scale, shots):
        given.append((loc, shots))
        return conditioned_on(loc, scale, shots)

    monkeypatch.setattr(program, "conditioned_on", recorded)
    read = taskmodels.score_matrix(program, data, samples=2, context_size=25, progress=False).nelbo
    ctx = taskmodels.contexts(data, 25)
    assert len(given) == 4
    for (loc, shots), context in zip(given, [c for j in range(2) for c in (ctx.first[j], ctx.second[j])]):
        k = taskmodels.CONTEXT_SHOTS
        assert shots.shape[1] == k and torch.equal(shots, context[:, :k])
        assert torch.allclose(loc, program.inference.posterior(context)[0])
    monkeypatch.undo()
    monkeypatch.setattr(taskmodels, "_reads_shots", lambda program: False)  # `conditioned`: no shots
    unread = taskmodels.score_matrix(program, data, samples=2, context_size=25, progress=False).nelbo
    assert (read - unread).abs().mean() < 0.5 and (read - unread).abs().max() < 2


def test_a_shots_models_task_model_of_no_shot_is_its_u_alone(monkeypatch):
    """`task-models --shots 0`: a model whose p(z) reads shots is scored and sampled as θ(ū) with p(z)
    reading none (the model its training's steps of an empty context train), not with its context's
    shots; more shots than the context holds are refused."""
    from pyrohvae import fewshot
    from pyrohvae.config import RunConfig
    from pyrohvae.files import RequestError
    from pyrohvae.program import build

    data = toy_data(tasks=2, per_task=50)
    pyro.clear_param_store()
    torch.manual_seed(0)
    program = build(RunConfig(dataset="mnist", model="hypervae", z_prior="shots", split_context=True)).eval()
    none = taskmodels.score_matrix(program, data, samples=2, context_size=25, progress=False, shots=0).nelbo
    read = taskmodels.score_matrix(program, data, samples=2, context_size=25, progress=False).nelbo
    assert (read - none).abs().mean() > 0.1  # the shots change this model: the two differ
    monkeypatch.setattr(taskmodels, "_reads_shots", lambda program: False)  # `conditioned`: no shots
    assert torch.allclose(
        none, taskmodels.score_matrix(program, data, samples=2, context_size=25, progress=False).nelbo
    )
    monkeypatch.undo()

    context = taskmodels.contexts(data, 25).first[0]
    sample = lambda shots: program.sample_task(context, 6, torch.Generator().manual_seed(3), shots=shots)
    alone = fewshot.sample_means(program, program.task_u(context), 6, seed=3)[0]
    assert torch.allclose(sample(context[:, :0]), alone)
    assert not torch.allclose(sample(context[:, :19]), alone)
    with pytest.raises(RequestError, match="--shots 30 is more than the context's 25 images"):
        taskmodels.result(program, 0, "test", "checkpoint.pt", context_size=25, shots=30)


def test_the_outlier_model_space_score_gives_a_shots_model_its_training_tasks_shots(monkeypatch):
    """`outliers.best_task_nll` scores images that no training context holds, so a model whose p(z)
    reads shots gets each training task's first `CONTEXT_SHOTS` context images as them."""
    from pyrohvae import outliers
    from pyrohvae.config import RunConfig
    from pyrohvae.program import build

    train = toy_data(tasks=2, per_task=30)
    pyro.clear_param_store()
    torch.manual_seed(0)
    program = build(RunConfig(dataset="mnist", model="hypervae", z_prior="shots", split_context=True)).eval()
    given = []
    conditioned_on = program.conditioned_on

    def recorded(loc, scale, shots=None):
        given.append(shots)
        return conditioned_on(loc, scale, shots=shots)

    monkeypatch.setattr(program, "conditioned_on", recorded)
    scored = toy_data(tasks=2, per_task=2, seed=1).images
    nll = outliers.best_task_nll(program, train, scored, samples=2)
    assert nll.shape == (4,) and torch.isfinite(nll).all()
    assert len(given) == 2
    for t, shots in enumerate(given):
        assert shots.shape == (1, taskmodels.CONTEXT_SHOTS, 1, 28, 28)
        members = train.images[train.tasks == t].float()  # every shot one of task t's own images
        assert all((members == s).flatten(1).all(1).any() for s in shots[0])


def test_accuracy_and_gap_from_a_known_matrix():
    nelbo = torch.tensor(
        [
            [1.0, 3.0, 5.0],  # task 0: own best, others +2 and +4 -> gap 3
            [2.0, 1.0, 9.0],  # task 1: own best, gap (2 + 9) / 2 - 1 = 4.5
            [0.0, 4.0, 2.0],
        ]
    )  # task 2: task 0's model is better, gap 2 - 2 = 0
    scores = taskmodels.TaskModelScores(nelbo, torch.tensor([0, 1, 2]), ["a", "b", "c"])
    assert scores.accuracy() == pytest.approx(2 / 3)
    assert scores.accuracy_per_task() == [1.0, 1.0, 0.0]
    assert scores.accuracy([0, 1]) == 1.0 and scores.accuracy([2]) == 0.0
    two = taskmodels.TaskModelScores(nelbo[[0, 2, 2]], torch.tensor([0, 2, 2]), ["a", "b", "c"])
    assert two.accuracy_per_task() == [1.0, 0.0, 0.0]  # task b has no image: 0, not a division by 0
    assert scores.gap() == pytest.approx((3 + 4.5 + 0) / 3)
    assert torch.equal(scores.matrix(), nelbo)


def test_a_run_with_held_out_tasks_gets_their_accuracy_apart(monkeypatch):
    """`result` of a run trained with --exclude-classes: task accuracy over the tasks it trained on
    and over those it held out, each over its own images, and the line that prints them."""
    from pyrohvae.config import RunConfig

    data = toy_data()

    class HeldOut(InkModels):  # t1's model fits none of the tasks, its own images worst of all
        config = RunConfig(dataset="mnist", model="hypervae", exclude_classes=["t1"])
        models_by_task = True

        def known_tasks(self, data):
            return data

        def conditioned(self, summary, choice=None, shots=None):
            if abs(float(summary.mean()) - 0.35) < 0.1:  # the context of t1 (ink 0.35)
                return super().conditioned(torch.full_like(summary, 0.95), choice, shots)
            return super().conditioned(summary, choice, shots)

    monkeypatch.setattr(RunConfig, "load_data", lambda self, part, root=None: data)
    result, _ = taskmodels.result(HeldOut(), 10, "test", "checkpoint.pt", samples=2, agreement_samples=0)
    assert result["held_out_tasks"] == ["t1"]
    assert result["task_accuracy_trained"] == 1.0 and result["task_accuracy_held_out"] == 0.0
    assert result["task_accuracy"] == pytest.approx(2 / 3)  # every task has 12 images
    assert "on those held out (t1) " in taskmodels.describe(result)


def test_sample_agreement_counts_samples_labelled_as_their_task():
    data = toy_data()

    class Ink:  # labels an image by its ink: the toy tasks' own rule
        def predict(self, x):
            return np.clip(np.round((x.mean(1) - 0.1) / 0.25), 0, 2).astype(int)

    label = taskmodels.Labeller(Ink(), "ink", data.task_names, 1.0)
    agreement = taskmodels.sample_agreement(InkModels(), data, label, per_task=50)
    assert agreement["sample_agreement"] > 0.95
    shared = taskmodels.sample_agreement(InkModels(shared=True), data, label, per_task=50)
    assert shared["sample_agreement"] == pytest.approx(1 / 3, abs=0.05)  # every sample labelled task 1


def test_a_task_of_one_image_has_no_context_to_be_scored_against():
    data = toy_data()
    lonely = data.subset(
        torch.cat([torch.nonzero(data.tasks == 0)[:1, 0], torch.nonzero(data.tasks > 0)[:, 0]])
    )
    with pytest.raises(ValueError, match="'t0' of toy has 1 image"):
        taskmodels.contexts(lonely)


def test_task_models_command(trained_run, tmp_path):
    run = trained_run("hypervae")
    plot = tmp_path / "matrix.png"
    result = CliRunner().invoke(
        main,
        [
            "task-models",
            str(run),
            "--samples",
            "1",
            "--context-size",
            "20",
            "--agreement-samples",
            "10",
            "--plot",
            str(plot),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "task accuracy" in result.output and "sample agreement" in result.output
    written = json.loads((run / "task-models.json").read_text())
    assert written["tasks"] == 10 and written["n"] == 10_000 and written["chance"] == pytest.approx(0.1)
    assert 0 <= written["task_accuracy"] <= 1 and 0 <= written["sample_agreement"] <= 1
    assert len(written["matrix"]) == 10 and len(written["matrix"][0]) == 10
    assert 0.9 < written["labeller_test_accuracy"] <= 1  # the classifier is one worth trusting
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metavae_decoders_are_models_of_their_tasks(trained_run):
    """MetaVAE's decoder of a task is trained on that task alone: its images fare best under it."""
    run = trained_run("metavae")
    result = CliRunner().invoke(
        main,
        [
            "task-models",
            str(run),
            "--samples",
            "1",
            "--context-size",
            "20",
            "--agreement-samples",
            "0",
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["model"] == "metavae" and "sample_agreement" not in written
    assert written["own_other_gap"] > 1 and written["task_accuracy"] > 0.1


def test_task_models_refuses_a_vae(trained_run):
    result = CliRunner().invoke(main, ["task-models", str(trained_run("vae")), "--no-progress"])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == "Error: a vae run has one model for all tasks: there is nothing to tell apart"
    )


def test_posterior_stats_say_where_the_tasks_sit():
    data = toy_data()

    class InkGuide:  # ū_t = the context's mean ink in every dimension of u
        def posterior(self, x):
            return x.mean((1, 2, 3, 4))[:, None].expand(-1, 10), torch.full((len(x), 10), 0.5)

    program = InkModels()
    program.inference = InkGuide()
    stats = taskmodels.posterior_stats(program, data, context_size=5)
    ctx = taskmodels.contexts(data, 5)
    inks = torch.stack([c.mean() for c in ctx.first])
    assert stats["u_norm"] == pytest.approx(float(inks.mean()) * 10**0.5, rel=1e-5)
    assert stats["u_between_tasks"] == pytest.approx(float(inks.std()), rel=1e-5)
    assert stats["q_scale"] == pytest.approx(0.5)


def test_the_labeller_of_a_run_with_held_out_classes_knows_them(data_root):
    """A HyperVAE trained without a digit has a model of it (from its images): the labeller of its
    samples must know that digit too, from training images the run never saw; a MetaVAE's scored
    tasks lack it, and so does its labeller."""
    from pyrohvae.config import RunConfig

    config = RunConfig(dataset="mnist", exclude_classes=["3"])
    test = config.load_data("test", data_root)
    train, labelled_test = taskmodels._labeller_data(config, test, data_root)
    assert train.task_names == test.task_names == labelled_test.task_names
    assert (train.tasks == train.task_names.index("3")).sum() > 5000
    nine = test.without_tasks(["3"])
    train, labelled_test = taskmodels._labeller_data(config, nine, data_root)
    assert train.task_names == nine.task_names == labelled_test.task_names and "3" not in train.task_names
