"""Command line: `pyrohvae` (or `python cli.py` from a checkout)."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path

import click
import torch
from click.core import ParameterSource

from . import data, guides
from .config import DEFAULT_PRESET, MODELS, PARTS, PRESETS, RunConfig
from .fewshot import SHOTS
from .files import UserError
from .outliers import SCORES as OUTLIER_SCORES
from .outliers import SHIFTED
from .priors import PRIORS
from .train import CHECKPOINT, Interrupted


class _Group(click.Group):
    """Every error is one line on stderr: click's usage errors too, with the --help hint folded in."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        run = functools.partial(super().main, args, prog_name, complete_var, standalone_mode=False, **extra)
        if not standalone_mode:
            return run()
        try:
            code = run()
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            click.echo(f"Error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Interrupted as e:  # the shell's convention, which schedulers read: 128 + the signal
            stopped = click.ClickException(str(e))
            stopped.exit_code = 128 + e.signum
            raise stopped from None
        except UserError as e:  # one line, exit code 1, no traceback
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None


_json = click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")


@click.group(cls=_Group)
def main():
    """HyperVAE in Pyro: train, sample and inspect VAEs whose weights come from a hyper-VAE."""


_data_dir = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help=f"Data root in torchvision's layout [default: ${data.DATA_DIR_ENV}, else ./data].",
)


class _Dataset(click.ParamType):
    """A built-in dataset by name, or a folder of task folders (docs/data.md)."""

    name = "|".join(data.DATASETS) + "|PATH"

    def convert(self, value, param, ctx):
        if value in data.DATASETS:
            return value
        path = Path(value).expanduser()
        if not path.is_dir():
            self.fail(f"{value!r} is neither one of {', '.join(data.DATASETS)} nor a folder", param, ctx)
        return str(path.absolute())


class _Outliers(_Dataset):
    """A dataset of outliers: one _Dataset takes, or a shifted set (outliers.SHIFTED)."""

    name = "|".join((*data.DATASETS, *SHIFTED)) + "|PATH"

    def convert(self, value, param, ctx):
        return value if value in SHIFTED else super().convert(value, param, ctx)


def _short(dataset: str) -> str:
    """A dataset as file names show it: its name, or its folder's."""
    return dataset if dataset in data.DATASETS else Path(dataset).name


_device = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
_run_dir = click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
# A run folder, or a model file written by `export`.
_run_or_model = click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path, exists=True))


def _beside(run: Path, name: str) -> Path:
    """Where a command writes its result `name` for a run: in its folder, or beside a model file."""
    return run / name if run.is_dir() else run.with_name(f"{run.stem}-{name}")


# What `train` takes for a RunConfig field beyond what config.py says of it: the types click needs.
_SETTING_TYPES = {
    "dataset": lambda: {"type": _Dataset()},
    "guide": lambda: {"type": click.Choice(guides.names())},
    "prior": lambda: {"type": click.Choice(sorted(PRIORS))},
    "exclude_classes": lambda: {
        "type": str,
        "default": "",
        "show_default": False,
        "callback": lambda ctx, param, v: [c for c in v.split(",") if c],
    },
}


def _setting_option(field: dataclasses.Field):
    """`--the-name` for a RunConfig field documented for `train` (config.setting)."""
    meta = dict(field.metadata)
    name = "--" + field.name.replace("_", "-")
    default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
    kind = field.type.split(" |")[0]
    spec = {"default": default, "help": meta.pop("help") or None, "show_default": default is not None}
    if kind == "bool":
        if default is None:  # a tri-state: given either way, or left to the program
            return click.option(f"{name}/--no-{name[2:]}", field.name, default=None, help=spec["help"])
        return click.option(name, field.name, is_flag=True, help=spec["help"])
    if "choices" in meta:
        spec["type"] = click.Choice(list(meta.pop("choices")))
    elif kind in ("int", "float"):
        spec["type"] = (click.IntRange if kind == "int" else click.FloatRange)(**meta)
    spec.update(_SETTING_TYPES.get(field.name, dict)())
    return click.option(name, field.name, **spec)


