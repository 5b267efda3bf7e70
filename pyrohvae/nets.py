"""Networks, kept apart from the probabilistic program.

The main VAE (paper §4) is written as two functions of a parameter dict, `encode(params, x)` and
`decode(params, z)`, so the same code runs with ordinary parameters (the plain VAE, the
hyper-encoder) and with parameters θ(u) generated per task by the hyper-decoder.

Generated parameters carry leading batch dims (tasks, particles, ...) in front of each tensor's own
shape. Inputs carry batch dims in front of their event shape. The two are broadcast against each
other: every batch dim where the parameters vary becomes a *group* (one set of weights, run as a
grouped convolution or a batched matmul), every other batch dim is folded into the *items* that
share a group's weights. No Python loop over tasks: on the CPU, groups go through the layers a
few at a time (`CPU_GROUPS_PER_PASS`), each pass one grouped computation, or in training one at a
time where each holds many items (`CPU_ALONE_ITEMS`).

Every network is a `PyroModule` and reads its weights as attributes (`weights`), so a research
variant can make any of them a `PyroSample` (a Bayesian layer) or a `PyroParam` (a constrained
one) and the programs draw or constrain it like any other site. With Pyro's module-local
parameters (set when pyrohvae is imported), a network's parameters are its own, not entries of
the global param store: two runs loaded in one process never share a weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
TEMPLATE_KERNEL = 5  # the side of the filter of `--shot-template`: strokes a pixel or two away

Linear, Conv2d, ConvTranspose2d = PyroModule[nn.Linear], PyroModule[nn.Conv2d], PyroModule[nn.ConvTranspose2d]


@dataclass(frozen=True)
class Conv:
    """One convolution of the main VAE as declared: its layer is built from this, and the
    functional code (`encode`, `decode`, `features`) runs with this stride and padding."""

    in_channels: int
    out_channels: int
    kernel_size: int = 3
    stride: int = 2
    padding: int = 1
    output_padding: int = 0  # of a transposed convolution
    transposed: bool = False

    def module(self) -> nn.Module:
        if self.transposed:
            return ConvTranspose2d(
                self.in_channels,
                self.out_channels,
                self.kernel_size,
                self.stride,
                self.padding,
                self.output_padding,
            )
        return Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding)

    def size(self, n: int) -> int:
        """The side of its output for an input of side n."""
        if self.transposed:
            return (n - 1) * self.stride - 2 * self.padding + self.kernel_size + self.output_padding
        return (n + 2 * self.padding - self.kernel_size) // self.stride + 1


# The main VAE's convolutions (paper §4): conv 32 and 64 filters 3x3 stride 2, mirrored by
# transposed ones. Declared here once; dense layers join them where the shapes below say.
ENCODER_CONVS = {"conv1": Conv(1, 32), "conv2": Conv(32, 64)}
DECODER_CONVS = {
    "deconv1": Conv(64, 32, output_padding=1, transposed=True),
    "deconv2": Conv(32, 1, output_padding=1, transposed=True),
}
# `--shot-template deep`: the matched shots' image into deconv1's output, beside z's features there.
TEMPLATE_IN = Conv(1, 32)
# `--shot-attention`: the width of the queries, keys and values by which each position of a 7×7
# feature map reads the shots' 7×7 maps (`shot_memory`, `_attend`), unless `--shot-attention-dim`.
ATTEND_DIM = 32
# `--shot-attention-window`: the largest window, one that covers a 14×14 map from any position.
FINE_WINDOW_MAX = 27
# `--warp-grid`: control points of a warp's field, at most one every two pixels of the 28×28 image.
WARP_GRID_MAX = 14
# `--shot-attention-pixels`: the filter through which the shots' pixels that the 14×14 read
# copies (`_attend_fine`) join the logits, as `--shot-template`'s 5×5 filter does a shot's image,
# and a gain on its input. The filter starts silent and θ(u)'s layers move by about Adam's step
# size a step: at gain 1 its taps had reached 0.008 after 1,700 steps (a logit of 0.07 for a
# copied stroke) where the read's weights are still diffuse; a logit of a few units is what a
# copied stroke must carry.
PIXEL_COPY = Conv(1, 1, stride=1)
PIXEL_GAIN = 10.0


def conv_shape() -> tuple[int, int, int]:
    """The encoder's feature map after its convolutions (64, 7, 7), where the decoder's start."""
    channels, size = IMAGE_SHAPE[0], IMAGE_SHAPE[1]
    for conv in ENCODER_CONVS.values():
        channels, size = conv.out_channels, conv.size(size)
    return channels, size, size


def _add_trunk(module: nn.Module, hidden: int) -> None:
    """The encoder's convolutions, then its dense layer (`features`): shared by `Encoder` and
    `ContextEncoder`."""
    for name, conv in ENCODER_CONVS.items():
        setattr(module, name, conv.module())
    module.fc = Linear(math.prod(conv_shape()), hidden)


def _conv_spec(name: str) -> Conv:
    if name == "template_in":
        return TEMPLATE_IN
    if name == "fine_pixel":
        return PIXEL_COPY
    if name.startswith("shots_"):  # `--shot-attention`'s reader of the shots, the encoder's convolutions
        return ENCODER_CONVS[name.removeprefix("shots_")]
    return ENCODER_CONVS.get(name) or DECODER_CONVS[name]


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """A network's weights by dotted name, each read as an attribute: inside a Pyro program that is
    a param statement, and a weight made a `PyroSample` is drawn there (named parameters would
    miss it, and skip the statement)."""
    return {
        f"{prefix}.{name}" if prefix else name: getattr(sub, name)
        for prefix, sub in module.named_modules()
        for name in _own_weights(sub)
    }


def _own_weights(module: nn.Module) -> list[str]:
    names = [n for n in module._parameters if not n.endswith("_unconstrained")]  # a PyroParam's raw value
    if isinstance(module, PyroModule):
        names += [n for n in (*module._pyro_params, *module._pyro_samples) if n not in names]
    return names


def _add_attention(module: nn.Module, heads: int, reader: bool, width: int = ATTEND_DIM) -> None:
    """The weights by which a 7×7 feature map of `module` attends to the shots' maps (`_attend`),
    `width` the queries', keys' and values' (all heads together), with `reader` the convolutions
    that make those maps (`shots_conv1`, `shots_conv2`; else the module's own, the encoder's)."""
    if width % heads:
        raise ValueError(f"{heads} attention heads do not divide its width {width}")
    if reader:
        for name, conv in ENCODER_CONVS.items():
            setattr(module, f"shots_{name}", conv.module())
    channels = conv_shape()[0]
    module.attend_query = Linear(channels, width)
    module.attend_key = Linear(channels, width)
    module.attend_value = Linear(channels, width)
    module.attend_out = Linear(width, channels)
    nn.init.zeros_(module.attend_out.weight)  # silent, as the templates: the start is the model without
    nn.init.zeros_(module.attend_out.bias)
    # Added to queries and keys alike: at the start a position reads mostly the same position
    # of the shots, a prior of alignment that training can keep or drop.
    module.attend_pos = nn.Parameter(0.5 * torch.randn(math.prod(conv_shape()[1:]), width))
    # The key of a slot of value 0: a position that matches no shot reads nothing.
    module.attend_null = nn.Parameter(torch.zeros(width))


def _add_fine_attention(
    module: nn.Module, window: int, width: int = ATTEND_DIM, pixels: bool = False
) -> None:
    """The weights by which each position of the decoder's 14×14 map (deconv1's output) reads the
    shots' 14×14 maps (the reader's first convolution) within a `window` × `window` square around
    it (`shot_memory`, `_attend_fine`): strokes placed as finely as a shot draws them. With
    `pixels`, the filter by which the shots' pixels under the positions it reads join the logits."""
    channels = DECODER_CONVS["deconv1"].out_channels
    if channels != ENCODER_CONVS["conv1"].out_channels:
        raise ValueError("the fine attention reads maps of the decoder's 14×14 width from the shots")
    module.fine_query = Linear(channels, width)
    module.fine_key = Linear(channels, width)
    module.fine_value = Linear(channels, width)
    module.fine_out = Linear(width, channels)
    nn.init.zeros_(module.fine_out.weight)  # silent, as the 7×7 attention's `attend_out`
    nn.init.zeros_(module.fine_out.bias)
    # Added to the keys by their place in the window: a prior of where a stroke lies, relative to
    # the position that reads it, which training can sharpen.
    module.fine_offset = nn.Parameter(0.5 * torch.randn(window * window, width))
    module.fine_null = nn.Parameter(torch.zeros(width))
    if pixels:
        module.fine_pixel = PIXEL_COPY.module()
        nn.init.zeros_(module.fine_pixel.weight)  # silent, as `fine_out`
        nn.init.zeros_(module.fine_pixel.bias)


