"""Command line: `pyrohvae` (or `python cli.py` from a checkout). Each command reads its options,
calls the package, and writes or prints what it returns; the options are in cli_options.py."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import click
import torch
from click.core import ParameterSource

from . import cli_options, data
from .cli_options import out_folder, write_result
from .config import RunConfig
from .train import CHECKPOINT


@click.group(cls=cli_options.Group)
def main():
    """HyperVAE in Pyro: train, sample and inspect VAEs whose weights come from a hyper-VAE."""


def _beside(run: Path, name: str) -> Path:
    """Where a command writes its result `name` for a run: in its folder, or beside a model file."""
    return run / name if run.is_dir() else run.with_name(f"{run.stem}-{name}")


@main.command()
@cli_options.TRAIN
@click.pass_context
def train(
    ctx, out, resume, config_file, distributed, tensorboard, no_tensorboard, data_dir, device, **options
):
    """Train a model by variational inference; writes config.json, checkpoint.pt and metrics.jsonl
    to --out."""
    from .distributed import ranks_for
    from .train import run_config
    from .train import train as run_training

    if config_file is not None and resume:
        raise click.UsageError("--config starts a new run; --resume goes on with the run's own config.json")
    settings = {f.name: options.pop(f.name) for f in dataclasses.fields(RunConfig) if f.name in options}
    given = {k: v for k, v in settings.items() if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}
    config, out = run_config(settings, given, config_file, resume, out)
    if config.is_folder:
        click.echo(f"data: {config.describe_folder()}", err=True)
    options.update(data_root=data_dir, device=device, resume=resume)
    options["tensorboard"] = False if no_tensorboard else (tensorboard or True)
    with ranks_for(distributed, device) as ranks:
        summary = run_training(config, out, ranks=ranks, **options)
        ranks.barrier()  # only after a run that ended well: a failed rank leaves no one to wait for
    if ranks.writer:
        click.echo(summary.describe())


@main.command("export")
@cli_options.EXPORT_MODEL
def export_model(run_dir, out, checkpoint_name):
    """The trained model as one plain file (parameters and config) that loads with
    torch.load(FILE, weights_only=True); `evaluate`, `sample` and `pyrohvae.load` read it."""
    from .export import export
    from .train import load_run

    program, state = load_run(run_dir, "cpu", checkpoint_name)
    export(program, state["step"], out)
    count = sum(p.numel() for p in program.parameters())
    click.echo(f"wrote {out} ({program.config.model}, step {state['step']}, {count:,} parameters)")


@main.command()
@cli_options.PLOT
def plot(runs, out, smooth):
    """Loss curves of one or several runs, from their metrics.jsonl: the training loss and its terms."""
    from .monitor import plot_runs

    panels = plot_runs(list(runs), out, smooth)
    click.echo(f"wrote {out} ({', '.join(panels)} of {len(runs)} run(s))")


@main.command()
@cli_options.SAMPLE
def sample(run_dir, out, columns, prior_rows, max_tasks, seed, data_dir, device):
    """Grid of samples: one row per task (θ from q(u|d_t) of a test draw), then rows from the prior."""
    from .samples import sample_rows, save_grid
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device))
    config = program.config
    test = config.load_data("test", data_dir) if program.task_latent else None
    prior_rows = prior_rows if program.generative_prior else 0
    if not program.models_by_task and prior_rows == 0:
        raise click.UsageError(f"a {config.model} has no tasks to show: ask for --prior-rows 1 or more")
    means, labels, draws = sample_rows(program, test, columns, prior_rows, max_tasks, seed)
    title = f"{config.model} on {config.dataset}, step {state['step']}: Bernoulli means"
    save_grid(means, labels, draws, out, title)
    click.echo(f"wrote {out} ({len(labels)} rows x {columns} samples)")


@main.command()
@cli_options.EVALUATE
def evaluate(run_dir, checkpoint_name, as_json, data_dir, device, **scoring):
    """−ELBO, reconstruction, importance-sampled −log p(x), KL(z) and KL(u) on held-out data;
    writes RUN/eval.json (eval-SPLIT-MODE.json for other splits and modes; for a model file
    from `export`, MODEL-eval.json beside it)."""
    from .evaluate import describe, evaluate_run, result_name
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device), checkpoint_name)
    result = evaluate_run(program, state["step"], checkpoint_name, data_root=data_dir, **scoring)
    path = _beside(run_dir, result_name(result, checkpoint_name == CHECKPOINT))
    write_result(path, result, as_json, f"{describe(result)}; wrote {path}")


@main.command("task-models")
@cli_options.TASK_MODELS
def task_models(run_dir, checkpoint_name, plot, as_json, data_dir, device, **analysis):
    """How much the models differ by task: the images of every task scored under the model of every
    task. Task accuracy, own-vs-other gap, sample agreement; writes
    RUN_DIR/task-models[-SPLIT][-shotsN].json and a heatmap."""
    from . import taskmodels
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device), checkpoint_name)
    split, step = analysis["split"], state["step"]
    # the analysis's options are `taskmodels.result`'s parameters
    result, scores = taskmodels.result(
        program, step, checkpoint=checkpoint_name, data_root=data_dir, **analysis
    )
    shots = result.get("shots", taskmodels.CONTEXT_SHOTS)  # only a model whose p(z) reads shots has them
    suffix = "".join(
        [
            "" if split == "test" else f"-{split}",
            "" if shots == taskmodels.CONTEXT_SHOTS else f"-shots{shots}",
            "" if checkpoint_name == CHECKPOINT else f"-step{step}",
        ]
    )
    path, plot = run_dir / f"task-models{suffix}.json", plot or run_dir / f"task-models{suffix}.png"
    taskmodels.heatmap(scores, plot, f"{result['model']} {result['dataset']} ({split}), step {step}")
    write_result(path, result, as_json, f"{taskmodels.describe(result)}; wrote {path}, {plot}")


@main.command()
@cli_options.FEWSHOT
def fewshot(
    run_dir, image_paths, task_name, shots, test_paths, combine, invert, vae_run, samples, seed, out, **where
):
    """A model for a task never trained on, from a few of its images: writes θ(ū) as a VAE run folder
    (DIR/model), samples of it (DIR/samples.png) and DIR/fewshot.json; with test images, their −ELBO
    and −log p(x) under it, under the prior-mean model θ(E[u]) and, with --vae, a VAE."""
    from . import fewshot
    from .train import load_run, resolve_device

    if bool(image_paths) == (task_name is not None):
        raise click.UsageError("give the shots by one of --images PATH and --task NAME")
    program, state = load_run(run_dir, dev := resolve_device(where["device"]))
    fewshot.check_exportable(program)
    shot_images, test_images, described = fewshot.given_shots(
        program, image_paths, task_name, shots, test_paths, invert, seed, where["data_dir"]
    )
    loc, scale = program.inference.shots_posterior(shot_images.float().to(dev).unsqueeze(0), combine)
    vae = _vae(vae_run, dev) if test_images is not None else None
    out_folder(out)
    about = {"run": str(run_dir), "shots": len(shot_images), "source": described, "combine": combine}
    result = fewshot.write_task_model(
        program, state["step"], loc, scale, out, about, test_images, vae, samples, seed
    )
    read = combine if program.inference.one_draw else "read as a set"
    wrote = ", ".join(str(out / name) for name in ("model", "samples.png", "fewshot.json"))
    click.echo(f"few-shot model of {described} from {len(shot_images)} shot(s) ({read}); wrote {wrote}")
    for line in fewshot.row_lines(result["rows"], samples):
        click.echo(line)


def _vae(path: Path | None, device):
    """The VAE run of --vae, given one; before anything is written, since it may not be a VAE."""
    from .train import load_run

    vae = load_run(path, device)[0] if path is not None else None
    if vae is not None and vae.models_by_task:
        raise click.ClickException(f"--vae {path}: a {vae.config.model} run, not a vae")
    return vae


@main.command("fewshot-curve")
@cli_options.FEWSHOT_CURVE
def fewshot_curve(run_dir, vae_run, out, as_json, data_dir, device, **curve):
    """The few-shot benchmark: −ELBO and −log p(x | k other images of its task) of images of tasks the
    run never trained on, for each k (k = 0: θ(mean training-task ū) and θ(E[u])), the set figure, and
    with --vae the gains over a VAE on the same images; writes OUT/curve.json and OUT/curve.png.
    Each model's scores are kept in OUT as they are done: run again, a stopped curve resumes."""
    from . import fewshot
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device))
    vae = _vae(vae_run, program.device)
    # the curve's options are `run_curve`'s parameters; the scores are kept in OUT as they are done
    result = fewshot.run_curve(program, state["step"], vae=vae, data_root=data_dir, keep_in=out, **curve)
    out_folder(out)
    fewshot.plot_curve(result, f"{program.config.model} ({run_dir.name})", out / "curve.png")
    refined = f", q(u) refined by {curve['refine_steps']} steps" if curve["refine_steps"] else ""
    head = (
        f"few-shot curve of {run_dir} on {result['data']} ({result['tasks']} tasks never trained on, "
        f"{result['images']} images, K={curve['samples']}{refined}); "
        f"wrote {out / 'curve.json'}, {out / 'curve.png'}"
    )
    write_result(out / "curve.json", result, as_json, "\n".join([head, *fewshot.curve_lines(result)]))