def _setting_options(command):
    """`train`'s options for the settings of a run, in RunConfig's order."""
    for field in reversed(dataclasses.fields(RunConfig)):
        if "help" in field.metadata:
            command = _setting_option(field)(command)
    return command


@main.command()
@_setting_options
@_data_dir
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/DATASET-MODEL]."
)
@_device
@click.option("--resume", is_flag=True, help="Go on from the run folder's checkpoint.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--keep-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also keep the checkpoint of every N-th step as checkpoint-stepN.pt (0: none), "
    "to choose among them later, e.g. on the validation part.",
)
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--on-nan",
    type=click.Choice(["stop", "skip"]),
    default="stop",
    show_default=True,
    help="A non-finite loss stops the run (last checkpoint kept) or skips that step's update.",
)
@click.option("--deterministic", is_flag=True, help="PyTorch's deterministic algorithms (for CUDA).")
@click.option(
    "--distributed",
    is_flag=True,
    help="One rank of a data-parallel run started by torchrun: each rank takes "
    "--tasks-per-step tasks of every step, gradients averaged across ranks.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Start from a config file (a run's config.json, or one written by hand with some of its keys); "
    "options given on the command line override it.",
)
@click.option(
    "--tensorboard",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for TensorBoard's event files [default: the run folder].",
)
@click.option("--no-tensorboard", is_flag=True, help="Write no TensorBoard event files.")
@click.option(
    "--image-every",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Steps between the sample grids sent to TensorBoard (0: none).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_context
def train(
    ctx,
    data_dir,
    out,
    device,
    resume,
    checkpoint_every,
    keep_every,
    log_every,
    on_nan,
    deterministic,
    distributed,
    config_file,
    tensorboard,
    no_tensorboard,
    image_every,
    progress,
    **options,
):
    """Train a model by variational inference; writes config.json, checkpoint.pt and metrics.jsonl to --out."""
    from .train import resume_config
    from .train import train as run_training

    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}
    if config_file is not None and resume:
        raise click.UsageError("--config starts a new run; --resume goes on with the run's own config.json")
    if config_file is not None:
        options = {**options, **RunConfig.read_file(config_file), **given}
    out = out or Path("runs") / f"{_short(options['dataset'])}-{options['model']}"
    config = resume_config(out, given) if resume else RunConfig(**options)
    if config.is_folder:
        click.echo(f"data: {config.describe_folder()}", err=True)
    from .distributed import Ranks

    try:
        ranks = Ranks.start(device) if distributed else Ranks()
    except (RuntimeError, ValueError) as e:
        raise click.ClickException(f"--distributed: {e}") from None
    try:
        summary = run_training(
            config,
            out,
            data_root=data_dir,
            device=device,
            resume=resume,
            checkpoint_every=checkpoint_every,
            keep_every=keep_every,
            log_every=log_every,
            progress=progress,
            on_nan=on_nan,
            deterministic=deterministic,
            ranks=ranks,
            tensorboard=False if no_tensorboard else (tensorboard or True),
            image_every=image_every,
        )
        ranks.barrier()  # only after a run that ended well: a failed rank leaves no one to wait for
    finally:
        ranks.close()
    if ranks.writer:
        click.echo(summary.describe())


@main.command("export")
@_run_dir
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Model file (.pt)."
)
@click.option(
    "--checkpoint",
    "checkpoint_name",
    default=CHECKPOINT,
    show_default=True,
    help="Which checkpoint of the run folder: the last, or one kept by --keep-every.",
)
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
@click.argument(
    "runs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False, exists=True)
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="PNG file.")
@click.option(
    "--smooth",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Moving average over this many logged lines.",
)
def plot(runs, out, smooth):
    """Loss curves of one or several runs, from their metrics.jsonl: the training loss and its terms."""
    from .monitor import plot_runs

    try:
        panels = plot_runs(list(runs), out, smooth)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {out} ({', '.join(panels)} of {len(runs)} run(s))")


