"""What the command line is made of, apart from its commands: one-line errors, the option types,
the options several commands share, and each command's list of options (cli.py holds the commands)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from pathlib import Path

import click

from . import data, guides
from .config import DEFAULT_PRESET, MODELS, PARTS, PRESETS, RunConfig
from .fewshot import SHOTS
from .files import UserError
from .models import PRIORS
from .outliers import SCORES as OUTLIER_SCORES
from .outliers import SHIFTED
from .taskmodels import CONTEXT_SHOTS
from .train import CHECKPOINT, Interrupted


class Group(click.Group):
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


def _shot_counts(ctx, param, value):
    try:
        shots = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r}: shot counts separated by commas, e.g. 0,1,5,9") from None
    if not shots or shots[0] < 0:
        raise click.BadParameter(f"{value!r}: shot counts of 0 or more, e.g. 0,1,5,9")
    return shots


def out_folder(out: Path) -> None:
    """--out made (a folder), or one line saying why it cannot be."""
    from .files import ensure_writable_dir

    try:
        ensure_writable_dir(out)
    except OSError as e:
        raise click.ClickException(f"cannot write to --out {out}: {e.strerror or e}") from None


def write_result(path: Path, result: dict, as_json: bool = False, line: str | None = None) -> None:
    """A command's result as the JSON file `path`, written whole or not at all; then printed as one
    JSON object with --json, else as `line`."""
    from .files import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if as_json or line is not None:
        click.echo(json.dumps(result) if as_json else line)


def _each(*decorators):
    """One decorator that applies `decorators` as if stacked in this order above a command."""

    def apply(command):
        for decorate in reversed(decorators):
            command = decorate(command)
        return command

    return apply


TRAIN = _each(
    _setting_options,
    _data_dir,
    _opt(
        "--out",
        type=click.Path(path_type=Path),
        default=None,
        help="Run folder [default: runs/DATASET-MODEL].",
    ),
    _device,
    _opt("--resume", is_flag=True, help="Go on from the run folder's checkpoint."),
    _opt("--checkpoint-every", type=_AT_LEAST_1, default=500),
    _opt(
        "--keep-every",
        type=_AT_LEAST_0,
        default=0,
        help="Also keep the checkpoint of every N-th step as checkpoint-stepN.pt (0: none), "
        "to choose among them later, e.g. on the validation part.",
    ),
    _opt("--log-every", type=_AT_LEAST_1, default=10),
    _opt(
        "--on-nan",
        type=click.Choice(["stop", "skip"]),
        default="stop",
        help="A non-finite loss stops the run (last checkpoint kept) or skips that step's update.",
    ),
    _opt("--deterministic", is_flag=True, help="PyTorch's deterministic algorithms (for CUDA)."),
    _opt(
        "--distributed",
        is_flag=True,
        help="One rank of a data-parallel run started by torchrun: each rank takes "
        "--tasks-per-step tasks of every step, gradients averaged across ranks.",
    ),
    _opt(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        default=None,
        help="Start from a config file (a run's config.json, or one written by hand with some of its keys); "
        "options given on the command line override it.",
    ),
    _opt(
        "--tensorboard",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Folder for TensorBoard's event files [default: the run folder].",
    ),
    _opt("--no-tensorboard", is_flag=True, help="Write no TensorBoard event files."),
    _opt(
        "--image-every",
        type=_AT_LEAST_0,
        default=1000,
        help="Steps between the sample grids sent to TensorBoard (0: none).",
    ),
    _progress,
)


EXPORT_MODEL = _each(
    _run_dir,
    _opt("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Model file (.pt)."),
    _checkpoint,
)


PLOT = _each(
    click.argument(
        "runs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False, exists=True)
    ),
    _out_png,
    _opt("--smooth", type=_AT_LEAST_1, default=10, help="Moving average over this many logged lines."),
)


SAMPLE = _each(
    _run_or_model,
    _out_png,
    _opt("--columns", type=click.IntRange(1, 50), default=10),
    _opt(
        "--prior-rows", type=click.IntRange(0, 50), default=4, help="Rows from u ~ p(u) (z ~ p(z) for a VAE)."
    ),
    _opt("--max-tasks", type=click.IntRange(0, 200), default=50),
    _seed,
    _data_dir,
    _device,
)


EVALUATE = _each(
    _run_or_model,
    _opt("--samples", type=_AT_LEAST_1, default=1024, help="Importance samples per datum."),
    _opt("--split", type=click.Choice(PARTS), default="test", help="Which part of the run's data to score."),
    _opt(
        "--mode",
        type=click.Choice(["task", "datum"]),
        default="task",
        help="task: θ of each task from one random draw of it (the paper); datum: from each x itself.",
    ),
    _opt("--limit", type=_AT_LEAST_1, default=None, help="Score about N data, spread over the tasks."),
    _seed,
    _checkpoint,
    _json,
    _progress,
    _data_dir,
    _device,
)


TASK_MODELS = _each(
    _run_dir,
    _opt(
        "--split",
        type=click.Choice(PARTS),
        default="test",
        help="Which part of the run's data to score (validation: for choosing among runs).",
    ),
    _opt(
        "--samples",
        type=_AT_LEAST_1,
        default=8,
        help="Draws of z per image and model for the −ELBO's reconstruction term.",
    ),
    _opt(
        "--context-size",
        type=_AT_LEAST_1,
        default=100,
        help="Images of a task its model is chosen from (the paper's guide reads one random draw).",
    ),
    _opt(
        "--agreement-samples",
        type=_AT_LEAST_0,
        default=100,
        help="Samples per task's model for the sample agreement (0: skip it).",
    ),
    _opt(
        "--shots",
        type=_AT_LEAST_0,
        default=CONTEXT_SHOTS,
        help=(
            "For a model whose p(z) reads shots (--z-prior shots…): the first N of each task's context "
            "read as its shots; 0: θ(ū) alone, p(z) reading none (where u holds the task). Others ignore it."
        ),
    ),
    _seed,
    _checkpoint,
    _opt(
        "--plot",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Heatmap PNG [default: RUN_DIR/task-models[-SPLIT].png].",
    ),
    _json,
    _progress,
    _data_dir,
    _device,
)


FEWSHOT = _each(
    _run_dir,
    _opt(
        "--images",
        "image_paths",
        multiple=True,
        type=click.Path(path_type=Path, exists=True),
        help="The shots: image files or folders of them (repeat the option for more).",
    ),
    _opt(
        "--task",
        "task_name",
        default=None,
        help="The shots from a task of the run's test data instead, e.g. a held-out class or an "
        "unseen alphabet (--split background); its other test images are scored.",
    ),
    _opt("--shots", type=_AT_LEAST_1, default=5, help="With --task: how many of its images are the shots."),
    _opt(
        "--test",
        "test_paths",
        multiple=True,
        type=click.Path(path_type=Path, exists=True),
        help="Test images of the task (files or folders) to score.",
    ),
    _combine,
    _opt(
        "--invert/--no-invert",
        default=None,
        help="Image files: invert gray levels [default: when the images are mostly light at their border].",
    ),
    _vae_run("the test images under too."),
    _opt("--samples", type=_AT_LEAST_1, default=1024, help="Importance samples per test image."),
    _seed,
    _out_dir,
    _data_dir,
    _device,
)


FEWSHOT_CURVE = _each(
    _run_dir,
    _opt(
        "--shots",
        default=",".join(map(str, SHOTS)),
        callback=_shot_counts,
        help="Shot counts k, comma-separated: each scored image under the model made from k other "
        "images of its task.",
    ),
    _opt(
        "--split",
        type=click.Choice(["test", "held-out"]),
        default="test",
        help="The run's part whose tasks it never trained on: the test part (held-out classes, "
        "Omniglot's evaluation alphabets) or the training images of the --exclude-classes tasks "
        "(for choosing a configuration without the test set).",
    ),
    _opt(
        "--dataset",
        "folder",
        type=click.Path(path_type=Path, file_okay=False, exists=True),
        default=None,
        help="A folder of task folders never trained on instead (every image of it).",
    ),
    _opt("--per-task", type=_AT_LEAST_1, default=4, help="Images scored per task."),
    _opt("--samples", type=_AT_LEAST_1, default=1024, help="Importance samples per image and model."),
    _vae_run("the same images under, for the gains."),
    _combine,
    _opt(
        "--refine-steps",
        type=_AT_LEAST_0,
        default=0,
        help="Adam steps that refine q(u | k shots) on the shots' own ELBO before its model is scored "
        "(semi-amortized inference; 0: the hyper-encoder's q(u)). Costs as many backward passes "
        "through θ(u) and the k shots per scored image.",
    ),
    _seed,
    _opt("--out", type=_WritableFolder(), required=True, help="Folder for curve.json and curve.png."),
    _json,
    _progress,
    _data_dir,
    _device,
)


OUTLIERS = _each(
    _run_dir,
    _opt(
        "--outliers",
        "other",
        type=_Outliers(),
        required=True,
        help="Dataset whose test images are mixed in as outliers: a built-in one, a shifted one "
        "(mnist-upside-down: digits turned 180°; fashion-mnist-scattered: each garment's ink "
        "at random pixels), or a folder of task folders (its test/ tree where it has one, else "
        "all its images).",
    ),
    _opt(
        "--fraction",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=0.2,
        help="Share of outliers in the mixed set.",
    ),
    _opt(
        "--score",
        type=click.Choice(("typicality", *OUTLIER_SCORES)),
        default="typicality",
        help="typicality: how far the image's statistics are from those of normal images (the 10th "
        "nearest, in standard units; fitted once, RUN/typicality.json); elbo: −ELBO; kl: KL(z); "
        "mdl: −ELBO + KL(u); "
        "complexity[-zlib]: −log p(x) minus the image's compressed length; ratio: −log p(x) + log p(x) of "
        "the run's background model (`background`); "
        "model-space: the best training task's −log p(x) minus x's own model's; u-distance "
        "(z-distance): Mahalanobis distance of ū_x (E[z|x]) to the nearest training task's; regret: the "
        "nats of −ELBO + KL(u) that q(u|x) refined on x alone saves (docs/outliers.md).",
    ),
    _opt(
        "--flag-rate",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=None,
        help="Flag the top q of scores [default: threshold at the equal-error point].",
    ),
    _opt(
        "--normal-rate",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=None,
        help="Flag what scores above the typicality fit's normal images' top q, each scored among "
        "the others: a threshold that reads no labels; the FPR printed shows how it holds.",
    ),
    _opt(
        "--samples",
        type=_AT_LEAST_1,
        default=16,
        help="Samples of z per datum for the ELBO's reconstruction term.",
    ),
    _opt("--limit", type=_AT_LEAST_1, default=None, help="Use about N normal test images."),
    _seed,
    _json,
    _opt("--plot", type=click.Path(path_type=Path, dir_okay=False), default=None, help="ROC curve, PNG."),
    _opt(
        "--scores",
        "scores_csv",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Per-datum scores with the true label, CSV.",
    ),
    _progress,
    _data_dir,
    _device,
)


BACKGROUND = _each(
    _run_dir,
    _opt(
        "--flip",
        "flips",
        type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
        multiple=True,
        help="A candidate share μ of pixels flipped; repeat for several [default: 0.05, 0.1, 0.2, 0.3].",
    ),
    _opt("--steps", type=_AT_LEAST_1, default=None, help="[default: the run's own]"),
    _opt("--samples", type=_AT_LEAST_1, default=16, help="Importance samples per image for choosing μ."),
    _progress,
    _data_dir,
    _device,
)


DISCOVER = _each(
    _run_dir,
    _opt(
        "--target",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        default=None,
        help="Target exemplar: a PNG (resized to 28x28, gray levels in [0, 1]).",
    ),
    _opt(
        "--target-class",
        default=None,
        help="Target exemplar: a random test image of this class of the run's dataset (e.g. 3).",
    ),
    _opt(
        "--mode",
        type=click.Choice(["joint", "iterative", "vae"]),
        default=None,
        help="[default: joint for a hypervae run, vae for a vae run]",
    ),
    _opt(
        "--iterations",
        type=click.IntRange(2, 300),
        default=300,
        help="Evaluation budget, Sobol start included (shared out over the steps of iterative).",
    ),
    _opt("--steps", type=click.IntRange(1, 50), default=5, help="Steps of iterative."),
    _seed,
    _opt(
        "--threads",
        type=_AT_LEAST_1,
        default=None,
        help="torch threads for the GP [default: the cores this process may use].",
    ),
    _opt(
        "--refit-every",
        type=_AT_LEAST_1,
        default=20,
        help="Fit the GP from scratch every N iterations; in between, start from the last fit and "
        "take a few steps. 1: from scratch every iteration (5-7x the time of 300 evaluations).",
    ),
    _out_dir,
    _progress,
    _data_dir,
    _device,
)


INSPECT = _each(
    _run_dir,
    _opt("--draws", type=_AT_LEAST_1, default=500),
    _opt("--split", type=click.Choice(PARTS), default="test"),
    _seed,
    _opt(
        "--limit",
        type=_AT_LEAST_1,
        default=None,
        help="Score about N data for the per-task −ELBO (default: all).",
    ),
    _opt("--max-tasks", type=_AT_LEAST_1, default=12, help="Tasks in the forest plot."),
    _out_dir,
    _progress,
    _data_dir,
    _device,
)


INTERPOLATE = _each(
    _run_dir,
    _opt("--from", "source", required=True, help="Task name (e.g. a digit, an alphabet)."),
    _opt("--to", "target", required=True, help="Task name."),
    _out_png,
    _opt("--steps", type=click.IntRange(2, 50), default=8, help="Models along the line."),
    _opt("--columns", type=click.IntRange(1, 50), default=8),
    _opt("--split", type=click.Choice(PARTS), default="test"),
    _seed,
    _data_dir,
    _device,
)


INFO = _each(
    _opt("--model", type=click.Choice(MODELS), default="hypervae"),
    _opt(
        "--preset",
        type=click.Choice(list(PRESETS)),
        default=DEFAULT_PRESET,
        help="HyperVAE: the configuration (its guide sets the hyper-encoder's size).",
    ),
)