@main.command()
@cli_options.OUTLIERS
def outliers(run_dir, as_json, plot, scores_csv, data_dir, device, **analysis):
    """Outlier detection: the run's test data as normal, another dataset's as outliers; AUC, FPR, FNR.
    Writes RUN_DIR/outliers-OTHER.json (outliers-OTHER-SCORE.json for the other scores)."""
    from . import outliers
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device))
    # the analysis's options are `detect`'s parameters
    found = outliers.detect(program, run_dir, state["step"], data_root=data_dir, **analysis)
    other, score, config = analysis["other"], analysis["score"], program.config
    path = run_dir / f"outliers-{data.short_name(other)}{'' if score == 'typicality' else '-' + score}.json"
    if plot is not None:
        title = f"{config.dataset} normal, {other} outliers ({100 * analysis['fraction']:g}%)"
        outliers.roc_figure({f"{config.model} ({score})": found.metrics}, plot, title)
    if scores_csv is not None:
        outliers.write_scores(scores_csv, found.mixed, found.values, config.dataset, other)
    write_result(path, found.result, as_json, "\n".join(found.lines()) + f"; wrote {path}")


@main.command()
@cli_options.BACKGROUND
def background(run_dir, flips, steps, samples, progress, data_dir, device):
    """Background models for `outliers --score ratio`: one per μ, trained like the run on its normal
    data with a share μ of the pixels flipped (RUN/background-flipμ/), and μ chosen on normal
    data only (RUN/background.json): the least tie between the ratio score and the ink."""
    from . import background
    from .train import load_run, resolve_device

    program, _ = load_run(run_dir, resolve_device(device))
    flips = flips or background.FLIPS
    choice = background.train_backgrounds(run_dir, program, flips, steps, samples, data_dir, device, progress)
    tried = ", ".join(f"μ {c['flip']:g}: ρ {c['ink_spearman']:+.3f}" for c in choice["candidates"])
    wrote = run_dir / background.CHOICE
    click.echo(f"background of {run_dir}: μ = {choice['flip']:g} ({tried}); wrote {wrote}")