@main.command()
@_run_or_model
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="PNG file.")
@click.option("--columns", type=click.IntRange(1, 50), default=10, show_default=True)
@click.option(
    "--prior-rows",
    type=click.IntRange(0, 50),
    default=4,
    show_default=True,
    help="Rows from u ~ p(u) (z ~ p(z) for a VAE).",
)
@click.option("--max-tasks", type=click.IntRange(0, 200), default=50, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@_data_dir
@_device
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
@_run_or_model
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Importance samples per datum.",
)
@click.option(
    "--split",
    type=click.Choice(PARTS),
    default="test",
    show_default=True,
    help="Which part of the run's data to score.",
)
@click.option(
    "--mode",
    type=click.Choice(["task", "datum"]),
    default="task",
    show_default=True,
    help="task: θ of each task from one random draw of it (the paper); datum: from each x itself.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Score about N data, spread over the tasks."
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--checkpoint",
    "checkpoint_name",
    default=CHECKPOINT,
    show_default=True,
    help="Which checkpoint of the run folder: the last, or one kept by --keep-every.",
)
@_json
@click.option("--progress/--no-progress", default=True, show_default=True)
@_data_dir
@_device
def evaluate(
    run_dir, samples, split, mode, limit, seed, checkpoint_name, as_json, progress, data_dir, device
):
    """−ELBO, reconstruction, importance-sampled −log p(x), KL(z) and KL(u) on held-out data;
    writes RUN/eval.json (eval-SPLIT-MODE.json for other splits and modes; for a model file
    from `export`, MODEL-eval.json beside it)."""

    from .evaluate import run_evaluation
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device), checkpoint_name)
    config = program.config
    scored = config.load_data(split, data_dir)
    result = {
        "model": config.model,
        "dataset": config.dataset,
        "split": split,
        "step": state["step"],
        "checkpoint": checkpoint_name,
    }
    result.update(run_evaluation(program, scored, samples, mode, limit, seed, progress))
    name = "eval.json" if (split, mode) == ("test", "task") else f"eval-{split}-{mode}.json"
    if checkpoint_name != CHECKPOINT:
        name = name.replace(".json", f"-step{state['step']}.json")
    _write_result(_beside(run_dir, name), result, as_json)
    if as_json:
        return
    kl_u = "" if result["kl_u"] is None else f"  KL(u) {result['kl_u']:.2f}"
    click.echo(
        f"{config.model} {config.dataset} {split}: -ELBO {result['nelbo']:.2f}  recon {result['recon']:.2f}  "
        f"-log p(x) {result['nll']:.2f} ± {result['nll_stderr'] or 0:.2f}  KL(z) {result['kl_z']:.2f}{kl_u}  "
        f"(n={result['n']}, K={samples}, PSIS k̂ median {result['psis_khat_median']:.2f}); "
        f"wrote {_beside(run_dir, name)}"
    )