class Encoder(PyroModule):
    """q(z | x): conv 32 and 64 filters 3x3 stride 2, dense 100, then mean and log-variance.

    The layers exist for their parameters and PyTorch's default initialisation; `forward` runs the
    functional `encode` on them, the same code that runs on generated θ.
    """

    def __init__(
        self, z_dim: int = 10, hidden: int = 100, attention: int = 0, attention_dim: int = ATTEND_DIM
    ):
        super().__init__()
        _add_trunk(self, hidden)
        self.loc = Linear(hidden, z_dim)
        self.logvar = Linear(hidden, z_dim)
        if attention:  # its 7×7 map reads the shots' maps, made by its own convolutions (`_trunk`)
            _add_attention(self, attention, reader=False, width=attention_dim)

    def forward(self, x):
        return encode(weights(self), x)


class Decoder(PyroModule):
    """p(x | z): the encoder mirrored, transposed convolutions, Bernoulli logits."""

    def __init__(
        self,
        z_dim: int = 10,
        hidden: int = 100,
        pixel_bias: bool = False,
        extra_inputs: int = 0,
        template: bool = False,
        deep_template: bool = False,
        attention: int = 0,
        attention_dim: int = ATTEND_DIM,
        attention_window: int = 0,
        attention_pixels: bool = False,
        warp: bool = False,
        warp_grid: int = 0,
    ):
        super().__init__()
        self.fc1 = Linear(z_dim + extra_inputs, hidden)  # extra: what the shots tell (models.decoder_input)
        channels, size, _ = shape = conv_shape()
        self.fc2 = Linear(hidden, math.prod(shape))
        for name, conv in DECODER_CONVS.items():
            setattr(self, name, conv.module())
            channels, size = conv.out_channels, conv.size(size)
        if (channels, size, size) != IMAGE_SHAPE:
            raise ValueError(
                f"the decoder's convolutions give images of {(channels, size, size)}, not {IMAGE_SHAPE}"
            )
        if pixel_bias:  # a logit added at every pixel of the image: for HyperVAE, a template θ(u) can paint
            self.pixel_bias = nn.Parameter(torch.zeros(IMAGE_SHAPE))
        if template:  # the filter the shots' image goes through into the logits (`template_logits`)
            self.template = Conv2d(1, 1, TEMPLATE_KERNEL, padding=TEMPLATE_KERNEL // 2)
            # Silent at the start (with `MatrixLayer(silent=True)` for θ(u)): a filter of random taps
            # would add noise the size of a logit at every pixel the shots cover.
            nn.init.zeros_(self.template.weight)
            nn.init.zeros_(self.template.bias)
        if deep_template:  # the shots' image into the hidden feature map too (`_template_features`)
            self.template_in = TEMPLATE_IN.module()
            nn.init.zeros_(self.template_in.weight)  # silent, as the filter above
            nn.init.zeros_(self.template_in.bias)
        if attention:  # heads by which the first feature map reads the shots' maps (`shot_memory`, `_attend`)
            _add_attention(self, attention, reader=True, width=attention_dim)
        if warp:  # z's offset from a shot's code -> the affine move of that shot's image (`models.warped`)
            self.warp = Linear(z_dim, 6)
            nn.init.zeros_(self.warp.weight)  # silent: every shot unmoved at the start
            nn.init.zeros_(self.warp.bias)
        if warp_grid:  # and a smooth field of G×G control points' displacements, bending it (`models.warped`)
            self.flow = Linear(z_dim, 2 * warp_grid * warp_grid)
            nn.init.zeros_(self.flow.weight)
            nn.init.zeros_(self.flow.bias)
        if attention_window:  # its 14×14 map reads the shots' too, near each position (`_attend_fine`)
            _add_fine_attention(self, attention_window, width=attention_dim, pixels=attention_pixels)

    def forward(self, z):
        return decode(weights(self), z)


class ZPriorParams(PyroModule):
    """The location and log-scale of a Gaussian p(z), as parameters θ(u) can generate."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.log_scale = nn.Parameter(torch.zeros(z_dim))


class ShotPrior(PyroModule):
    """The parameters of p(z | u, shots) (`models.shot_mixture`): how far each shot's component is
    widened beyond q(z | shot), per dimension, and the logit of N(0, I)'s share of the mixture. They
    start at a widening of half the prior's scale and N(0, I) at one half of the mixture. With
    `by_shots`, both also change with the number k of shots, as a kernel density's bandwidth narrows
    with its sample: log widening and the logit each less a learnt slope times log k (from 0). With
    `pooled` (`--z-prior shots-g`), also the parameters of one more component, `set_component`. With
    `dims` > 0 (`--shot-dims`), only z's first `dims` dimensions read the shots (`reads`). With
    `scales` 2 (`--shot-scales 2`), each shot also enters at a second widening of its own (`narrow`,
    starting at a fifth of the first, the same for every k) with a learnt share of the shot's weight."""

    def __init__(
        self, z_dim: int, by_shots: bool = False, pooled: bool = False, dims: int = 0, scales: int = 1
    ):
        super().__init__()
        # which of z's dimensions the shots' components place; the others are N(0, 1) in every one
        self.dims = dims  # 0: all; a Python number, so the model need not read a device tensor to know
        self.register_buffer("reads", torch.arange(z_dim) < (dims or z_dim), persistent=False)
        self.log_widen = nn.Parameter(torch.full((z_dim,), math.log(0.5)))
        self.prior_logit = nn.Parameter(torch.zeros(()))
        if by_shots or pooled:
            self.widen_slope = nn.Parameter(torch.zeros(z_dim))
            self.logit_slope = nn.Parameter(torch.zeros(()))
        if pooled:  # the task's centre starts at the prior's spread, its codes at half of it around it
            self.log_between = nn.Parameter(torch.zeros(z_dim))
            self.log_within = nn.Parameter(torch.full((z_dim,), math.log(0.5)))
            self.set_logit = nn.Parameter(torch.zeros(()))
            self.set_slope = nn.Parameter(torch.zeros(()))
        if scales == 2:  # the second scale starts at half of each shot's weight
            self.log_narrow = nn.Parameter(torch.full((z_dim,), math.log(0.1)))
            self.narrow_logit = nn.Parameter(torch.zeros(()))

    @property
    def scales(self) -> int:
        return 2 if hasattr(self, "log_narrow") else 1

    @property
    def pooled(self) -> bool:
        return hasattr(self, "log_between")

    def set_component(self, loc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The predictive of a new code of a task from its k shots' codes `loc` (tasks, k, z_dim),
        the Neural Statistician's reading of a set as a Gaussian: codes spread N(c, within²) around the
        task's centre c ~ N(0, between²), per dimension, so the centre's posterior narrows as 1/k and
        no shot is diluted by the others, as a kernel density's are. Returns its location and scale
        (tasks, z_dim) and its logit in the mixture, a learnt logit plus a slope times log k."""
        k = loc.shape[-2]
        within2, between2 = (2 * self.log_within).exp(), (2 * self.log_between).exp()
        precision = 1 / between2 + k / within2
        centre = loc.sum(-2) / within2 / precision
        spread = (1 / precision + within2).sqrt().expand_as(centre)
        return centre, spread, self.set_logit + self.set_slope * math.log(k)

    def at(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The widening (z_dim,) and N(0, I)'s logit for k shots."""
        if not hasattr(self, "widen_slope"):
            return self.log_widen.exp(), self.prior_logit
        log_k = math.log(k)
        return (self.log_widen - self.widen_slope * log_k).exp(), self.prior_logit - self.logit_slope * log_k


class ContextEncoder(PyroModule):
    """q(z | x, D): the encoder's trunk for x and, pooled by the mean, for a context set D of the
    same task; the heads read both (MetaVAE's shared inference network)."""

    def __init__(self, z_dim: int = 10, hidden: int = 100):
        super().__init__()
        _add_trunk(self, hidden)
        self.loc = Linear(2 * hidden, z_dim)
        self.logvar = Linear(2 * hidden, z_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor):
        """x: (*batch, n, 1, 28, 28), context: (*batch, m, 1, 28, 28) -> loc, scale (*batch, n, z_dim)."""
        params = weights(self)
        f = features(params, x)
        c = features(params, context).mean(-2, keepdim=True).expand_as(f)
        h = torch.cat([f, c], -1)
        return self.loc(h), torch.exp(0.5 * self.logvar(h))


def stack_params(modules) -> dict[str, torch.Tensor]:
    """The parameters of several same-shaped modules, stacked as (len(modules), 1, *shape):
    one group per task, ready for `encode`/`decode`."""
    named = [weights(m) for m in modules]
    return {name: torch.stack([n[name] for n in named]).unsqueeze(1) for name in named[0]}


def param_shapes(module: nn.Module) -> dict[str, torch.Size]:
    return {name: p.shape for name, p in module.named_parameters()}


class _Fold:
    """Arranges inputs of batch shape `batch` into (groups, items) against parameters of batch
    shape `param_batch`, and puts outputs back in the broadcast batch shape."""

    def __init__(self, batch: torch.Size, param_batch: torch.Size):
        n = max(len(batch), len(param_batch))
        self.param_dims = len(param_batch)
        self.batch = (1,) * (n - len(batch)) + tuple(batch)
        param_batch = (1,) * (n - len(param_batch)) + tuple(param_batch)
        self.shape = tuple(torch.broadcast_shapes(self.batch, param_batch))
        group_dims = [i for i in range(n) if param_batch[i] != 1]
        item_dims = [i for i in range(n) if param_batch[i] == 1]
        self.perm = group_dims + item_dims
        self.groups = math.prod(self.shape[i] for i in group_dims)
        self.items = math.prod(self.shape[i] for i in item_dims)

    def inputs(self, x: torch.Tensor, event_dim: int) -> torch.Tensor:
        event = x.shape[x.dim() - event_dim :]
        x = x.reshape(self.batch + event).expand(self.shape + event)
        n = len(self.shape)
        x = x.permute(*self.perm, *range(n, n + event_dim))
        return x.reshape(self.groups, self.items, *event)

    def params(self, params: dict) -> dict:
        """Every tensor as (groups, *its own shape)."""
        # The parameters' non-singleton batch dims are exactly the group dims, in order.
        return {name: p.reshape(self.groups, *p.shape[self.param_dims :]) for name, p in params.items()}

    def outputs(self, y: torch.Tensor) -> torch.Tensor:
        event = y.shape[2:]
        n = len(self.shape)
        y = y.reshape(*(self.shape[i] for i in self.perm), *event)
        inverse = sorted(range(n), key=self.perm.__getitem__)
        return y.permute(*inverse, *range(n, n + len(event)))


# Groups run through the convolutional layers a few at a time on the CPU: there the cost per item
# of a grouped convolution, and of the ReLUs between, grows with the number of groups once a
# layer's activations outgrow the cache. 16 tasks of 100 images, per 100 images of a training
# step on 2 cores: 23.7 ms all at once, 19.8 ms in passes of 4, 21.2 ms in passes of 2 (the
# plain VAE: 18.3 ms). A GPU runs them all at once. In training, groups of CPU_ALONE_ITEMS items
# or more go one at a time, each an ordinary convolution, whose backward pass oneDNN runs faster
# than a grouped one's: per 100 images of the default preset's step (4 tasks) 1.11x the plain
# VAE's against 1.27x in passes of 4 at 100 images a task, 1.34x against 1.61x at 50; at 20 a
# task, passes of 4 are faster (1.22x against 1.31x). benchmarks/RESULTS.md has the runs.
CPU_GROUPS_PER_PASS = 4
CPU_ALONE_ITEMS = 32


def _in_passes(run, h: torch.Tensor, params: dict, *extra) -> torch.Tensor:
    """`run(h, params, *extra)` on a few groups (dim 0 of h, of every parameter and of every extra
    tensor that is not None) at a time, joined. h: (groups, items, ...)."""
    size = CPU_GROUPS_PER_PASS if h.device.type == "cpu" else h.shape[0]
    if h.device.type == "cpu" and torch.is_grad_enabled() and h.shape[1] >= CPU_ALONE_ITEMS:
        size = 1
    if h.shape[0] <= size:
        return run(h, params, *extra)
    # split, not slicing: the backward pass then joins the parts' gradients in one copy
    parts = {name: p.split(size) for name, p in params.items()}
    extras = [None if e is None else e.split(size) for e in extra]
    outputs = [
        run(part, {name: p[i] for name, p in parts.items()}, *(None if e is None else e[i] for e in extras))
        for i, part in enumerate(h.split(size))
    ]
    return torch.cat(outputs)


def _batch_shape(params: dict, name: str, event_dim: int) -> torch.Size:
    p = params[name]
    return p.shape[: p.dim() - event_dim]


def _linear(h, params, name):
    """h: (G, M, in); weight (G, out, in) per group, or its factors for one group (`MatrixLayer.factors`)."""
    # One group is taken out by squeeze, never by indexing: the backward pass of `t[0]` fills a
    # zero tensor of t's size and copies the gradient into it (about 0.25 ms for each dense weight
    # of 313K on 2 cores, where a HyperVAE step of 5 images takes 14 ms); squeeze's is a view.
    if name + ".P" in params:  # W = P·Q + B, never made: h·Bᵀ + b + (h·Qᵀ)·Pᵀ
        P, Q, B, b = (params[name + suffix].squeeze(0) for suffix in (".P", ".Q", ".B", ".bias"))
        h = h.squeeze(0)
        return torch.addmm(F.linear(h, B, b), h @ Q.T, P.T).unsqueeze(0)
    w, b = params[name + ".weight"], params[name + ".bias"]
    if w.shape[0] == 1:
        # One group: F.linear, whose weight gradient comes in the weight's own layout (the
        # batched product's comes transposed, and is copied once more on its way to B.grad).
        return F.linear(h, w.squeeze(0), b.squeeze(0))
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def _conv(h, params, name):
    """h: (M, G*C, H, W), each group's channels convolved with its own filters (G, *filters), as
    the layer `name` is declared (`ENCODER_CONVS`, `DECODER_CONVS`)."""
    conv = _conv_spec(name)
    w, b = params[name + ".weight"], params[name + ".bias"]
    groups = w.shape[0]
    w = w.reshape(-1, *w.shape[2:])
    b = b.reshape(-1)
    # Channels-last: oneDNN's grouped convolutions run about 1.4x faster so, and its transposed
    # ones copy an NCHW input to channels-last anyway (deconv2's input, forward and backward:
    # about 1.4 ms of a 100-image step on 2 cores); deconv1's output then comes channels-last.
    if groups > 1 or conv.transposed:
        h = h.contiguous(memory_format=torch.channels_last)
    if conv.transposed:
        return F.conv_transpose2d(h, w, b, conv.stride, conv.padding, conv.output_padding, groups)
    return F.conv2d(h, w, b, conv.stride, conv.padding, groups=groups)


def features(params: dict, x: torch.Tensor) -> torch.Tensor:
    """The encoder's trunk: conv, conv, dense. x: (*batch, 1, 28, 28) -> (*batch', hidden)."""
    fold = _Fold(x.shape[:-3], _batch_shape(params, "conv1.weight", 4))
    return fold.outputs(_in_passes(_trunk, fold.inputs(x, 3), fold.params(params)))


def _trunk(h, params):
    """h: (G, M, 1, 28, 28) -> (G, M, hidden)."""
    groups, items = h.shape[:2]
    # Convolutions run with groups in the channel dim: (M, G*C, H, W).
    h = h.transpose(0, 1).reshape(items, groups * IMAGE_SHAPE[0], *IMAGE_SHAPE[1:])
    for name in ENCODER_CONVS:
        h = F.relu(_conv(h, params, name))
    if "attend.keys" in params:  # `--shot-attention-encoder`: q(z | x, θ(u), shots)
        h = h + _attend(h, params)
    h = h.flatten(1).unflatten(1, (groups, -1)).transpose(0, 1)  # items may be none: no -1 there
    return F.relu(_linear(h, params, "fc"))


def encode(params: dict, x: torch.Tensor):
    """Main-network encoder. x: (*batch, 1, 28, 28) -> loc, scale of shape (*batch', z_dim)."""
    return encode_with_features(params, x)[:2]


def encode_with_features(params: dict, x: torch.Tensor):
    """`encode`'s loc and scale, and the trunk's features (*batch', hidden) they are read from."""
    fold = _Fold(x.shape[:-3], _batch_shape(params, "conv1.weight", 4))
    params = fold.params(params)
    h = _in_passes(_trunk, fold.inputs(x, 3), params)
    loc = _linear(h, params, "loc")
    scale = torch.exp(0.5 * _linear(h, params, "logvar"))
    return fold.outputs(loc), fold.outputs(scale), fold.outputs(h)


def decode(params: dict, z: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
    """Main-network decoder. z: (*batch, z_dim) -> Bernoulli logits (*batch', 1, 28, 28). Where θ
    has `template_in` (`--shot-template deep`), `image` (z's batch, 1, 28, 28), the shots' pixels
    matched to z, joins deconv1's output; None: a blank image. An `image` (z's batch, A, 1, 28, 28)
    holds A images for every z (`--shot-template deep-address`): z's features are made once and
    the layers from deconv1's output on run for each, logits (*batch', A, 1, 28, 28)."""
    pixel_bias = params.get("pixel_bias")
    fold = _Fold(z.shape[:-1], _batch_shape(params, "fc1.weight", 2))
    params = fold.params(params)
    h = F.relu(_linear(fold.inputs(z, 1), params, "fc1"))  # (G, M, hidden)
    if image is not None:  # (G, M, 1, 28, 28), or (G, M, A, 1, 28, 28) with an address dim
        addressed = image.dim() == z.dim() + 3
        image = fold.inputs(image, 3 + addressed) if "template_in.weight" in params else None
    if torch.is_grad_enabled():
        logits = _in_passes(_decode_groups, h, params, image)
    else:  # scoring: each group's many samples by the faster path, one group at a time
        logits = torch.stack(
            [
                _decode_many(
                    h[g],
                    {name: p[g : g + 1] for name, p in params.items()},
                    None if image is None else image[g : g + 1],
                )
                for g in range(fold.groups)
            ]
        )
    logits = fold.outputs(logits)
    return logits if pixel_bias is None else logits + pixel_bias


def template_logits(params: dict, image: torch.Tensor) -> torch.Tensor:
    """An image (*batch, 1, 28, 28) through the decoder's `template` filter, each group its own
    (`--shot-template`): what a shot's strokes add to the logits of a drawing matched to it."""
    names = ("template.weight", "template.bias")
    fold = _Fold(image.shape[:-3], _batch_shape(params, names[0], 4))
    w, b = fold.params({name: params[name] for name in names}).values()
    h = fold.inputs(image, 3)  # (G, M, 1, 28, 28)
    groups, items = h.shape[:2]
    h = h.transpose(0, 1).reshape(items, groups, *IMAGE_SHAPE[1:])
    w, b = w.reshape(groups, *w.shape[2:]), b.reshape(groups)
    y = F.conv2d(h, w, b, padding=TEMPLATE_KERNEL // 2, groups=groups)
    return fold.outputs(y.reshape(items, groups, *IMAGE_SHAPE).transpose(0, 1))


def _decode_groups(h, params, image=None):
    """The decoder after its first layer. h: (G, M, hidden) -> logits (G, M, 1, 28, 28); `image`
    (G, M, 1, 28, 28) or None, as `decode` has it."""
    groups, items = h.shape[:2]
    h = F.relu(_linear(h, params, "fc2"))
    channels, height, width = conv_shape()
    h = h.transpose(0, 1).reshape(items, groups * channels, height, width)
    logits, addresses = _deconvs(h, params, image)
    logits = logits.reshape(items, *addresses, groups, *IMAGE_SHAPE)
    return logits.movedim(-4, 0)  # (G, M, *addresses, 1, 28, 28)


def _deconvs(h, params, image=None, last_layer=_conv, inplace=False):
    """The decoder's transposed convolutions from fc2's output h (M, G·C, 7, 7), with what the shot
    options join on the way (attention, the template's image, the copied pixels): one code for the
    path of training and that of scoring, which runs its last layer by `_conv_transpose_by_fold`
    and its ReLUs in place. Returns the logits as `last_layer` lays them out, M·A items, and the
    address dims, () or (A,)."""
    if "attend.keys" in params:
        h = h + _attend(h, params)
    *hidden, last = DECODER_CONVS
    copied, addresses = None, ()
    for name in hidden:
        h = _conv(h, params, name)
        if name == "deconv1" and "template_in.weight" in params:
            h, addresses = _joined(h, image, params)
        h = F.relu(h, inplace=inplace)
        if name == "deconv1" and "fine.keys" in params:
            read, copied = _attend_fine(h, params)
            h = h + read
    return _copied_logits(last_layer(h, params, last), copied, params), addresses


def _joined(h, image, params):
    """deconv1's output h (M, G·C, 14, 14) with the template's image joined (`--shot-template deep`):
    one image an item (G, M, 1, 28, 28), or A of them (G, M, A, 1, 28, 28; `deep-address`), when h
    is repeated for each, item-major. Returns h' and the address dims, () or (A,)."""
    if image is None or image.dim() == 5:
        return h + _template_features(image, params), ()
    groups, items, addresses = image.shape[:3]
    features = _template_features(image.reshape(groups, items * addresses, *IMAGE_SHAPE), params)
    return h.repeat_interleave(addresses, 0) + features, (addresses,)


def _template_features(image, params):
    """`--shot-template deep`: the matched shots' image (G, M, 1, 28, 28) through the `template_in`
    convolution, (M, G*32, 14, 14) as deconv1's output is laid out, for z's features to build on
    where the drawing follows a shot; None (no shots): its bias alone."""
    if image is None:
        return params["template_in.bias"].reshape(1, -1, 1, 1)
    groups, items = image.shape[:2]
    return _conv(image.transpose(0, 1).reshape(items, groups, *IMAGE_SHAPE[1:]), params, "template_in")


def shot_memory(
    params: dict, shots: torch.Tensor, heads: int = 1, reader: str = "shots_"
) -> dict[str, torch.Tensor]:
    """`--shot-attention`: what a 7×7 feature map reads of the shots (*batch, k, 1, 28, 28), one set
    per model of θ's batch: the shots' 7×7 maps by θ's convolutions `reader`conv1 and `reader`conv2
    (the decoder's `shots_conv1`, `shots_conv2`; "": the encoder's own), as keys (with the
    position's embedding) and values of the attention's width, and one more key, `attend_null`, of value 0,
    each split among the `heads`. Returned as parameters ("attend.keys", "attend.values", each θ's
    batch + (heads, k·49 + 1, width / heads)) for `decode` or `encode` to take with the rest
    of θ. Where θ has `fine_` weights (`--shot-attention-window`), also what the decoder's 14×14 map
    reads of the shots' 14×14 maps (`_fine_memory`)."""
    fold = _Fold(shots.shape[:-4] + (1,), _batch_shape(params, f"{reader}conv1.weight", 4))
    if fold.items != 1:
        raise ValueError("the shots must differ only where θ does: one set of shots per model")
    names = [name for name in params if name.startswith((f"{reader}conv", "attend_", "fine_"))]
    p = fold.params({name: params[name] for name in names})
    h = fold.inputs(shots.unsqueeze(-5), 4)[:, 0]  # (G, k, 1, 28, 28)
    groups, k = h.shape[:2]
    h = image = h.transpose(0, 1).reshape(k, groups * IMAGE_SHAPE[0], *IMAGE_SHAPE[1:])
    maps = []
    for name in ENCODER_CONVS:
        h = F.relu(_conv(h, p, f"{reader}{name}"))
        maps.append(h)
    channels = conv_shape()[0]
    h = h.reshape(k, groups, channels, -1).permute(1, 0, 3, 2).reshape(groups, -1, channels)  # (G, k·49, C)
    keys = _linear(h, p, "attend_key") + p["attend_pos"].repeat(1, k, 1)
    values = _linear(h, p, "attend_value")
    keys = torch.cat([keys, p["attend_null"].reshape(groups, 1, -1)], 1)
    values = torch.cat([values, values.new_zeros(groups, 1, values.shape[-1])], 1)
    keys, values = (t.unflatten(-1, (heads, -1)).transpose(1, 2).unsqueeze(1) for t in (keys, values))
    memory = {"attend.keys": fold.outputs(keys), "attend.values": fold.outputs(values)}
    if "fine_offset" in p:  # a matrix of its own, never factored as a dense weight may be
        fine = _fine_memory(maps[0], p, image if "fine_pixel.weight" in p else None)
        memory.update({name: fold.outputs(t.unsqueeze(1)) for name, t in fine.items()})
    return memory


def _fine_memory(h: torch.Tensor, p: dict, image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`--shot-attention-window` W: the shots' 14×14 maps h (k, G·C, 14, 14) as keys (with the
    embedding of their place in the window) and values seen from each position: the k·W² positions
    of the W × W square around it in every shot, and the null slot of value 0 last. Returns
    "fine.keys" and "fine.values" (G, 196, k·W² + 1, width) and "fine.bias" (G, 196, k·W² + 1),
    −∞ where the square leaves the map. Given the shots' `image` (k, G, 28, 28), `--shot-attention-pixels`,
    also "fine.pixels" (G, 196, k·W² + 1, 4): the 2×2 pixels (±1) under each of those positions,
    0 in the null slot."""
    groups = p["fine_offset"].shape[0]
    k, side = h.shape[0], h.shape[-1]
    channels, positions = h.shape[1] // groups, side * side
    window = math.isqrt(p["fine_offset"].shape[-2])
    m = h.reshape(k, groups, channels, positions).permute(1, 0, 3, 2).reshape(groups, -1, channels)

    def around(t):  # (G, k·196, d) -> (G, 196, k·W², d): each position's window in every shot
        d = t.shape[-1]
        t = F.unfold(t.reshape(groups * k, side, side, d).permute(0, 3, 1, 2), window, padding=window // 2)
        t = t.reshape(groups, k, d, window * window, positions).permute(0, 4, 1, 3, 2)
        return t.reshape(groups, positions, -1, d)

    keys = around(_linear(m, p, "fine_key")) + p["fine_offset"].repeat(1, k, 1).unsqueeze(1)
    values = around(_linear(m, p, "fine_value"))
    inside = F.unfold(h.new_ones(1, 1, side, side), window, padding=window // 2)[0].T  # (196, W²)
    inside = inside.repeat(1, k)
    bias = torch.zeros_like(inside).masked_fill(inside == 0, -math.inf)
    null = p["fine_null"].reshape(groups, 1, 1, -1).expand(-1, positions, -1, -1)

    def with_null(t):  # the null slot's value, 0, last
        return torch.cat([t, t.new_zeros(groups, positions, 1, t.shape[-1])], 2)

    memory = {
        "fine.keys": torch.cat([keys, null], 2),
        "fine.values": with_null(values),
        "fine.bias": torch.cat([bias, bias.new_zeros(positions, 1)], 1).expand(groups, -1, -1),
    }
    if image is not None:  # each 14×14 position's 2×2 pixels, as its 4 channels
        cells = F.pixel_unshuffle(2 * image - 1, 2)  # (k, G·4, 14, 14)
        cells = cells.reshape(k, groups, 4, positions).permute(1, 0, 3, 2).reshape(groups, -1, 4)
        memory["fine.pixels"] = with_null(around(cells))
    return memory


def _attend(h, params):
    """`--shot-attention`: each position of a 7×7 feature map h (M, G·C, 7, 7), the decoder's first
    (and with `--shot-attention-encoder` the encoder's last), asks, by a query of its features and
    its position, for the shots' features at the positions whose keys match (`shot_memory`), as
    Generative Matching Networks' decoder reads its matched examples, and adds what it reads back
    through `attend_out` (silent at the start), each head its share of the width. Returns (M, G·C,
    7, 7)."""
    items = h.shape[0]
    keys, values = params["attend.keys"], params["attend.values"]  # (G, heads, L, d / heads)
    groups, heads = keys.shape[:2]
    channels, positions = conv_shape()[0], math.prod(conv_shape()[1:])
    q = h.reshape(items, groups, channels, positions).permute(1, 0, 3, 2)  # (G, M, 49, C)
    q = _linear(q.reshape(groups, -1, channels), params, "attend_query")
    q = (q.reshape(groups, items, positions, -1) + params["attend_pos"].unsqueeze(1)).flatten(1, 2)
    read = F.scaled_dot_product_attention(q.unflatten(-1, (heads, -1)).transpose(1, 2), keys, values)
    read = _linear(read.transpose(1, 2).flatten(2), params, "attend_out")  # (G, M·49, C)
    return read.reshape(groups, items, positions, channels).permute(1, 0, 3, 2).reshape(h.shape)


def _attend_fine(h, params):
    """`--shot-attention-window`: each position of the decoder's 14×14 map h (M, G·C, 14, 14), after
    deconv1 and its ReLU, asks by a query of its features for the shots' features in the window
    around it (`_fine_memory`), and adds what it reads back through `fine_out` (silent at the
    start), as `_attend` does on the 7×7 map. Returns what it adds (M, G·C, 14, 14) and, with
    `--shot-attention-pixels`, the shots' pixels (±1) read by the same weights, a 28×28 image
    (M, G, 28, 28) that `_copied_logits` adds to the logits (strokes as a shot draws them, where the
    features read can only say roughly what is there); else None."""
    items = h.shape[0]
    keys, values, bias = params["fine.keys"], params["fine.values"], params["fine.bias"]
    groups, positions = keys.shape[:2]
    channels = h.shape[1] // groups
    q = h.reshape(items, groups, channels, positions).permute(1, 0, 3, 2).reshape(groups, -1, channels)
    q = _linear(q, params, "fine_query").reshape(groups, items, positions, -1)  # (G, M, 196, width)
    scores = torch.einsum("gmpd,gpld->gmpl", q, keys) / math.sqrt(q.shape[-1]) + bias.unsqueeze(1)
    weights = scores.softmax(-1)
    read = torch.einsum("gmpl,gpld->gmpd", weights, values)
    read = _linear(read.reshape(groups, items * positions, -1), params, "fine_out")  # (G, M·196, C)
    read = read.reshape(groups, items, positions, channels).permute(1, 0, 3, 2).reshape(h.shape)
    if "fine.pixels" not in params:
        return read, None
    copied = torch.einsum("gmpl,gpld->mgdp", weights, params["fine.pixels"])  # (M, G, 4, 196)
    side = h.shape[-1]
    return read, F.pixel_shuffle(copied.reshape(items, groups * 4, side, side), 2)


def _copied_logits(logits, copied, params):
    """The logits (M, G, 28, 28) plus the copied pixels (`_attend_fine`) through `fine_pixel`."""
    return logits if copied is None else logits + _conv(PIXEL_GAIN * copied, params, "fine_pixel")


def _decode_many(h, params, image=None):
    """The decoder after its first layer, for scoring thousands of samples of one model without
    gradients (importance sampling), about 1.6x faster on the CPU than the path for training:
    fc2 writes its output straight in channels-last order (its rows permuted from (c, h, w) to
    (h, w, c), a copy of the weights rather than of the activations), where oneDNN's transposed
    convolution is faster; ReLUs in place; the last layer by col2im. h: (M, hidden); params of
    one group; `image` (1, M, 1, 28, 28), (1, M, A, 1, 28, 28) or None, as `decode` has it. Returns
    (M, 1, 28, 28), or (M, A, 1, 28, 28) for A images an item."""
    c, hh, ww = conv_shape()
    w = params["fc2.weight"].reshape(c, hh, ww, h.shape[-1]).permute(1, 2, 0, 3).reshape(-1, h.shape[-1])
    b = params["fc2.bias"].reshape(c, hh, ww).permute(1, 2, 0).reshape(-1)
    h = F.relu(F.linear(h, w, b), inplace=True)
    h = h.reshape(-1, hh, ww, c).permute(0, 3, 1, 2)  # NCHW in channels-last memory, no copy
    logits, addresses = _deconvs(h, params, image, _conv_transpose_by_fold, inplace=True)
    return logits.reshape(-1, *addresses, *IMAGE_SHAPE)


def _conv_transpose_by_fold(h, params, name):
    """A transposed convolution as a matmul and `F.fold` (col2im): the same numbers as
    `conv_transpose2d`, faster for the last layer's single output channel, which the convolution
    library handles poorly. h: (M, G*C, H, W) -> (M*G, out, H', W')."""
    conv = _conv_spec(name)
    w, b = params[name + ".weight"], params[name + ".bias"]  # (G, C, out, k, k), (G, out)
    groups, channels, out, k = w.shape[:4]
    items, _, height, width = h.shape
    h = h.reshape(items, groups, channels, height * width)
    cols = torch.einsum("mgcl,gck->mgkl", h, w.reshape(groups, channels, out * k * k))
    image = F.fold(
        cols.reshape(items * groups, out * k * k, height * width),
        (conv.size(height), conv.size(width)),
        k,
        stride=conv.stride,
        padding=conv.padding,
    )
    return image + b.repeat(items, 1).reshape(items * groups, out, 1, 1)


class MatrixLayer(PyroModule):
    """W = U·H·V + B for one weight tensor of the main network (paper §3.5).

    The tensor is generated as a matrix (rows, cols) and reshaped to its own shape: a conv filter
    bank (out, in, k, k) as (out, in·k·k), a transposed one (in, out, k, k) as (in, out·k·k), a
    dense weight as itself, a bias of n as (n, 1). This is the last hyper layer: no activation,
    since weights take both signs.
    """

    def __init__(
        self,
        init: torch.Tensor,
        h_dim: int,
        h_rms: float,
        init_scale: float,
        rows: int | None = None,
        silent: bool = False,
    ):
        super().__init__()
        self.shape = tuple(init.shape)
        rows = rows or self.shape[0]  # the matrix the tensor is generated as: (rows, the rest)
        cols = init.numel() // rows
        # B starts at PyTorch's default initialisation of this very tensor, and U·H·V at
        # `init_scale` times B's spread: at step 0, θ(u) is a well-scaled default-initialised VAE
        # for every u, a start the main network is known to train from. A hyper-network with a
        # generic init would instead emit weights whose scale is a product of hyper-layer scales,
        # which explodes or vanishes through the main network's layers. The small u-dependent
        # part is what training grows to tell tasks apart.
        init = init.detach()
        self.B = nn.Parameter(init.reshape(rows, cols).clone())
        spread = float(init.std()) if init.numel() > 1 else float(init.abs())
        spread = spread or 1.0 / math.sqrt(rows)
        # (U H V)_ij sums h_dim² terms U_ik H_kl V_lj: its std is std(U)·std(V)·h_dim·rms(H).
        factor_std = math.sqrt(init_scale * spread / (h_dim * max(h_rms, 1e-6)))
        # `silent`: U starts at 0, so that W starts at B exactly and learns its u-dependent part from there.
        self.U = nn.Parameter(torch.randn(rows, h_dim) * (0.0 if silent else factor_std))
        self.V = nn.Parameter(torch.randn(h_dim, cols) * factor_std)

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        """H: (*batch, h_dim, h_dim) -> W: (*batch, *shape)."""
        B = self.B
        if B.dim() > 2:  # B drawn in the tasks plate (made a PyroSample by a variant): one per task
            W = self.U @ H @ self.V + B
            return W.reshape(*W.shape[:-2], *self.shape)
        H_flat = H.reshape(-1, *H.shape[-2:])
        n = H_flat.shape[0]
        rows, cols = B.shape
        # The cheaper order of the two products, and B added inside the last one (baddbmm):
        # about 30% off the generation of θ, forward and backward.
        if n == 1:
            # One task (the paper's setting): plain matrix products, so B's gradient is W's
            # as it comes, not a sum over a batch of one: 20% off θ's forward and backward.
            h = H_flat[0]
            if rows > cols:
                W = torch.addmm(B, self.U, h @ self.V)
            else:
                W = torch.addmm(B, self.U @ h, self.V)
        elif rows > cols:
            W = torch.baddbmm(B, self.U.expand(n, -1, -1), H_flat @ self.V)
        else:
            W = torch.baddbmm(B, self.U @ H_flat, self.V.expand(n, -1, -1))
        return W.reshape(*H.shape[:-2], *self.shape)

    def pays_factored(self, H: torch.Tensor, items: int) -> bool:
        """Whether a dense weight is cheaper applied to `items` inputs as P·Q + B (`factors`) than
        made: in training, for one task whose few images cost less than W's rows × cols × h_dim."""
        B = self._parameters.get("B")  # none where a variant draws B per task (a PyroSample)
        if B is None or len(self.shape) != 2 or tuple(B.shape) != self.shape:
            return False
        rows, cols = self.shape
        return (
            torch.is_grad_enabled()
            and H.shape[:-2].numel() == 1
            and rows * cols >= FACTORED_MIN_WEIGHTS
            and items * (rows + cols) * FACTORED_MARGIN < rows * cols
        )

    def factors(self, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P (*batch, rows, h_dim) and Q (*batch, h_dim, cols) with W = P·Q + B, H folded into the
        smaller side."""
        batch = H.shape[:-2]
        if self.B.shape[0] > self.B.shape[1]:
            return _lift(self.U, batch), H @ self.V
        return self.U @ H, _lift(self.V, batch)


def _lift(t: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """t as (*batch, *t.shape). For one task (batch all ones) new dims of size one, a view whose
    backward pass is a view too: `t.expand(*batch, ...)` would sum t's gradient over the new dims,
    a copy of it (0.2-0.4 ms a dense weight on 2 cores) even where they are ones."""
    lifted = t[(None,) * len(batch)]
    return lifted if batch.numel() == 1 else lifted.expand(*batch, *t.shape)


# The two large dense layers of the main VAE (3136 x 100 weights) are applied in factored form,
# never made, when items · (rows + cols) · FACTORED_MARGIN < rows · cols: below about 24 images of
# one task. Making W costs rows · cols · h_dim multiply-adds, thrice with the backward pass; the
# factored product adds items · (rows + cols) · h_dim, in thin products that run slower per flop.
# The small layers keep one kernel each.
FACTORED_MARGIN = 4
FACTORED_MIN_WEIGHTS = 65_536


class ThetaGenerator(PyroModule):
    """The hyper-decoder θ(u): u -> dense 100 -> dense h_dim² -> H (h_dim x h_dim) -> one
    matrix layer per weight tensor of the main encoder and decoder.

    The paper reshapes the input of the matrix layers to 20x20 after a dense layer of 100 units,
    which cannot be reshaped to 20x20; we read it as a second dense layer of 400 units after the
    first, both with ReLU. Every weight, filter and bias of the main VAE is generated.
    """

    def __init__(
        self,
        u_dim: int = 10,
        z_dim: int = 10,
        hidden: int = 100,
        h_dim: int = 20,
        init_scale: float = 0.1,
        z_prior: bool = False,
        layout: str = "paper",
        pixel_bias: bool = False,
        extra_inputs: int = 0,
        template: str = "none",
        attention: int = 0,
        encoder_attention: bool = False,
        attention_dim: int = ATTEND_DIM,
        attention_window: int = 0,
        attention_pixels: bool = False,
        warp_grid: int = 0,
    ):
        super().__init__()
        self.h_dim = h_dim
        # How the shots' images are weighed for the decoder's template filter (`models.shot_logits`),
        # and the heads by which its first map reads the shots' maps (`--shot-attention`; 0: none).
        self.template, self.attention = template, int(attention)
        self.encoder_attention = encoder_attention  # the main encoder reads the shots' maps too
        # z's width, and the width of the shots' features the decoder reads besides z (0: none)
        self.z_dim, self.feature_width = z_dim, extra_inputs
        self.trunk = PyroModule[nn.Sequential](
            Linear(u_dim, hidden), nn.ReLU(), Linear(hidden, h_dim * h_dim), nn.ReLU()
        )
        with torch.no_grad():
            # The typical size of H under the prior sets the scale of U and V. Computed by hand: a
            # PyroModule run before it joins its program could not join it.
            first, second = self.trunk[0], self.trunk[2]
            h = F.relu(
                F.linear(
                    F.relu(F.linear(torch.randn(256, u_dim), first.weight, first.bias)),
                    second.weight,
                    second.bias,
                )
            )
            h_rms = float(h.pow(2).mean().sqrt())
        defaults = {
            "encoder": Encoder(z_dim, hidden, attention if encoder_attention else 0, attention_dim),
            "decoder": Decoder(
                z_dim,
                hidden,
                pixel_bias,
                extra_inputs,
                template != "none",
                deep_template=template in ("deep", "deep-address"),
                warp=template == "warp-address",
                warp_grid=warp_grid,
                attention=attention,
                attention_dim=attention_dim,
                attention_window=attention_window,
                attention_pixels=attention_pixels,
            ),
        }
        if z_prior:  # p(z | u) = N(loc, exp(log_scale)), generated with the decoder; starts near N(0, I)
            defaults["decoder"].zprior = ZPriorParams(z_dim)
        self.shapes = {half: param_shapes(net) for half, net in defaults.items()}
        self.layers = PyroModule[nn.ModuleDict](
            {
                half: PyroModule[nn.ModuleDict](
                    {
                        _key(name): MatrixLayer(
                            p,
                            h_dim,
                            h_rms,
                            init_scale,
                            _matrix_rows(half, name, layout),
                            silent=name.startswith(SILENT_AT_START),
                        )
                        for name, p in net.named_parameters()
                    }
                )
                for half, net in defaults.items()
            }
        )

    def H(self, u: torch.Tensor) -> torch.Tensor:
        return self.trunk(u).reshape(*u.shape[:-1], self.h_dim, self.h_dim)

    def generate(self, half: str, u: torch.Tensor, items: int | None = None) -> dict[str, torch.Tensor]:
        """θ for one half ("encoder" or "decoder") of the main VAE; each tensor has shape
        u.shape[:-1] + its own shape. Given the number of `items` it will be applied to, a dense
        weight that is cheaper so comes as its factors instead (`MatrixLayer.pays_factored`):
        NAME.P, NAME.Q and NAME.B for NAME.weight, which `encode` and `decode` apply as P·Q + B."""
        H = self.H(u)
        theta = {}
        for key, layer in self.layers[half].items():
            name = _name(key)
            if items is not None and layer.pays_factored(H, items):
                base = name.removesuffix(".weight")
                theta[base + ".P"], theta[base + ".Q"] = layer.factors(H)
                theta[base + ".B"] = _lift(layer.B, H.shape[:-2])
            else:
                theta[name] = layer(H)
        return theta

    def encoder(self, u, items: int | None = None):
        return self.generate("encoder", u, items)

    def decoder(self, u, items: int | None = None):
        return self.generate("decoder", u, items)


THETA_LAYOUTS = ("paper", "spatial")
# The layers that write the decoder's read of the shots (`--shot-attention`) back into it.
READ_OUT = ("attend_out.", "fine_out.", "fine_pixel.")
# The weights by which the shots join the main VAE: zero at the start in θ(u) for every u, so that a
# model that reads shots starts as the one without (`MatrixLayer(silent=True)`).
SILENT_AT_START = ("template.", "template_in.", "warp.", "flow.", *READ_OUT)


def _matrix_rows(half: str, name: str, layout: str) -> int | None:
    """The rows of the matrix a tensor is generated as (None: its first dim). `paper`: every tensor
    as (first dim, the rest), so a bias of n is (n, 1) and its task-dependent part U·H·V lies in
    the h_dim columns of U. `spatial`: the decoder's dense layer that writes the first feature map
    (fc2, its weight and bias) as (channels, positions × inputs), so that the part that depends on
    the task can draw any pattern over the map's positions, within h_dim channel directions,
    rather than h_dim patterns fixed for all tasks."""
    if layout == "spatial" and half == "decoder" and name in ("fc2.weight", "fc2.bias"):
        return conv_shape()[0]
    if name == "pixel_bias":  # as the image it is laid on: rows of pixels
        return IMAGE_SHAPE[1]
    if layout not in THETA_LAYOUTS:
        raise ValueError(f"unknown θ layout {layout!r}; choose one of {', '.join(THETA_LAYOUTS)}")
    return None


# nn.ModuleDict keys may not contain dots.
def _key(name: str) -> str:
    return name.replace(".", "__")


def _name(key: str) -> str:
    return key.replace("__", ".")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