@main.command()
@cli_options.DISCOVER
def discover(run_dir, target, target_class, mode, seed, threads, out, data_dir, device, **search):
    """Bayesian optimisation (BoTorch) for the design closest to a target, beside random search.
    Writes DIR/discovery.json, the best design of every step and a trace figure."""
    from . import discovery
    from .train import load_run, resolve_device

    if (target is None) == (target_class is None):
        raise click.UsageError("give one of --target PATH.png and --target-class C")
    program, _ = load_run(run_dir, resolve_device(device))
    mode = mode or ("joint" if program.task_latent else "vae")
    image, described = discovery.target_of(program, target, target_class, seed, data_dir)
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    searches = discovery.searches(program, image, mode, seed=seed, **search)
    out_folder(out)
    about = {
        "run": str(run_dir),
        "model": program.config.model,
        "seed": seed,
        "refit_every": search["refit_every"],
    }
    summary = discovery.write_searches(searches, image, described, out, about)
    click.echo(f"{discovery.describe(searches, summary)}; wrote {out}")


@main.command()
@cli_options.INSPECT
def inspect(run_dir, draws, split, seed, limit, max_tasks, out, progress, data_dir, device):
    """ArviZ view of the task posteriors q(u|d_t): DIR/posterior.nc, a forest plot and a PCA map."""
    from . import posteriors
    from .train import load_run, resolve_device

    program, _ = load_run(run_dir, resolve_device(device))
    if not program.task_latent:
        raise click.ClickException(f"a {program.config.model} run has no task latent u to inspect")
    scored = program.config.load_data(split, data_dir)
    idata = posteriors.task_posteriors(program, scored, draws, seed, limit=limit, progress=progress)
    out_folder(out)
    posteriors.save_netcdf(idata, out / "posterior.nc")
    posteriors.forest_plot(idata, out / "forest.png", max_tasks)
    posteriors.pca_map(idata, out / "tasks_pca.png")
    with __import__("pandas").option_context("display.max_rows", 40, "display.width", 120):
        click.echo(posteriors.summary(idata))
    stats = idata.task_stats
    click.echo(
        f"{len(stats.task)} tasks: KL(u) mean {float(stats.kl_u.mean()):.2f} nats, "
        f"−ELBO mean {float(stats.nelbo.mean()):.2f}; wrote {out}/posterior.nc, forest.png, tasks_pca.png"
    )