@main.command("task-models")
@_run_dir
@click.option(
    "--split",
    type=click.Choice(PARTS),
    default="test",
    show_default=True,
    help="Which part of the run's data to score (validation: for choosing among runs).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Draws of z per image and model for the −ELBO's reconstruction term.",
)
@click.option(
    "--context-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Images of a task its model is chosen from (the paper's guide reads one random draw).",
)
@click.option(
    "--agreement-samples",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Samples per task's model for the sample agreement (0: skip it).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--checkpoint",
    "checkpoint_name",
    default=CHECKPOINT,
    show_default=True,
    help="Which checkpoint of the run folder: the last, or one kept by --keep-every.",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Heatmap PNG [default: RUN_DIR/task-models[-SPLIT].png].",
)
@_json
@click.option("--progress/--no-progress", default=True, show_default=True)
@_data_dir
@_device
def task_models(
    run_dir,
    split,
    samples,
    context_size,
    agreement_samples,
    seed,
    checkpoint_name,
    plot,
    as_json,
    progress,
    data_dir,
    device,
):
    """How much the models differ by task: the images of every task scored under the model of every
    task. Task accuracy, own-vs-other gap, sample agreement; writes RUN_DIR/task-models[-SPLIT].json
    and a heatmap."""
    import json

    from . import taskmodels
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device), checkpoint_name)
    config = program.config
    if not program.models_by_task:
        raise click.ClickException(
            f"a {config.model} run has one model for all tasks: there is nothing to tell apart"
        )
    scored = program.known_tasks(config.load_data(split, data_dir))
    try:
        scores = taskmodels.measure(
            program, scored, samples, context_size, agreement_samples, seed, progress, data_dir
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    suffix = "" if split == "test" else f"-{split}"
    if checkpoint_name != CHECKPOINT:
        suffix += f"-step{state['step']}"
    result = {
        "model": config.model,
        "dataset": config.dataset,
        "guide": config.guide,
        "split": split,
        "step": state["step"],
        "checkpoint": checkpoint_name,
        "samples": samples,
        "context_size": context_size,
        "seed": seed,
        **scores.summary(),
        "task_names": scores.task_names,
        "matrix": taskmodels.rounded(scores.matrix().tolist()),
    }
    _write_result(run_dir / f"task-models{suffix}.json", result)
    plot = plot or run_dir / f"task-models{suffix}.png"
    taskmodels.heatmap(scores, plot, f"{config.model} {config.dataset} ({split}), step {state['step']}")
    if as_json:
        click.echo(json.dumps(result))
        return
    agreement = ""
    if "sample_agreement" in result:
        agreement = (
            f"  sample agreement {result['sample_agreement']:.3f} ({result['labeller']}, test accuracy "
            f"{result['labeller_test_accuracy']:.3f})"
        )
    click.echo(
        f"{config.model} {config.dataset} {split}: task accuracy {result['task_accuracy']:.3f} (chance "
        f"{result['chance']:.3f})  own-vs-other gap {result['own_other_gap']:.2f} nats{agreement}  "
        f"(n={result['n']}, {result['tasks']} tasks); wrote {run_dir / f'task-models{suffix}.json'}, {plot}"
    )


@main.command()
@_run_dir
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="The shots: image files or folders of them (repeat the option for more).",
)
@click.option(
    "--task",
    "task_name",
    default=None,
    help="The shots from a task of the run's test data instead, e.g. a held-out class or an "
    "unseen alphabet (--split background); its other test images are scored.",
)
@click.option(
    "--shots",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="With --task: how many of its images are the shots.",
)
@click.option(
    "--test",
    "test_paths",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="Test images of the task (files or folders) to score.",
)
@click.option(
    "--combine",
    type=click.Choice(["product", "mean"]),
    default="product",
    show_default=True,
    help="How the posteriors of the shots combine, for a guide that reads one draw.",
)
@click.option(
    "--invert/--no-invert",
    default=None,
    help="Image files: invert gray levels [default: when the images are mostly light at their border].",
)
@click.option(
    "--vae",
    "vae_run",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="A VAE run to score the test images under too.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Importance samples per test image.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder.")
