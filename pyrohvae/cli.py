"""Command line: `pyrohvae` (or `python cli.py` from a checkout)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
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
        except UserError as e:  # one line, no traceback; exit code 1, or 2 where the options do not fit
            failed = click.ClickException(str(e))
            failed.exit_code = getattr(e, "exit_code", 1)
            raise failed from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None


def _opt(*decls, **attrs):
    """click.option, its default shown in --help wherever it has one (not None, not a flag)."""
    given = attrs.get("default") is not None and not attrs.get("is_flag")
    return click.option(*decls, show_default=attrs.pop("show_default", given), **attrs)


_AT_LEAST_1 = click.IntRange(min=1)
_AT_LEAST_0 = click.IntRange(min=0)


_json = _opt("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
_seed = _opt("--seed", type=_AT_LEAST_0, default=0)
_progress = _opt("--progress/--no-progress", default=True)
_checkpoint = _opt(
    "--checkpoint",
    "checkpoint_name",
    default=CHECKPOINT,
    help="Which checkpoint of the run folder: the last, or one kept by --keep-every.",
)
_out_png = _opt("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="PNG file.")


class _WritableFolder(click.Path):
    """A folder a command writes into: one already, or one it can make. Checked when the options are
    read, before the work (a search, a curve) it would otherwise lose; made when the command writes."""

    def __init__(self):
        super().__init__(path_type=Path, file_okay=False)

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        there = path.absolute()
        while not there.exists():
            there = there.parent
        if not there.is_dir():
            self.fail(f"cannot write to {value}: {there} is a file", param, ctx)
        if not os.access(there, os.W_OK | os.X_OK):
            self.fail(f"cannot write to {value}: {there} is not writable", param, ctx)
        return path


_out_dir = _opt("--out", type=_WritableFolder(), required=True, help="Folder.")
_combine = _opt(
    "--combine",
    type=click.Choice(["product", "mean"]),
    default="product",
    help="How the posteriors of the shots combine, for a guide that reads one draw.",
)


def _vae_run(what: str):
    kind = click.Path(path_type=Path, file_okay=False, exists=True)
    return _opt("--vae", "vae_run", type=kind, default=None, help=f"A VAE run to score {what}")


@click.group(cls=_Group)
def main():
    """HyperVAE in Pyro: train, sample and inspect VAEs whose weights come from a hyper-VAE."""


_data_dir = _opt(
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


_device = _opt("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
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
            return _opt(f"{name}/--no-{name[2:]}", field.name, default=None, help=spec["help"])
        return _opt(name, field.name, is_flag=True, help=spec["help"])
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
@_opt(
    "--out", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/DATASET-MODEL]."
)
@_device
@_opt("--resume", is_flag=True, help="Go on from the run folder's checkpoint.")
@_opt("--checkpoint-every", type=_AT_LEAST_1, default=500)
@_opt(
    "--keep-every",
    type=_AT_LEAST_0,
    default=0,
    help="Also keep the checkpoint of every N-th step as checkpoint-stepN.pt (0: none), "
    "to choose among them later, e.g. on the validation part.",
)
@_opt("--log-every", type=_AT_LEAST_1, default=10)
@_opt(
    "--on-nan",
    type=click.Choice(["stop", "skip"]),
    default="stop",
    help="A non-finite loss stops the run (last checkpoint kept) or skips that step's update.",
)
@_opt("--deterministic", is_flag=True, help="PyTorch's deterministic algorithms (for CUDA).")
@_opt(
    "--distributed",
    is_flag=True,
    help="One rank of a data-parallel run started by torchrun: each rank takes "
    "--tasks-per-step tasks of every step, gradients averaged across ranks.",
)
@_opt(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Start from a config file (a run's config.json, or one written by hand with some of its keys); "
    "options given on the command line override it.",
)
@_opt(
    "--tensorboard",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for TensorBoard's event files [default: the run folder].",
)
@_opt("--no-tensorboard", is_flag=True, help="Write no TensorBoard event files.")
@_opt(
    "--image-every",
    type=_AT_LEAST_0,
    default=1000,
    help="Steps between the sample grids sent to TensorBoard (0: none).",
)
@_progress
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
@_run_dir
@_opt("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Model file (.pt).")
@_checkpoint
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
@_out_png
@_opt("--smooth", type=_AT_LEAST_1, default=10, help="Moving average over this many logged lines.")
def plot(runs, out, smooth):
    """Loss curves of one or several runs, from their metrics.jsonl: the training loss and its terms."""
    from .monitor import plot_runs

    panels = plot_runs(list(runs), out, smooth)
    click.echo(f"wrote {out} ({', '.join(panels)} of {len(runs)} run(s))")


@main.command()
@_run_or_model
@_out_png
@_opt("--columns", type=click.IntRange(1, 50), default=10)
@_opt("--prior-rows", type=click.IntRange(0, 50), default=4, help="Rows from u ~ p(u) (z ~ p(z) for a VAE).")
@_opt("--max-tasks", type=click.IntRange(0, 200), default=50)
@_seed
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
@_opt("--samples", type=_AT_LEAST_1, default=1024, help="Importance samples per datum.")
@_opt("--split", type=click.Choice(PARTS), default="test", help="Which part of the run's data to score.")
@_opt(
    "--mode",
    type=click.Choice(["task", "datum"]),
    default="task",
    help="task: θ of each task from one random draw of it (the paper); datum: from each x itself.",
)
@_opt("--limit", type=_AT_LEAST_1, default=None, help="Score about N data, spread over the tasks.")
@_seed
@_checkpoint
@_json
@_progress
@_data_dir
@_device
def evaluate(run_dir, checkpoint_name, as_json, data_dir, device, **scoring):
    """−ELBO, reconstruction, importance-sampled −log p(x), KL(z) and KL(u) on held-out data;
    writes RUN/eval.json (eval-SPLIT-MODE.json for other splits and modes; for a model file
    from `export`, MODEL-eval.json beside it)."""
    from .evaluate import describe, evaluate_run, result_name
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device), checkpoint_name)
    result = evaluate_run(program, state["step"], checkpoint_name, data_root=data_dir, **scoring)
    path = _beside(run_dir, result_name(result, checkpoint_name == CHECKPOINT))
    _write_result(path, result, as_json, f"{describe(result)}; wrote {path}")


@main.command("task-models")
@_run_dir
@_opt(
    "--split",
    type=click.Choice(PARTS),
    default="test",
    help="Which part of the run's data to score (validation: for choosing among runs).",
)
@_opt(
    "--samples",
    type=_AT_LEAST_1,
    default=8,
    help="Draws of z per image and model for the −ELBO's reconstruction term.",
)
@_opt(
    "--context-size",
    type=_AT_LEAST_1,
    default=100,
    help="Images of a task its model is chosen from (the paper's guide reads one random draw).",
)
@_opt(
    "--agreement-samples",
    type=_AT_LEAST_0,
    default=100,
    help="Samples per task's model for the sample agreement (0: skip it).",
)
@_seed
@_checkpoint
@_opt(
    "--plot",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Heatmap PNG [default: RUN_DIR/task-models[-SPLIT].png].",
)
@_json
@_progress
@_data_dir
@_device
def task_models(run_dir, checkpoint_name, plot, as_json, data_dir, device, **analysis):
    """How much the models differ by task: the images of every task scored under the model of every
    task. Task accuracy, own-vs-other gap, sample agreement; writes RUN_DIR/task-models[-SPLIT].json
    and a heatmap."""
    from . import taskmodels
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device), checkpoint_name)
    split, step = analysis["split"], state["step"]
    # the analysis's options are `taskmodels.result`'s parameters
    result, scores = taskmodels.result(
        program, step, checkpoint=checkpoint_name, data_root=data_dir, **analysis
    )
    suffix = ("" if split == "test" else f"-{split}") + (
        "" if checkpoint_name == CHECKPOINT else f"-step{step}"
    )
    path, plot = run_dir / f"task-models{suffix}.json", plot or run_dir / f"task-models{suffix}.png"
    taskmodels.heatmap(scores, plot, f"{result['model']} {result['dataset']} ({split}), step {step}")
    _write_result(path, result, as_json, f"{taskmodels.describe(result)}; wrote {path}, {plot}")


@main.command()
@_run_dir
@_opt(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="The shots: image files or folders of them (repeat the option for more).",
)
@_opt(
    "--task",
    "task_name",
    default=None,
    help="The shots from a task of the run's test data instead, e.g. a held-out class or an "
    "unseen alphabet (--split background); its other test images are scored.",
)
@_opt("--shots", type=_AT_LEAST_1, default=5, help="With --task: how many of its images are the shots.")
@_opt(
    "--test",
    "test_paths",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="Test images of the task (files or folders) to score.",
)
@_combine
@_opt(
    "--invert/--no-invert",
    default=None,
    help="Image files: invert gray levels [default: when the images are mostly light at their border].",
)
@_vae_run("the test images under too.")
@_opt("--samples", type=_AT_LEAST_1, default=1024, help="Importance samples per test image.")
@_seed
@_out_dir
@_data_dir
@_device
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
    loc, scale = program.task_posterior(shot_images.float().to(dev), combine)
    vae = _vae(vae_run, dev) if test_images is not None else None
    _out_folder(out)
    about = {"run": str(run_dir), "shots": len(shot_images), "source": described, "combine": combine}
    result = fewshot.write_task_model(
        program, state["step"], loc, scale, out, about, test_images, vae, samples, seed
    )
    read = combine if program.guide_nets.one_draw else "read as a set"
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
@_opt(
    "--shots",
    default=",".join(map(str, SHOTS)),
    callback=_shot_counts,
    help="Shot counts k, comma-separated: each scored image under the model made from k other "
    "images of its task.",
)
@_opt(
    "--split",
    type=click.Choice(["test", "held-out"]),
    default="test",
    help="The run's part whose tasks it never trained on: the test part (held-out classes, "
    "Omniglot's evaluation alphabets) or the training images of the --exclude-classes tasks "
    "(for choosing a configuration without the test set).",
)
@_opt(
    "--dataset",
    "folder",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="A folder of task folders never trained on instead (every image of it).",
)
@_opt("--per-task", type=_AT_LEAST_1, default=4, help="Images scored per task.")
@_opt("--samples", type=_AT_LEAST_1, default=1024, help="Importance samples per image and model.")
@_vae_run("the same images under, for the gains.")
@_combine
@_seed
@_opt("--out", type=_WritableFolder(), required=True, help="Folder for curve.json and curve.png.")
@_json
@_progress
@_data_dir
@_device
def fewshot_curve(run_dir, vae_run, out, as_json, data_dir, device, **curve):
    """The few-shot benchmark: −ELBO and −log p(x | k other images of its task) of images of tasks the
    run never trained on, for each k (k = 0: θ(mean training-task ū) and θ(E[u])), the set figure, and
    with --vae the gains over a VAE on the same images; writes OUT/curve.json and OUT/curve.png."""
    from . import fewshot
    from .train import load_run, resolve_device

    program, state = load_run(run_dir, resolve_device(device))
    vae = _vae(vae_run, program.device)
    # the curve's options are `run_curve`'s parameters
    result = fewshot.run_curve(program, state["step"], vae=vae, data_root=data_dir, **curve)
    _out_folder(out)
    fewshot.plot_curve(result, f"{program.config.model} ({run_dir.name})", out / "curve.png")
    head = (
        f"few-shot curve of {run_dir} on {result['data']} ({result['tasks']} tasks never trained on, "
        f"{result['images']} images, K={curve['samples']}); wrote {out / 'curve.json'}, {out / 'curve.png'}"
    )
    _write_result(out / "curve.json", result, as_json, "\n".join([head, *fewshot.curve_lines(result)]))


def _out_folder(out: Path) -> None:
    """--out made (a folder), or one line saying why it cannot be."""
    from .files import ensure_writable_dir

    try:
        ensure_writable_dir(out)
    except OSError as e:
        raise click.ClickException(f"cannot write to --out {out}: {e.strerror or e}") from None


def _write_result(path: Path, result: dict, as_json: bool = False, line: str | None = None) -> None:
    """A command's result as the JSON file `path`, written whole or not at all; then printed as one
    JSON object with --json, else as `line`."""
    from .files import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if as_json or line is not None:
        click.echo(json.dumps(result) if as_json else line)


@main.command()
@_run_dir
@_opt(
    "--outliers",
    "other",
    type=_Outliers(),
    required=True,
    help="Dataset whose test images are mixed in as outliers: a built-in one, a shifted one "
    "(mnist-upside-down: digits turned 180°; fashion-mnist-scattered: each garment's ink "
    "at random pixels), or a folder of task folders (its test/ tree where it has one, else "
    "all its images).",
)
@_opt(
    "--fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    help="Share of outliers in the mixed set.",
)
@_opt(
    "--score",
    type=click.Choice(("typicality", *OUTLIER_SCORES)),
    default="typicality",
    help="typicality: how untypical the image's statistics are under their joint density over "
    "normal images (fitted once, RUN/typicality.json); elbo: −ELBO; kl: KL(z); mdl: −ELBO + KL(u); "
    "complexity[-zlib]: −log p(x) minus the image's compressed length; ratio: −log p(x) + log p(x) of "
    "the run's background model (`background`); "
    "model-space: the best training task's −log p(x) minus x's own model's; u-distance "
    "(z-distance): Mahalanobis distance of ū_x (E[z|x]) to the nearest training task's; regret: the "
    "nats of −ELBO + KL(u) that q(u|x) refined on x alone saves (docs/outliers.md).",
)
@_opt(
    "--flag-rate",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Flag the top q of scores [default: threshold at the equal-error point].",
)
@_opt(
    "--samples",
    type=_AT_LEAST_1,
    default=16,
    help="Samples of z per datum for the ELBO's reconstruction term.",
)
@_opt("--limit", type=_AT_LEAST_1, default=None, help="Use about N normal test images.")
@_seed
@_json
@_opt("--plot", type=click.Path(path_type=Path, dir_okay=False), default=None, help="ROC curve, PNG.")
@_opt(
    "--scores",
    "scores_csv",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Per-datum scores with the true label, CSV.",
)
@_progress
@_data_dir
@_device
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
    _write_result(path, found.result, as_json, "\n".join(found.lines()) + f"; wrote {path}")


@main.command()
@_run_dir
@_opt(
    "--flip",
    "flips",
    type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
    multiple=True,
    help="A candidate share μ of pixels flipped; repeat for several [default: 0.05, 0.1, 0.2, 0.3].",
)
@_opt("--steps", type=_AT_LEAST_1, default=None, help="[default: the run's own]")
@_opt("--samples", type=_AT_LEAST_1, default=16, help="Importance samples per image for choosing μ.")
@_progress
@_data_dir
@_device
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
@_run_dir
@_opt(
    "--target",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Target exemplar: a PNG (resized to 28x28, gray levels in [0, 1]).",
)
@_opt(
    "--target-class",
    default=None,
    help="Target exemplar: a random test image of this class of the run's dataset (e.g. 3).",
)
@_opt(
    "--mode",
    type=click.Choice(["joint", "iterative", "vae"]),
    default=None,
    help="[default: joint for a hypervae run, vae for a vae run]",
)
@_opt(
    "--iterations",
    type=click.IntRange(2, 300),
    default=300,
    help="Evaluation budget, Sobol start included (shared out over the steps of iterative).",
)
@_opt("--steps", type=click.IntRange(1, 50), default=5, help="Steps of iterative.")
@_seed
@_opt(
    "--threads",
    type=_AT_LEAST_1,
    default=None,
    help="torch threads for the GP [default: the cores this process may use].",
)
@_opt(
    "--refit-every",
    type=_AT_LEAST_1,
    default=20,
    help="Fit the GP from scratch every N iterations; in between, start from the last fit and "
    "take a few steps. 1: from scratch every iteration (5-7x the time of 300 evaluations).",
)
@_out_dir
@_progress
@_data_dir
@_device
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
    _out_folder(out)
    about = {
        "run": str(run_dir),
        "model": program.config.model,
        "seed": seed,
        "refit_every": search["refit_every"],
    }
    summary = discovery.write_searches(searches, image, described, out, about)
    click.echo(f"{discovery.describe(searches, summary)}; wrote {out}")


@main.command()
@_run_dir
@_opt("--draws", type=_AT_LEAST_1, default=500)
@_opt("--split", type=click.Choice(PARTS), default="test")
@_seed
@_opt(
    "--limit",
    type=_AT_LEAST_1,
    default=None,
    help="Score about N data for the per-task −ELBO (default: all).",
)
@_opt("--max-tasks", type=_AT_LEAST_1, default=12, help="Tasks in the forest plot.")
@_out_dir
@_progress
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
@_opt("--from", "source", required=True, help="Task name (e.g. a digit, an alphabet).")
@_opt("--to", "target", required=True, help="Task name.")
@_out_png
@_opt("--steps", type=click.IntRange(2, 50), default=8, help="Models along the line.")
@_opt("--columns", type=click.IntRange(1, 50), default=8)
@_opt("--split", type=click.Choice(PARTS), default="test")
@_seed
@_data_dir
@_device
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
@_opt("--model", type=click.Choice(MODELS), default="hypervae")
@_opt(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default=DEFAULT_PRESET,
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
    if program.task_latent:
        enc, dec = (
            sum(math.prod(s) for s in program.theta.shapes[half].values()) for half in ("encoder", "decoder")
        )
        click.echo(f"generated per task by θ(u): main encoder {enc:,}, main decoder {dec:,}")
    elif program.models_by_task:
        click.echo("MetaVAE holds one generative network per training task: add its count per task")


if __name__ == "__main__":
    main()