@main.command()
@cli_options.INTERPOLATE
def interpolate(run_dir, source, target, out, steps, columns, split, seed, data_dir, device):
    """Models θ(u) on the straight line between two tasks' posterior means: a row per model."""
    from .samples import interpolation_rows, save_grid
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device))
    scored = program.config.load_data(split, data_dir)
    means, labels = interpolation_rows(program, scored, source, target, steps, columns, seed)
    title = f"θ(u) from {source} to {target} ({program.config.dataset}, step {state['step']})"
    save_grid(means, labels, None, out, title)
    click.echo(f"wrote {out} ({steps} models x {columns} samples)")


@main.command()
@cli_options.INFO
def info(model, preset):
    """Parameter counts per part of a model (the architecture does not depend on the dataset)."""
    from .nets import count_parameters
    from .program import build

    # One training task: MetaVAE's count grows by one decoder per task.
    config = RunConfig(model=model, dataset="mnist", train_tasks=["one task"], preset=preset)
    program = build(config)
    rows = [(name, count_parameters(part)) for name, part in program.parts().items()]
    rows.append(("total trainable", count_parameters(program)))
    width = max(len(name) for name, _ in rows)
    click.echo(f"{model}: parameters")
    for name, n in rows:
        click.echo(f"  {name:<{width}}  {n:>10,}")
    if program.task_latent:
        enc, dec = (
            sum(math.prod(s) for s in program.theta.shapes[half].values()) for half in ("encoder", "decoder")
        )
        click.echo(f"generated per task by θ(u): main encoder {enc:,}, main decoder {dec:,}")
    elif program.models_by_task:
        click.echo("MetaVAE holds one generative network per training task: add its count per task")


if __name__ == "__main__":
    main()