@_data_dir
@_device
def fewshot(
    run_dir,
    image_paths,
    task_name,
    shots,
    test_paths,
    combine,
    invert,
    vae_run,
    samples,
    seed,
    out,
    data_dir,
    device,
):
    """A model for a task never trained on, from a few of its images: writes θ(ū) as a VAE run folder
    (DIR/model), samples of it (DIR/samples.png) and DIR/fewshot.json; with test images, their −ELBO
    and −log p(x) under it, under the prior-mean model θ(E[u]) and, with --vae, a VAE."""

    from . import fewshot as fs
    from .train import load_run, resolve_device

    if bool(image_paths) == (task_name is not None):
        raise click.UsageError("give the shots by one of --images PATH and --task NAME")
    program, state = load_run(run_dir, resolve_device(device))
    if not program.task_latent:
        raise click.ClickException(f"a {program.config.model} run has no task latent u: use a hypervae run")
    dev = resolve_device(device)
    try:
        if task_name is not None:
            shot_images, test_images, described = fs.task_shots(
                program.config.load_data("test", data_dir), task_name, shots, seed
            )
        else:
            shot_images, names = fs.load_images(image_paths, invert)
            test_images, described = None, f"{len(names)} image file(s)"
        if test_paths:
            test_images = fs.load_images(test_paths, invert)[0]
        loc, scale = program.task_posterior(shot_images.float().to(dev), combine)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    vae = load_run(vae_run, dev)[0] if vae_run is not None and test_images is not None else None
    if vae is not None and vae.models_by_task:  # before anything is written
        raise click.ClickException(f"--vae {vae_run}: a {vae.config.model} run, not a vae")
    _out_folder(out)
    about = {"run": str(run_dir), "shots": len(shot_images), "source": described, "combine": combine}
    result = fs.write_task_model(
        program, state["step"], loc, scale, out, about, test_images, vae, samples, seed
    )
    click.echo(
        f"few-shot model of {described} from {len(shot_images)} shot(s) "
        f"({combine if program.guide_nets.one_draw else 'read as a set'}); "
        f"wrote {out / 'model'}, {out / 'samples.png'}, {out / 'fewshot.json'}"
    )
    for row in result["rows"]:
        click.echo(
            f"  {row['model']:<10}  -ELBO {row['nelbo']:.2f}  -log p(x) {row['nll']:.2f} ± "
            f"{row['nll_stderr'] or 0:.2f}  (n={row['n']}, K={samples})"
        )


def _shot_counts(ctx, param, value):
    try:
        shots = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r}: shot counts separated by commas, e.g. 0,1,5,9") from None
    if not shots or shots[0] < 0:
        raise click.BadParameter(f"{value!r}: shot counts of 0 or more, e.g. 0,1,5,9")
    return shots


@main.command("fewshot-curve")
@_run_dir
@click.option(
    "--shots",
    default=",".join(map(str, SHOTS)),
    show_default=True,
    callback=_shot_counts,
    help="Shot counts k, comma-separated: each scored image under the model made from k other "
    "images of its task.",
)
@click.option(
    "--split",
    type=click.Choice(["test", "held-out"]),
    default="test",
    show_default=True,
    help="The run's part whose tasks it never trained on: the test part (held-out classes, "
    "Omniglot's evaluation alphabets) or the training images of the --exclude-classes tasks "
    "(for choosing a configuration without the test set).",
)
@click.option(
    "--dataset",
    "folder",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="A folder of task folders never trained on instead (every image of it).",
)
@click.option(
    "--per-task", type=click.IntRange(min=1), default=4, show_default=True, help="Images scored per task."
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Importance samples per image and model.",
)
@click.option(
    "--vae",
    "vae_run",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="A VAE run to score the same images under, for the gains.",
)
@click.option(
    "--combine",
    type=click.Choice(["product", "mean"]),
    default="product",
    show_default=True,
    help="How the posteriors of the shots combine, for a guide that reads one draw.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for curve.json and curve.png.",
)
@_json
@click.option("--progress/--no-progress", default=True, show_default=True)
@_data_dir
@_device
def fewshot_curve(
    run_dir,
    shots,
    split,
    folder,
    per_task,
    samples,
    vae_run,
    combine,
    seed,
    out,
    as_json,
    progress,
    data_dir,
    device,
):
    """The few-shot benchmark: −ELBO and −log p(x | k other images of its task) of images of tasks the
    run never trained on, for each k (k = 0: θ(mean training-task ū) and θ(E[u])), the set figure, and
    with --vae the gains over a VAE on the same images; writes OUT/curve.json and OUT/curve.png."""
    from . import fewshot as fs
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device))
    vae = load_run(vae_run, program.device)[0] if vae_run is not None else None
    if vae is not None and vae.models_by_task:
        raise click.ClickException(f"--vae {vae_run}: a {vae.config.model} run, not a vae")
    try:
        result = fs.run_curve(
            program,
            state["step"],
            split,
            folder,
            shots,
            per_task,
            samples,
            seed,
            combine,
            data_dir,
            vae,
            progress,
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    _out_folder(out)
    _write_result(out / "curve.json", result, as_json)
    fs.plot_curves(
        {f"{program.config.model} ({run_dir.name})": result},
        out / "curve.png",
        f"{result['data']}: {result['tasks']} tasks never trained on, {result['images']} images",
        result.get("vae", {}).get("nll"),
    )
    if not as_json:
        click.echo(
            f"few-shot curve of {run_dir} on {result['data']} ({result['tasks']} tasks never trained "
            f"on, {result['images']} images, K={samples}); wrote {out / 'curve.json'}, "
            f"{out / 'curve.png'}"
        )
        click.echo("\n".join(fs.curve_lines(result)))


def _out_folder(out: Path) -> None:
    """--out made (a folder), or one line saying why it cannot be."""
    from .files import ensure_writable_dir

    try:
        ensure_writable_dir(out)
    except OSError as e:
        raise click.ClickException(f"cannot write to --out {out}: {e.strerror or e}") from None


def _write_result(path: Path, result: dict, as_json: bool = False) -> None:
    """A command's result as the JSON file `path`, written whole or not at all; printed as one JSON
    object with --json."""
    from .files import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(result))


