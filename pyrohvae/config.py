"""A run's configuration: everything needed to rebuild its model, guide and data."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from . import data, folders
from .files import UserError
from .nets import ATTEND_DIM, FINE_WINDOW_MAX, THETA_LAYOUTS, WARP_GRID_MAX

MODELS = ("hypervae", "vae", "metavae")
PARTS = ("train", "validation", "test", "held-out")
DEFAULT_GUIDE = {"hypervae": "random-draw", "vae": "encoder", "metavae": "context-encoder"}
# MetaVAE holds one decoder (336,589 parameters) per training task.
MAX_METAVAE_TASKS = 200
Z_PRIORS = ("normal", "task", "shots", "shots-k", "shots-g")
# how `--shot-template` weighs the shots' images
SHOT_TEMPLATES = ("none", "matched", "mean", "deep", "address", "deep-address", "warp-address")
# the templates that read one shot's image by an address summed out of p(x | z, shots)
ADDRESSED_TEMPLATES = ("address", "deep-address", "warp-address")
CONTEXT_SIZES = ("log-uniform", "uniform")  # how `--split-context` draws a step's context size
# The estimators of the objective a run can train with (`program.ELBOS`): Pyro's Trace_ELBO (the
# default), TraceMeanField_ELBO (KL terms in closed form where Pyro knows them), TraceGraph_ELBO,
# RenyiELBO with α = 0 (with `particles` K the importance-weighted bound of Burda et al.) and
# JitTrace_ELBO (Trace_ELBO compiled by torch.jit).
ELBOS = ("trace", "meanfield", "tracegraph", "renyi", "jit")
# A HyperVAE's training settings, by name; each is used unless given on its own. `paper`: the
# paper's (§3.2, §4), which Table 1's paper-configuration rows use. `task-specific`: the
# configuration chosen on a validation split for models that differ by task
# (experiments/results/task_models.md): q(u | D_t) reads the mean image of the task's minibatch,
# 4 tasks a step, U·H·V starts at B's spread, and KL(z) weighs 10 at the start, falling to 1 over
# 1,000 steps, so that what the images of a task share is coded in u, where it costs least, not z.
PRESETS = {
    "paper": {
        "guide": "random-draw",
        "tasks_per_step": 1,
        "theta_init_scale": 0.1,
        "u_scale_init": 1.0,
        "kl_z_start": 1.0,
        "kl_z_anneal": 0,
    },
    "task-specific": {
        "guide": "set-mean",
        "tasks_per_step": 4,
        "theta_init_scale": 1.0,
        "u_scale_init": 1.0,
        "kl_z_start": 10.0,
        "kl_z_anneal": 1000,
    },
}
DEFAULT_PRESET = "task-specific"


class ConfigError(UserError, ValueError):
    """Settings that do not go together, or are out of range; the message names them."""


def excluded_tasks(names: list[str], patterns: list[str]) -> list[str]:
    """The task names that `--exclude-classes` names, each given as a name or a shell-style
    pattern (`'Korean/*'`: every character of an Omniglot alphabet); a pattern that matches no
    task is an error, not a silent no-op."""
    out = []
    for pattern in patterns:
        matched = fnmatch.filter(names, pattern) if pattern not in names else [pattern]
        if not matched:
            raise data.DataError(
                f"--exclude-classes {pattern!r} matches no task (tasks: {data.some_tasks(names)})"
            )
        out += [n for n in matched if n not in out]
    return out


def setting(default, help: str | None = None, **accepts):
    """A field of `RunConfig` and, given `help`, its option of `train` (`--the-name`): the help is
    the field's documentation too; `accepts` what the option takes beyond the field's type
    (`choices`, and `min`, `max`, `min_open`, `max_open` of a range). A field without help is
    filled in by the program, or fixed."""
    metadata = {} if help is None else {"help": help, **accepts}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


PRESET_DEFAULT = " [default: the preset's]."


@dataclass
class RunConfig:
    dataset: str = setting(
        "omniglot",
        "A built-in dataset, or a folder PATH/<task>/<image> (or PATH/train/... and PATH/test/...) of "
        "your own.",
    )
    model: str = setting("hypervae", "", choices=MODELS)
    preset: str = setting(
        DEFAULT_PRESET,
        "HyperVAE: the settings of --guide, --tasks-per-step, --theta-init-scale, --u-scale-init, "
        "--kl-z-start and --kl-z-anneal not given. paper: the paper's; task-specific: models that differ "
        "by task (docs/task-models.md).",
        choices=tuple(PRESETS),
    )
    guide: str | None = setting(None, "[default: the preset's for hypervae, else the model's own]")
    prior: str = setting("normal", "The prior on u (hypervae).")
    split: str = setting(
        "drawers",
        "Omniglot: drawers 1-15 vs 16-20 of every alphabet, or background vs evaluation alphabets.",
        choices=data.SPLITS,
    )
    task_by: str | None = setting(
        None, "Omniglot task [default: alphabet].", choices=("alphabet", "character")
    )
    task_characters: int = setting(
        0,
        "Omniglot's alphabets as tasks: a training minibatch is drawn from this many of its alphabet's "
        "characters, chosen at random (0: from all of them), in a share --task-characters-share of the "
        "minibatches: sets narrower than an alphabet, between --task-by character and alphabet.",
        min=0,
    )
    task_characters_share: float = setting(
        1.0, "The share of the minibatches that --task-characters draws.", min=0, max=1
    )
    steps: int = setting(10_000, "", min=1)
    batch_size: int = setting(100, "", min=1)
    tasks_per_step: int | None = setting(
        None,
        "Tasks per training step, each --batch-size images [default: the preset's; 1 for other models].",
        min=1,
    )
    lr: float = setting(3e-4, "", min=0, min_open=True)
    lr_half_life: int = setting(
        0, "Steps in which the learning rate halves, decaying every step (0: constant, the paper).", min=0
    )
    seed: int = setting(0, "", min=0)
    z_dim: int = setting(10, "Dimensions of z (the paper: 10).", min=1)
    u_dim: int = setting(10, "HyperVAE: dimensions of the task latent u (the paper: 10).", min=1)
    h_dim: int = setting(
        20, "HyperVAE: the side of the matrix H of the matrix layers W = U·H·V + B (the paper: 20).", min=1
    )
    hidden: int = setting(100)
    theta_init_scale: float | None = setting(
        None,
        "HyperVAE: spread of U·H·V at the start, as a factor on B's (the default initialisation's)"
        + PRESET_DEFAULT,
        min=0,
        min_open=True,
    )
    kl_u_warmup: int = setting(
        0, "HyperVAE: steps over which the weight of KL(u) rises from 0 to 1 (0: none, the paper).", min=0
    )
    kl_u_weight: float = setting(
        1.0,
        "HyperVAE: the weight of KL(u) in training, after any warm-up (1: the paper's objective; below 1, "
        "u's information is cheaper than the description length counts it).",
        min=0,
        min_open=True,
    )
    kl_u_scale: str = setting(
        "minibatch",
        "HyperVAE: what KL(u) is counted once for in training. minibatch: each minibatch, as the paper "
        "treats a minibatch as a task; task: the task's whole training data, each minibatch an unbiased "
        "share of it (KL(u) weighed by its images over the task's: MNIST's digits 100 / 6,005). Measured "
        "with the shots models: u still holds no digit, and alphabets' curves are worse (docs/few-shot.md).",
        choices=("minibatch", "task"),
    )
    kl_z_start: float | None = setting(
        None,
        "HyperVAE: weight of KL(z) at step 0, falling linearly to 1 over --kl-z-anneal steps"
        + PRESET_DEFAULT,
        min=0,
        min_open=True,
    )
    kl_z_anneal: int | None = setting(
        None,
        "HyperVAE: steps over which the weight of KL(z) falls from --kl-z-start to 1 (0: none, the paper)"
        + PRESET_DEFAULT,
        min=0,
    )
    u_scale_init: float | None = setting(
        None,
        "HyperVAE: q(u | d)'s scale at the start, as a factor on PyTorch's default initialisation"
        + PRESET_DEFAULT,
        min=0,
        min_open=True,
    )
    z_prior: str = setting(
        "normal",
        "HyperVAE: p(z) = N(0, I) (the paper), p(z | u) generated with θ(u) (task), or p(z | u, shots) a "
        "mixture at the codes of the context's images (shots; needs --split-context), its widening and "
        "N(0, I)'s share learnt as functions of the number of shots (shots-k), and with one more component, "
        "a Gaussian of the shots' codes as a set that narrows with their number (shots-g).",
        choices=Z_PRIORS,
    )
    random_context: bool = setting(
        False,
        "HyperVAE's set guides: in training, q(u) reads the first k images of each task's minibatch, k "
        "from 1 to --batch-size, log-uniform, so that it learns to read a few shots as well as a full "
        "minibatch.",
    )
    pixel_bias: bool = setting(
        False,
        "The decoder adds a logit at every pixel (HyperVAE: generated by θ(u), a template of the task).",
    )
    theta_layout: str = setting(
        "paper",
        "HyperVAE: the matrices θ(u)'s tensors are generated as: each (first dim, the rest), or 'spatial': "
        "the decoder's layer that writes the first feature map as (channels, positions × inputs), so the "
        "task can change the map at any position.",
        choices=THETA_LAYOUTS,
    )
    split_context: bool = setting(
        False,
        "HyperVAE: in training, q(u) reads the first k images of each task's minibatch and the model "
        "scores only the others, k from 1 to --batch-size − 1, log-uniform: trains the few-shot use, a "
        "model from k images scoring images it has not read.",
    )
    context_sizes: str = setting(
        "log-uniform",
        "HyperVAE with --split-context: how a step's context size k is drawn from 1 to --batch-size − 1: "
        "'log-uniform' (one or two shots as common as in few-shot use) or 'uniform' (more steps of many "
        "shots, fewer images scored a step).",
        choices=CONTEXT_SIZES,
    )
    no_shot_share: float = setting(
        0.0,
        "HyperVAE with --split-context and --guide precision-pool: the share of training steps whose "
        "context is empty, every image scored under the model of no shots (q(u | no image) = p(u), and "
        "p(z) reads no shot): trains that model, and the share of p(z) that reads none, on their own.",
        min=0,
        max=1,
        max_open=True,
    )
    u_alone_share: float = setting(
        0.0,
        "HyperVAE with --split-context and --z-prior shots…: the share of training steps whose images are "
        "scored under θ(ū) alone: q(u) reads the step's context as in any step, but p(z) and the decoder "
        "read no shot: meant to make u hold what a task's images share, where the shots hold the task "
        "and u none of it (θ(ū)'s models of MNIST's digits alike; at 0.25 still alike: docs/few-shot.md).",
        min=0,
        max=1,
        max_open=True,
    )
    u_reads_all: bool = setting(
        False,
        "HyperVAE with --split-context: in training q(u) reads the whole minibatch of a task, the images "
        "the model scores too, as without the split, while p(z) still reads only the first k as its shots "
        "and the model scores the others: u must then hold what the shots do not tell of the scored "
        "images, as the default preset's does (in few-shot use q(u) reads the shots alone).",
    )
    shot_features: bool = setting(
        False,
        "HyperVAE with --z-prior shots: the decoder also reads the shots' encoder features, each weighed "
        "by how much its shot's component of p(z | u, shots) explains z (a matching of z to the shots).",
    )
    shot_dims: int = setting(
        0,
        "HyperVAE with --z-prior shots, shots-k or shots-g: only the first N dimensions of z read the shots "
        "(the mixture at their codes); the others are N(0, I) whatever the shots, room for what no shot "
        "tells, as the stroke style of one drawing (0: every dimension reads them).",
        min=0,
    )
    shot_scales: int = setting(
        1,
        "HyperVAE with --z-prior shots or shots-k: each shot's component of p(z | u, shots) at one learnt "
        "widening (1), or at two (2), a second one of its own and a learnt share of the shot's weight "
        "between them, so that a shot can place z tightly (a drawing of its own character) as well as "
        "loosely (one of its alphabet's others).",
        min=1,
        max=2,
    )
    shot_template: str = setting(
        "none",
        "HyperVAE with --z-prior shots or shots-k: the decoder adds to its logits the shots' images (±1) "
        "through a 5×5 filter generated by θ(u), each image weighed by how much its shot's component of "
        "p(z | u, shots) explains z ('matched': a drawing near a shot starts from its strokes) or by its "
        "component's weight ('mean': every drawing starts from the shots' mean); 'deep': matched, and the "
        "image also enters the decoder's 14×14 feature map through a 3×3 convolution of θ(u), where z's "
        "features can build on it or cancel it; 'address': the filter reads one shot's image, the address "
        "a of the shot whose component of p(z | u, shots) z was drawn from (none for N(0, I)'s share), and "
        "a is summed out of p(x | z, shots) exactly (Bornschein et al. 2017's memory addressing): a "
        "drawing takes the strokes of the one shot that explains it best, not a blend of all; "
        "'deep-address': address, the one image also into the 14×14 feature map, as 'deep'; "
        "'warp-address': address, the shot's image first moved by an affine map that θ(u) makes of "
        "z's offset from the shot's code, so that a drawing placed or slanted unlike its shot can "
        "still take its strokes. An addressing template also with --z-prior shots-g, whose set's component "
        "is an address of its own: the mean of every shot's image (each moved to z, for 'warp-address').",
        choices=SHOT_TEMPLATES,
    )
    warp_grid: int = setting(
        0,
        "HyperVAE with --shot-template warp-address: the addressed shot's image is also bent by a smooth "
        "field of displacements, G×G control points that θ(u) makes of z's offset from the shot's code, "
        "spread over the image bicubically (0: the affine move alone): a drawing whose strokes are bent, "
        "stretched or placed unlike its shot's in one part only can still take them.",
        min=0,
        max=WARP_GRID_MAX,
    )
    shot_attention: int = setting(
        0,
        "HyperVAE with --z-prior shots, shots-k or shots-g: each position of the decoder's first 7×7 "
        "feature map attends, by N heads (of --shot-attention-dim in all), to the shots' 7×7 feature maps "
        "(queries, keys, values and the shots' convolutions generated by θ(u)) and adds what it reads: "
        "a drawing can take a stroke from wherever a shot has it, and more shots offer more strokes "
        "(0: none; N must divide the width).",
        min=0,
    )
    shot_attention_dim: int = setting(
        ATTEND_DIM,
        "HyperVAE with --shot-attention: the width of its queries, keys and values, all heads together.",
        min=1,
    )
    shot_attention_window: int = setting(
        0,
        "HyperVAE with --shot-attention: each position of the decoder's 14×14 map (after its first "
        "transposed convolution) also reads the shots' 14×14 maps (the reader's first convolution) "
        "within a W×W square around it, and adds what it reads: strokes placed as finely as a shot "
        "draws them (0: none; W odd).",
        min=0,
        max=FINE_WINDOW_MAX,
    )
    shot_attention_pixels: bool = setting(
        False,
        "HyperVAE with --shot-attention-window: the shots' pixels under the positions the 14×14 read "
        "attends to, read by the same weights, join the logits through a 3×3 filter generated by θ(u) "
        "(starting silent, its input scaled by 10 so that it grows at a useful pace): strokes copied as a "
        "shot draws them, pixel for pixel.",
    )
    shot_attention_encoder: bool = setting(
        False,
        "HyperVAE with --shot-attention: the main encoder's 7×7 map attends to the shots' maps too (by its "
        "own convolutions, weights generated by θ(u)): q(z | x, θ(u), shots), which can code what the "
        "shots do not show.",
    )
    elbo: str = setting(
        "trace",
        "The objective's estimator: Pyro's Trace_ELBO, TraceMeanField_ELBO (closed-form KLs), "
        "TraceGraph_ELBO, RenyiELBO with α = 0 (with --particles K, the importance-weighted bound) or "
        "JitTrace_ELBO.",
        choices=ELBOS,
    )
    particles: int = setting(1, "Draws of the guide per step that the estimator averages.", min=1)
    # Set by `background`, not by `train`: the share of the pixels of every training image flipped
    # at random, afresh each step (the background model of a likelihood ratio).
    flip: float = setting(0.0)
    exclude_classes: list[str] = setting(
        [],
        "Tasks held out of training, comma-separated names or shell patterns (e.g. 3 or 3,5; 'Korean/*': "
        "the characters of an Omniglot alphabet).",
    )
    validation: float = setting(
        0.0,
        "Fraction of every training task's images held out as the run's validation part (the same images "
        "for every run; `evaluate --split validation` scores them).",
        min=0,
        max=1,
        max_open=True,
    )
    binarize: str = setting(
        "sample",
        "How a built-in dataset's gray levels become bits: sample (drawn once from Bernoulli(gray), the "
        "paper's static binarization) or threshold (1 from half the gray scale up: no noise in the bits).",
        choices=data.BINARIZATIONS,
    )
    rotate_tasks: bool = setting(
        False,
        "Train also on every training task turned by 90°, 180° and 270°, each turn a task of its own (four "
        "times the tasks, as few-shot work augments Omniglot's characters). The validation, held-out and "
        "test parts stay as they are.",
    )
    train_tasks: list[str] | None = setting(None)  # filled in from the training data when a run starts
    test_fraction: float = setting(
        folders.DEFAULT_TEST_FRACTION,
        "A folder of one tree: the share of each task's images held out as the test part.",
        min=0,
        max=1,
        min_open=True,
        max_open=True,
    )
    test_seed: int = setting(0, "A folder of one tree: the seed that draws the test part.", min=0)
    invert: bool | None = setting(
        None,
        "A folder: invert the gray levels, so that the foreground is 1 [default: when the images are "
        "mostly light at their border].",
    )
    # A folder dataset's fingerprint of its files, filled in when a run starts and checked by
    # every later load.
    data_fingerprint: str | None = setting(None)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.is_folder:
            self.dataset = str(Path(self.dataset).expanduser().absolute())
        elif (self.test_fraction, self.test_seed, self.invert) != (folders.DEFAULT_TEST_FRACTION, 0, None):
            raise ConfigError("--test-fraction, --test-seed and --invert apply to a folder dataset")
        if self.is_folder and self.binarize != "sample":
            raise ConfigError(f"--binarize {self.binarize} applies to the built-in datasets")
        if not 0 <= self.flip < 0.5:
            raise ConfigError(f"--flip {self.flip}: a share of pixels in [0, 0.5)")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test-fraction {self.test_fraction}: a fraction in (0, 1)")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        # Other models take the paper's values, which leave them as they were before presets.
        for key, value in PRESETS[self.preset if self.model == "hypervae" else "paper"].items():
            if getattr(self, key) is None:
                setattr(
                    self,
                    key,
                    DEFAULT_GUIDE[self.model] if key == "guide" and self.model != "hypervae" else value,
                )
        if self.dataset == "omniglot" and self.task_by is None:
            self.task_by = "alphabet"
        if self.dataset != "omniglot" and (self.split != "drawers" or self.task_by not in (None, "class")):
            raise ConfigError("--split and --task-by apply to omniglot only")
        if not 0 <= self.validation < 1:
            raise ConfigError(f"--validation {self.validation}: a fraction in [0, 1)")
        if self.task_characters and (self.dataset != "omniglot" or self.task_by != "alphabet"):
            raise ConfigError(
                "--task-characters applies to omniglot's alphabets as tasks (--task-by alphabet)"
            )
        if self.task_characters and self.model == "vae":
            raise ConfigError("--task-characters applies to models of tasks: a VAE's minibatches know none")
        if not 0 <= self.task_characters_share <= 1:
            raise ConfigError(f"--task-characters-share {self.task_characters_share}: a share in [0, 1]")
        if self.model != "hypervae" and (
            self.kl_u_warmup or self.kl_u_weight != 1.0 or self.kl_u_scale != "minibatch"
        ):
            raise ConfigError("--kl-u-warmup, --kl-u-weight and --kl-u-scale apply to hypervae only")
        if self.kl_u_weight <= 0:
            raise ConfigError(f"--kl-u-weight {self.kl_u_weight}: a weight above 0")
        if self.model != "hypervae" and (self.kl_z_anneal or self.z_prior != "normal"):
            raise ConfigError("--kl-z-anneal and --z-prior apply to hypervae only")
        if self.random_context and self.model != "hypervae":  # and a set guide: TaskGuide checks
            raise ConfigError("--random-context applies to hypervae only")
        if self.split_context and self.model != "hypervae":
            raise ConfigError("--split-context applies to hypervae only")
        if self.split_context and self.random_context:
            raise ConfigError(
                "--split-context and --random-context are two ways to choose q(u)'s context: give one"
            )
        if self.shot_template not in SHOT_TEMPLATES:
            raise ConfigError(
                f"unknown --shot-template {self.shot_template!r}; choose one of {', '.join(SHOT_TEMPLATES)}"
            )
        uses = (
            ("--shot-features", self.shot_features),
            ("--shot-template", self.shot_template != "none"),
            (f"--shot-scales {self.shot_scales}", self.shot_scales != 1),
        )
        for flag, on in uses:
            # the set's component of shots-g is an address of its own, every shot at once
            addressed = flag == "--shot-template" and self.shot_template in ADDRESSED_TEMPLATES
            allowed = ("shots", "shots-k", "shots-g") if addressed else ("shots", "shots-k")
            if on and self.z_prior not in allowed:
                raise ConfigError(
                    f"{flag} needs --z-prior shots or shots-k (an addressing template also shots-g): it "
                    "reads the shots' components"
                )
        if self.warp_grid and self.shot_template != "warp-address":
            raise ConfigError("--warp-grid needs --shot-template warp-address: it bends the addressed shot")
        if self.warp_grid == 1:
            raise ConfigError("--warp-grid 1: one control point moves the image as a whole; give 2 or more")
        if self.shot_attention and self.shot_attention_dim % self.shot_attention:
            raise ConfigError(
                f"--shot-attention {self.shot_attention}: heads that divide {self.shot_attention_dim}, "
                "its width (--shot-attention-dim)"
            )
        if self.shot_attention_dim != ATTEND_DIM and not self.shot_attention:
            raise ConfigError("--shot-attention-dim needs --shot-attention N: the heads of that width")
        if self.shot_attention_window and not self.shot_attention:
            raise ConfigError("--shot-attention-window needs --shot-attention N: it reads by the same reader")
        if self.shot_attention_window and self.shot_attention_window % 2 == 0:
            raise ConfigError(
                f"--shot-attention-window {self.shot_attention_window}: an odd side, centred on its position"
            )
        if self.shot_attention_pixels and not self.shot_attention_window:
            raise ConfigError(
                "--shot-attention-pixels needs --shot-attention-window W: it copies what that read attends to"
            )
        if self.shot_attention_encoder and not self.shot_attention:
            raise ConfigError("--shot-attention-encoder needs --shot-attention N: the heads it reads by")
        if self.shot_attention and not self.reads_shots:
            raise ConfigError(
                "--shot-attention needs --z-prior shots, shots-k or shots-g: it reads the step's shots"
            )
        if self.shot_dims and not self.reads_shots:
            raise ConfigError("--shot-dims needs --z-prior shots, shots-k or shots-g: it splits their p(z)")
        if self.shot_dims > self.z_dim:
            raise ConfigError(f"--shot-dims {self.shot_dims}: at most --z-dim ({self.z_dim})")
        if self.reads_shots and not self.split_context:
            raise ConfigError(
                f"--z-prior {self.z_prior} needs --split-context: its p(z) reads the step's context, which "
                "must not hold the images it scores"
            )
        if self.elbo not in ELBOS:
            raise ConfigError(f"unknown --elbo {self.elbo!r}; choose one of {', '.join(ELBOS)}")
        if self.particles < 1:
            raise ConfigError(f"--particles {self.particles}: at least 1")
        if self.elbo == "jit" and self.random_context:
            raise ConfigError(
                "--elbo jit compiles the context size that --random-context draws inside the guide into its "
                "graph, the same for every step: use --split-context, or another --elbo"
            )
        if self.context_sizes not in CONTEXT_SIZES:
            raise ConfigError(
                f"unknown --context-sizes {self.context_sizes!r}; choose one of {', '.join(CONTEXT_SIZES)}"
            )
        if self.context_sizes != "log-uniform" and not self.split_context:
            raise ConfigError("--context-sizes needs --split-context: it draws that context's size")
        if self.no_shot_share and (not self.split_context or self.guide != "precision-pool"):
            raise ConfigError(
                "--no-shot-share needs --split-context and --guide precision-pool: the guide whose q(u) "
                "reads an empty context (as p(u))"
            )
        if self.u_alone_share and (not self.split_context or not self.reads_shots):
            raise ConfigError(
                "--u-alone-share needs --split-context and --z-prior shots, shots-k or shots-g: steps whose "
                "p(z) leaves the context's shots unread"
            )
        if self.u_reads_all and not self.split_context:
            raise ConfigError("--u-reads-all needs --split-context: without it q(u) reads every image")
        if self.no_shot_share + self.u_alone_share >= 1:
            raise ConfigError(
                "--no-shot-share and --u-alone-share leave no step that reads shots: their sum must be < 1"
            )
        if self.u_alone_share and self.elbo == "jit":
            raise ConfigError(
                "--u-alone-share and --elbo jit: a step of u alone leaves out the parameters that read shots,"
                " and Pyro's jit wants every step's graph to read the same parameters; use another --elbo"
            )
        if self.no_shot_share and self.elbo == "jit":
            raise ConfigError(
                "--no-shot-share and --elbo jit: a step of no shot leaves out the parameters that read shots,"
                " and Pyro's jit wants every step's graph to read the same parameters; use another --elbo"
            )
        if self.split_context and self.batch_size < 2:
            raise ConfigError("--split-context needs --batch-size 2 or more: a context and an image to score")
        if self.model != "hypervae" and (self.u_dim, self.h_dim, self.theta_layout) != (10, 20, "paper"):
            raise ConfigError("--u-dim, --h-dim and --theta-layout apply to hypervae only")
        if self.theta_layout not in THETA_LAYOUTS:
            raise ConfigError(
                f"unknown θ layout {self.theta_layout!r}; choose one of {', '.join(THETA_LAYOUTS)}"
            )
        if self.z_prior not in Z_PRIORS:
            raise ConfigError(f"unknown z prior {self.z_prior!r}; choose one of {', '.join(Z_PRIORS)}")
        if self.u_scale_init <= 0:
            raise ConfigError(f"--u-scale-init {self.u_scale_init}: a factor above 0")
        if self.kl_z_start <= 0:
            raise ConfigError(f"--kl-z-start {self.kl_z_start}: a weight above 0")
        if self.model == "vae" and self.tasks_per_step != 1:
            raise ConfigError("--tasks-per-step applies to task models (hypervae, metavae), not vae")
        if self.model == "metavae" and self.train_tasks and len(self.train_tasks) > MAX_METAVAE_TASKS:
            raise ConfigError(
                f"metavae keeps one decoder per training task: {len(self.train_tasks)} tasks are more "
                f"than {MAX_METAVAE_TASKS}; use --task-by alphabet"
            )

    @property
    def reads_shots(self) -> bool:
        """p(z | u, shots) reads the context's images (`models.shot_mixture`)."""
        return self.z_prior in ("shots", "shots-k", "shots-g")

    @property
    def is_folder(self) -> bool:
        return self.dataset not in data.DATASETS

    def lr_at(self, step: int) -> float:
        """The learning rate of `step`: a function of the step alone, so a resumed run, or one
        given more steps, follows the same schedule as an uninterrupted one."""
        return self.lr * 0.5 ** (step / self.lr_half_life) if self.lr_half_life else self.lr

    def kl_weights(self, step: int) -> tuple[float, float]:
        """The weights of KL(u) and KL(z) in the loss of `step` (1 and 1: the paper's objective)."""
        u = self.kl_u_weight * (min(1.0, step / self.kl_u_warmup) if self.kl_u_warmup else 1.0)
        z = (
            self.kl_z_start + (1.0 - self.kl_z_start) * min(1.0, step / self.kl_z_anneal)
            if self.kl_z_anneal
            else 1.0
        )
        return u, z

    def load_data(self, part: str, root=None) -> data.TaskData:
        """One part of the run's data: "train" (without the held-out classes and the validation
        images; with `rotate_tasks`, each task turned three ways as three more), "validation" (the
        images --validation held out of the training tasks), "test" (all classes: discovery and
        evaluation look at the unseen tasks too) or "held-out" (the training part's images of the
        classes --exclude-classes held out: tasks never trained on, for choosing a configuration
        without the test set)."""
        if part not in PARTS:
            raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
        if part == "validation" and not self.validation:
            raise ConfigError("this run holds no validation part (it was trained with --validation 0)")
        if part == "held-out" and not self.exclude_classes:
            raise ConfigError("this run holds no held-out tasks (it was trained without --exclude-classes)")
        if self.is_folder:
            folder = self.scan_folder()
            loaded = folder.part(
                "test" if part == "test" else "train", self.invert, self.test_fraction, self.test_seed
            )
        else:
            loaded = data.load(
                self.dataset,
                "test" if part == "test" else "train",
                root,
                split=self.split,
                task_by=self.task_by,
                binarization=self.binarize,
            )
        if part == "test":
            return loaded
        excluded = excluded_tasks(loaded.task_names, self.exclude_classes)
        if part == "held-out":
            return loaded.without_tasks(sorted(set(loaded.task_names) - set(excluded)))
        if excluded:
            loaded = loaded.without_tasks(excluded)
        if self.validation:
            kept, held = loaded.hold_out(self.validation)
            loaded = kept if part == "train" else held
        return loaded.with_turns() if part == "train" and self.rotate_tasks else loaded

    def describe_folder(self) -> str:
        """What a folder dataset holds and how its images are read, in one line."""
        folder = self.scan_folder()
        inverted = "inverted" if folder.invert(self.invert) else "not inverted"
        how = "as asked" if self.invert is not None else "detected from the images' borders"
        return f"{folder.describe(self.test_fraction)}; {inverted} ({how})"

    def scan_folder(self) -> folders.Folder:
        """The run's folder dataset, scanned; a DataError where its files changed since the run
        recorded their fingerprint."""
        folder = folders.scan(self.dataset)
        if self.data_fingerprint is not None and folder.fingerprint != self.data_fingerprint:
            raise data.DataError(
                f"{self.dataset}: its images changed since the run was trained (fingerprint "
                f"{folder.fingerprint}, the run's {self.data_fingerprint}); restore them, or train a new run "
                "on them"
            )
        return folder

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def unknown_keys(cls, d: dict) -> list[str]:
        return sorted(set(d) - {f.name for f in dataclasses.fields(cls)})

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        unknown = cls.unknown_keys(d)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        # A config written before presets existed holds the paper's settings.
        return cls(**{"preset": "paper", **d})

    @classmethod
    def read_file(cls, path: Path) -> dict:
        """The settings of a config file, for a new run: a run's config.json or one written by
        hand with some of the keys. What describes the data a run was trained on (its tasks and
        their fingerprint) is left out, to be read from the data of the new run."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: a config file holds one JSON object of settings")
        unknown = cls.unknown_keys(d)
        if unknown:
            raise ConfigError(f"{path}: unknown config keys {', '.join(unknown)}")
        return {k: v for k, v in d.items() if k not in ("train_tasks", "data_fingerprint")}

    def save(self, path: Path) -> None:
        from .files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"{path}: not a readable run config ({e})") from None