@main.command()
@_run_dir
@click.option(
    "--outliers",
    "other",
    type=_Outliers(),
    required=True,
    help="Dataset whose test images are mixed in as outliers: a built-in one, a shifted one "
    "(mnist-upside-down: digits turned 180°; fashion-mnist-scattered: each garment's ink "
    "at random pixels), or a folder of task folders (its test/ tree where it has one, else "
    "all its images).",
)
@click.option(
    "--fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of outliers in the mixed set.",
)
@click.option(
    "--score",
    type=click.Choice(("typicality", *OUTLIER_SCORES)),
    default="typicality",
    show_default=True,
    help="typicality: how untypical the image's statistics are under their joint density over "
    "normal images (fitted once, RUN/typicality.json); elbo: −ELBO; kl: KL(z); mdl: −ELBO + KL(u); "
    "complexity[-zlib]: −log p(x) minus the image's compressed length; ratio: −log p(x) + log p(x) of the run's background model (`background`); "
    "model-space: the best training task's −log p(x) minus x's own model's; u-distance "
    "(z-distance): Mahalanobis distance of ū_x (E[z|x]) to the nearest training task's "
    "(docs/outliers.md).",
)
@click.option(
    "--flag-rate",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Flag the top q of scores [default: threshold at the equal-error point].",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Samples of z per datum for the ELBO's reconstruction term.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use about N normal test images.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@_json
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), default=None, help="ROC curve, PNG.")
@click.option(
    "--scores",
    "scores_csv",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Per-datum scores with the true label, CSV.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@_data_dir
@_device
def outliers(
    run_dir,
    other,
    fraction,
    score,
    flag_rate,
    samples,
    limit,
    seed,
    as_json,
    plot,
    scores_csv,
    progress,
    data_dir,
    device,
):
    """Outlier detection: the run's test data as normal, another dataset's as outliers; AUC, FPR, FNR.
    Writes RUN_DIR/outliers-OTHER.json (outliers-OTHER-SCORE.json for the other scores)."""
    from . import outliers as od
    from .evaluate import evaluation_subset
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device))
    config = program.config
    if other == config.dataset:
        raise click.UsageError(f"--outliers must name another dataset than the run's ({config.dataset})")
    normal = config.load_data("test", data_dir)
    kept = torch.cat(evaluation_subset(normal, limit)) if limit is not None else torch.arange(len(normal))
    try:
        mixed = od.mixed_set(normal.subset(kept), od.outlier_data(other, seed, data_dir), fraction, seed)
        mixed.source_index[: len(kept)] = kept  # positions in the normal test split
        values, fit_report = od.run_scores(
            program, run_dir, state["step"], mixed, (score,), samples, seed, progress, data_dir
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    values = values[score]
    metrics = od.detection_metrics(values.numpy(), mixed.labels.numpy(), flag_rate)
    result = {
        "model": config.model,
        "normal": config.dataset,
        "outliers": other,
        "score": score,
        "auc": metrics["auc"],
        "fpr": metrics["fpr"],
        "fnr": metrics["fnr"],
        "threshold": metrics["threshold"],
        "threshold_rule": metrics["threshold_rule"],
        "n_normal": int((mixed.labels == 0).sum()),
        "n_outliers": int((mixed.labels == 1).sum()),
        "fraction": fraction,
        "samples": samples,
        "seed": seed,
        "step": state["step"],
    }
    if fit_report is not None:
        result["fit"] = fit_report
    name = (
        f"outliers-{_short(other)}.json"
        if score == "typicality"
        else f"outliers-{_short(other)}-{score}.json"
    )
    _write_result(run_dir / name, result)
    if plot is not None:
        od.roc_figure(
            {f"{config.model} ({score})": metrics},
            plot,
            f"{config.dataset} normal, {other} outliers ({100 * fraction:g}%)",
        )
    if scores_csv is not None:
        od.write_scores(scores_csv, mixed, values, config.dataset, other)
    if as_json:
        click.echo(json.dumps(result))
        return
    if fit_report is not None:
        click.echo(
            f"typicality of {', '.join(fit_report['statistics'])}: {fit_report['how']}, on "
            f"{fit_report['n']} images of {fit_report['fit_on']}"
        )
    click.echo(
        f"{config.model} ({score}) {config.dataset} vs {other}: AUC {100 * result['auc']:.1f}  "
        f"FPR {100 * result['fpr']:.1f}  FNR {100 * result['fnr']:.1f} at {result['threshold_rule']} "
        f"(threshold {result['threshold']:.2f}; {result['n_normal']} normal, {result['n_outliers']} outliers); "
        f"wrote {run_dir / name}"
    )


@main.command()
@_run_dir
@click.option(
    "--flip",
    "flips",
    type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
    multiple=True,
    help="A candidate share μ of pixels flipped; repeat for several [default: 0.05, 0.1, 0.2, 0.3].",
)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="[default: the run's own]")
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Importance samples per image for choosing μ.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@_data_dir
@_device
def background(run_dir, flips, steps, samples, progress, data_dir, device):
    """Background models for `outliers --score ratio`: one per μ, trained like the run on its normal
    data with a share μ of the pixels flipped (RUN/background-flipμ/), and μ chosen on normal
    data only (RUN/background.json): the least tie between the ratio score and the ink."""
    from . import background as bg
    from .train import CHECKPOINT as CKPT
    from .train import load_run, resolve_device
    from .train import train as run_training

    program, _ = load_run(run_dir, resolve_device(device))
    flips = flips or bg.FLIPS
    for flip in flips:
        folder = bg.folder_of(run_dir, flip)
        config = bg.background_config(program.config, flip, steps)
        run_training(
            config,
            folder,
            data_root=data_dir,
            device=device,
            resume=(folder / CKPT).exists(),
            progress=progress,
            tensorboard=False,
        )
    choice = bg.choose(run_dir, program, flips, bg.choice_images(program.config, data_dir), samples)
    tried = ", ".join(f"μ {c['flip']:g}: ρ {c['ink_spearman']:+.3f}" for c in choice["candidates"])
    click.echo(f"background of {run_dir}: μ = {choice['flip']:g} ({tried}); wrote {run_dir / bg.CHOICE}")


@main.command()
@_run_dir
@click.option(
    "--target",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Target exemplar: a PNG (resized to 28x28, gray levels in [0, 1]).",
)
@click.option(
    "--target-class",
    default=None,
    help="Target exemplar: a random test image of this class of the run's dataset (e.g. 3).",
)
@click.option(
    "--mode",
    type=click.Choice(["joint", "iterative", "vae"]),
    default=None,
    help="[default: joint for a hypervae run, vae for a vae run]",
)
@click.option(
    "--iterations",
    type=click.IntRange(2, 300),
    default=300,
    show_default=True,
    help="Evaluation budget, Sobol start included (shared out over the steps of iterative).",
)
@click.option("--steps", type=click.IntRange(1, 50), default=5, show_default=True, help="Steps of iterative.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch threads for the GP [default: the cores this process may use].",
)
@click.option(
    "--refit-every",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Fit the GP from scratch every N iterations; in between, start from the last fit and "
    "take a few steps. 1: from scratch every iteration (5-7x the time of 300 evaluations).",
)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@_data_dir
@_device
def discover(
    run_dir,
    target,
    target_class,
    mode,
    iterations,
    steps,
    seed,
    threads,
    refit_every,
    out,
    progress,
    data_dir,
    device,
):
    """Bayesian optimisation (BoTorch) for the design closest to a target, beside random search.
    Writes DIR/discovery.json, the best design of every step and a trace figure."""
    import os

    from . import discovery as disc
    from .train import load_run, resolve_device

    if (target is None) == (target_class is None):
        raise click.UsageError("give one of --target PATH.png and --target-class C")
    program, _ = load_run(run_dir, resolve_device(device))
    config = program.config
    mode = mode or ("joint" if program.task_latent else "vae")
    try:
        if target is not None:
            image = disc.load_target(target)
            described = str(target)
        else:
            image, index = disc.class_exemplar(config.load_data("test", data_dir), target_class, seed)
            described = f"test image {index} of class {target_class}"
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    try:
        searches = disc.searches(program, image, mode, iterations, steps, seed, refit_every, progress)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    _out_folder(out)
    about = {"run": str(run_dir), "model": config.model, "seed": seed, "refit_every": refit_every}
    summary = disc.write_searches(searches, image, described, out, about)
    bo = searches["bo"]
    click.echo(
        f"{mode}: best cosine per step {', '.join(f'{v:.4f}' for v in bo['best_cosine'])}; random search "
        f"{summary['random_search_best']:.4f} ({bo['evaluations']} evaluations, {bo['seconds']:.0f} s); "
        f"wrote {out}"
    )


@main.command()
@_run_dir
@click.option("--draws", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--split", type=click.Choice(PARTS), default="test", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Score about N data for the per-task −ELBO (default: all).",
)
@click.option(
    "--max-tasks", type=click.IntRange(min=1), default=12, show_default=True, help="Tasks in the forest plot."
)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@_data_dir
@_device
def inspect(run_dir, draws, split, seed, limit, max_tasks, out, progress, data_dir, device):
    """ArviZ view of the task posteriors q(u|d_t): DIR/posterior.nc, a forest plot and a PCA map."""
    from . import posteriors
    from .train import load_run, resolve_device

    program, _ = load_run(run_dir, resolve_device(device))
    if not program.task_latent:
        raise click.ClickException(f"a {program.config.model} run has no task latent u to inspect")
    scored = program.config.load_data(split, data_dir)
    idata = posteriors.task_posteriors(program, scored, draws, seed, limit=limit, progress=progress)
    _out_folder(out)
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
@_run_dir
@click.option("--from", "source", required=True, help="Task name (e.g. a digit, an alphabet).")
@click.option("--to", "target", required=True, help="Task name.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="PNG file.")
@click.option(
    "--steps", type=click.IntRange(2, 50), default=8, show_default=True, help="Models along the line."
)
@click.option("--columns", type=click.IntRange(1, 50), default=8, show_default=True)
@click.option("--split", type=click.Choice(PARTS), default="test", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@_data_dir
@_device
def interpolate(run_dir, source, target, out, steps, columns, split, seed, data_dir, device):
    """Models θ(u) on the straight line between two tasks' posterior means: a row per model."""
    from .samples import interpolation_rows, save_grid
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device))
    scored = program.config.load_data(split, data_dir)
    try:
        means, labels = interpolation_rows(program, scored, source, target, steps, columns, seed)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    title = f"θ(u) from {source} to {target} ({program.config.dataset}, step {state['step']})"
    save_grid(means, labels, None, out, title)
    click.echo(f"wrote {out} ({steps} models x {columns} samples)")


@main.command()
@click.option("--model", type=click.Choice(MODELS), default="hypervae", show_default=True)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default=DEFAULT_PRESET,
    show_default=True,
    help="HyperVAE: the configuration (its guide sets the hyper-encoder's size).",
)
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
    for line in program.notes():
        click.echo(line)


if __name__ == "__main__":
    main()
