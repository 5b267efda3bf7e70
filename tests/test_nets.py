import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrohvae import nets
from pyrohvae.config import RunConfig
from pyrohvae.nets import Decoder, Encoder, ThetaGenerator, decode, encode, param_shapes
from pyrohvae.program import build


@pytest.fixture
def theta():
    torch.manual_seed(0)
    return ThetaGenerator()


def test_generated_tensors_have_main_network_shapes(theta):
    u = torch.randn(3, 1, 10)
    for half, net in (("encoder", Encoder()), ("decoder", Decoder())):
        generated = theta.generate(half, u)
        expected = param_shapes(net)
        assert set(generated) == set(expected)  # every weight, filter and bias
        for name, shape in expected.items():
            assert generated[name].shape == (3, 1, *shape), name


def test_different_u_give_different_theta(theta):
    u = torch.randn(2, 10)
    for half in ("encoder", "decoder"):
        for name, value in theta.generate(half, u).items():
            assert not torch.allclose(value[0], value[1]), name


def test_theta_starts_near_default_initialisation(theta):
    """B is PyTorch's default init; the u-dependent part is a small fraction of its spread."""
    u = torch.randn(512, 10)
    with torch.no_grad():
        for half in ("encoder", "decoder"):
            for name, value in theta.generate(half, u).items():
                if value[0].numel() == 1:
                    continue
                spread = value.mean(0).std()
                wobble = value.std(0).mean()
                assert 0.005 < wobble / spread < 0.3, (name, float(wobble / spread))


def test_grouped_computation_equals_one_network_per_task(theta):
    u = torch.randn(3, 1, 10)
    x = (torch.rand(3, 5, 1, 28, 28) < 0.3).float()
    with torch.no_grad():
        enc, dec = theta.encoder(u), theta.decoder(u)
        loc, scale = encode(enc, x)
        z = torch.randn(3, 5, 10)
        logits = decode(dec, z)
        for t in range(3):
            one_enc = {k: v[t, 0] for k, v in enc.items()}
            one_dec = {k: v[t, 0] for k, v in dec.items()}
            loc_t, scale_t = encode(one_enc, x[t])
            torch.testing.assert_close(loc[t], loc_t, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(scale[t], scale_t, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(logits[t], decode(one_dec, z[t]), rtol=1e-5, atol=1e-5)


def test_groups_run_in_passes_as_they_would_all_at_once(theta, monkeypatch):
    """On the CPU, six tasks go through the convolutions in passes of a few groups: the same
    outputs and gradients as in one pass."""
    from pyrohvae import nets

    assert 6 > nets.CPU_GROUPS_PER_PASS
    u = torch.randn(6, 1, 10, requires_grad=True)
    x = (torch.rand(6, 5, 1, 28, 28) < 0.3).float()
    z = torch.randn(6, 5, 10)

    def run():
        loc, scale = encode(theta.encoder(u), x)
        logits = decode(theta.decoder(u), z)
        loss = loc.square().sum() + scale.sum() + logits.square().mean()
        grads = torch.autograd.grad(
            loss,
            [u, theta.layers["decoder"]["deconv1__weight"].B, theta.layers["encoder"]["conv2__weight"].U],
        )
        return (loc, scale, logits, *grads)

    in_passes = run()
    monkeypatch.setattr(nets, "CPU_GROUPS_PER_PASS", 6)
    for a, b in zip(in_passes, run()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _check_against_torch_layers():
    """The functional code (both decoder paths) against the layers' own forward, same weights."""
    torch.manual_seed(1)
    enc, dec = Encoder(), Decoder()
    x = torch.rand(4, 1, 28, 28)
    h = torch.relu(enc.conv2(torch.relu(enc.conv1(x))))
    h = torch.relu(enc.fc(h.flatten(1)))
    loc, scale = enc(x)
    torch.testing.assert_close(loc, enc.loc(h))
    torch.testing.assert_close(scale, torch.exp(0.5 * enc.logvar(h)))
    z = torch.randn(4, 10)
    h = torch.relu(dec.fc2(torch.relu(dec.fc1(z)))).reshape(4, *nets.conv_shape())
    reference = dec.deconv2(torch.relu(dec.deconv1(h)))
    torch.testing.assert_close(dec(z), reference)
    with torch.no_grad():
        torch.testing.assert_close(dec(z), reference, rtol=1e-5, atol=1e-5)
    return enc, dec


def test_ordinary_parameters_match_torch_layers():
    enc, _dec = _check_against_torch_layers()
    assert nets.conv_shape() == (64, 7, 7) and enc.conv1.padding == (1, 1)


def test_the_declared_architecture_is_what_runs(monkeypatch):
    """Change a layer's kernel and padding where the architecture is declared: the layer, the
    functional code and θ(u) all follow, and the numbers change."""
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(1)
    before = Encoder()(x)[0]
    monkeypatch.setitem(nets.ENCODER_CONVS, "conv1", nets.Conv(1, 32, kernel_size=5, padding=2))
    monkeypatch.setitem(
        nets.DECODER_CONVS, "deconv2", nets.Conv(32, 1, 5, padding=2, output_padding=1, transposed=True)
    )
    enc, dec = _check_against_torch_layers()
    assert enc.conv1.weight.shape == (32, 1, 5, 5) and enc.conv1.padding == (2, 2)
    assert dec.deconv2.weight.shape == (32, 1, 5, 5)
    torch.manual_seed(1)
    assert not torch.allclose(Encoder()(x)[0], before)
    theta = ThetaGenerator()
    assert theta.shapes["encoder"]["conv1.weight"] == (32, 1, 5, 5)
    assert decode(theta.decoder(torch.randn(2, 1, 10)), torch.randn(2, 3, 10)).shape == (2, 3, 1, 28, 28)
    monkeypatch.setitem(nets.DECODER_CONVS, "deconv2", nets.Conv(32, 1, 3, padding=0, transposed=True))
    with pytest.raises(ValueError, match="decoder's convolutions give images of"):
        Decoder()


def test_particles_broadcast_against_shared_weights(theta):
    """θ per task (T, 1) against z with an extra particle dim (K, T, N): items fold, not copy θ."""
    u = torch.randn(2, 1, 10)
    z = torch.randn(4, 2, 3, 10)
    with torch.no_grad():
        dec = theta.decoder(u)
        logits = decode(dec, z)
        assert logits.shape == (4, 2, 3, 1, 28, 28)
        one = {k: v[1, 0] for k, v in dec.items()}
        torch.testing.assert_close(logits[2, 1], decode(one, z[2, 1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "preset,hyper_encoder",
    [("paper", "inference.encoder.conv1.weight"), ("task-specific", "inference.encoder.conv1.weight")],
)
def test_gradients_reach_every_trainable_part(preset, hyper_encoder):
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    program = build(RunConfig(dataset="mnist", model="hypervae", preset=preset))
    x = (torch.rand(2, 8, 1, 28, 28) < 0.3).float()
    Trace_ELBO(max_plate_nesting=2).differentiable_loss(program.model, program.guide, x).backward()
    grads = {name: p.grad for name, p in program.named_parameters()}
    for name, g in grads.items():
        assert g is not None and g.abs().sum() > 0, name
    # the parts the paper names, by name
    for part in (
        "layers.decoder.fc2__weight.U",
        "layers.decoder.fc2__weight.V",
        "layers.encoder.conv1__weight.B",
        "theta.trunk.0.weight",
        hyper_encoder,
    ):
        assert any(part in name for name in grads), part


@pytest.mark.parametrize("name", ["fc2__weight", "deconv1__weight"])  # more rows than columns, and fewer
def test_matrix_layer_is_u_h_v_plus_b(theta, name):
    layer = theta.layers["decoder"][name]
    H = torch.rand(20, 20)
    W = layer(H)
    assert W.shape == layer.shape
    torch.testing.assert_close(W.reshape(layer.B.shape), layer.U @ H @ layer.V + layer.B)
    # one task takes its own route (matrix products), several a batched one: the same W and gradients
    Hs = torch.rand(3, 20, 20, requires_grad=True)
    alone = [layer(H) for H in Hs]
    together = layer(Hs)
    for i in range(3):
        torch.testing.assert_close(alone[i], together[i])
    grads = [
        torch.autograd.grad(sum(w.square().sum() for w in ws), [layer.B, layer.U, Hs])
        for ws in (alone, together)
    ]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert layer.B.shape == (layer.shape[0], math.prod(layer.shape[1:]))  # a filter bank's rows: its outputs


@pytest.mark.parametrize("tasks", [1, 3])
def test_the_no_grad_decoder_path_gives_the_same_logits(theta, tasks):
    """Scoring one model takes another route (fc2 rows permuted to channels-last, col2im)."""
    dec = theta.decoder(torch.randn(tasks, 1, 10))
    z = torch.randn(5, tasks, 7, 10)  # particles, tasks, items
    with_grad = decode(dec, z)
    with torch.no_grad():
        without = decode(dec, z)
    torch.testing.assert_close(with_grad.detach(), without, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("items,factored", [(5, True), (20, True), (100, False)])
def test_dense_layers_applied_in_factored_form_give_the_same_loss_and_gradients(items, factored, monkeypatch):
    """One task of few images applies the two large dense weights as P·Q + B without making them
    (`MatrixLayer.pays_factored`): the same loss and gradients as making W, the same draws."""
    torch.manual_seed(0)
    program = build(RunConfig(dataset="mnist", model="hypervae", preset="paper")).double()
    x = (torch.rand(1, items, 1, 28, 28) < 0.3).double()

    def loss_and_grads():
        pyro.set_rng_seed(1)
        program.zero_grad()
        loss = Trace_ELBO(max_plate_nesting=2).differentiable_loss(program.model, program.guide, x)
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in program.named_parameters()}

    made = program.theta.encoder(torch.zeros(1, 1, 10, dtype=x.dtype), items=items)
    assert ("fc.P" in made and "fc.weight" not in made) == factored
    assert ("fc2.P" in program.theta.decoder(torch.zeros(1, 1, 10, dtype=x.dtype), items=items)) == factored
    loss, grads = loss_and_grads()
    monkeypatch.setattr(nets, "FACTORED_MARGIN", math.inf)  # every weight made
    assert "fc.weight" in program.theta.encoder(torch.zeros(1, 1, 10, dtype=x.dtype), items=items)
    loss_made, grads_made = loss_and_grads()
    torch.testing.assert_close(loss, loss_made, rtol=1e-10, atol=1e-10)
    for name, g in grads.items():
        torch.testing.assert_close(g, grads_made[name], rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("items", [40, 8])
def test_tasks_of_many_images_train_one_group_a_pass_with_the_same_loss_and_gradients(items, monkeypatch):
    """In training on the CPU, tasks of CPU_ALONE_ITEMS images or more go through the main networks
    one at a time (ordinary convolutions), fewer together (grouped): the same loss and gradients
    either way, the same draws."""
    torch.manual_seed(0)
    program = build(RunConfig(dataset="mnist", model="hypervae", preset="task-specific")).double()
    x = (torch.rand(4, items, 1, 28, 28) < 0.3).double()
    passes = []
    trunk = nets._trunk
    monkeypatch.setattr(nets, "_trunk", lambda h, params: passes.append(h.shape[0]) or trunk(h, params))

    def loss_and_grads():
        pyro.set_rng_seed(1)
        program.zero_grad()
        passes.clear()
        loss = Trace_ELBO(max_plate_nesting=2).differentiable_loss(program.model, program.guide, x)
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in program.named_parameters()}

    loss, grads = loss_and_grads()
    assert 4 in passes if items < nets.CPU_ALONE_ITEMS else set(passes) == {1}, passes
    monkeypatch.setattr(nets, "CPU_ALONE_ITEMS", math.inf)  # every pass of 4 groups
    loss_grouped, grads_grouped = loss_and_grads()
    assert 4 in passes
    torch.testing.assert_close(loss, loss_grouped, rtol=1e-10, atol=1e-10)
    for name, g in grads.items():
        torch.testing.assert_close(g, grads_grouped[name], rtol=1e-8, atol=1e-10, msg=name)


def _nodes_between(output: torch.Tensor, parameter: torch.Tensor) -> set[str]:
    """The kinds of the backward nodes on the paths from `output` to `parameter`."""
    reaches: dict = {}

    def reach(node) -> bool:
        if node is None:
            return False
        if node not in reaches:
            reaches[node] = getattr(node, "variable", None) is parameter
            below = [reach(n) for n, _ in node.next_functions]  # every one visited, no short cut
            reaches[node] = reaches[node] or any(below)
        return reaches[node]

    reach(output.grad_fn)
    return {type(node).__name__ for node, on_path in reaches.items() if on_path}


@pytest.mark.parametrize("items", [5, 100])
def test_one_tasks_dense_weights_reach_their_parameters_through_views(items):
    """The backward pass from one task's loss to B of the large dense layer neither fills a zero
    tensor of the weight's size (indexing the group out: SelectBackward) nor sums the gradient
    over new dims of size one (expanding B to the task's batch: ExpandBackward), whether W is made
    (100 images) or applied in factored form (5)."""
    torch.manual_seed(0)
    theta = ThetaGenerator()
    params = theta.encoder(torch.randn(1, 10), items=items)
    assert ("fc.P" in params) == (items == 5)
    loss = encode(params, torch.rand(items, 1, 28, 28))[0].sum()
    B = theta.layers["encoder"]["fc__weight"].B
    nodes = _nodes_between(loss, B)
    assert "AccumulateGrad" in nodes
    assert not nodes & {"SelectBackward0", "ExpandBackward0"}, nodes
    loss.backward()
    assert B.grad.abs().max() > 0


def test_the_template_filter_starts_silent_and_learns_from_u():
    """`--shot-template`: at step 0 the filter of θ(u) is zero for every u (the shots add nothing to
    the logits yet), and the loss still reaches U, the part that depends on u."""
    torch.manual_seed(0)
    theta = ThetaGenerator(template="matched")
    u = torch.randn(3, 1, 10)
    image = torch.rand(3, 4, 1, 28, 28) * 2 - 1
    logits = nets.template_logits(theta.decoder(u), image)
    assert logits.shape == image.shape and logits.abs().max() == 0
    layer = theta.layers["decoder"]["template__weight"]
    assert layer.U.abs().max() == 0 and layer.V.abs().max() > 0
    (logits * image).sum().backward()
    assert layer.B.grad.abs().max() > 0 and layer.U.grad.abs().max() > 0


def test_the_deep_template_enters_the_hidden_map_silent_and_learns_from_u():
    """`--shot-template deep`: the matched image's convolution into deconv1's output is zero for every
    u at step 0, so the decoder with the image equals the decoder without it; the loss reaches U, and
    once the convolution is not zero the image changes the logits, by the training path and by the
    scoring path (no gradients) alike."""
    torch.manual_seed(0)
    theta = ThetaGenerator(z_dim=10, template="deep")
    u = torch.randn(3, 1, 10)
    z, image = torch.randn(3, 4, 10), torch.rand(3, 4, 1, 28, 28) * 2 - 1
    params = theta.decoder(u)
    torch.testing.assert_close(nets.decode(params, z, image), nets.decode(params, z))
    layer = theta.layers["decoder"]["template_in__weight"]
    assert layer.U.abs().max() == 0 and layer.B.abs().max() == 0
    (nets.decode(params, z, image) * image).sum().backward()
    assert layer.B.grad.abs().max() > 0 and layer.U.grad.abs().max() > 0
    with torch.no_grad():
        layer.B.normal_(0, 0.3)
        layer.U.normal_(0, 0.3)
        params = theta.decoder(u)
        scored = nets.decode(params, z, image)
    trained = nets.decode(params, z, image)
    torch.testing.assert_close(scored, trained.detach(), rtol=1e-5, atol=1e-5)
    assert (trained - nets.decode(params, z)).abs().max() > 0.1


def test_the_attention_to_the_shots_starts_silent_and_reads_each_tasks_own_shots():
    """`--shot-attention`: at step 0 the decoder's first map reads nothing (`attend_out` is zero for
    every u), so the decoder given the shots' memory equals the decoder without it, and the loss
    reaches `attend_out`'s U; once it speaks, the training path and the scoring path (no gradients)
    agree, the shots change the logits, and a task's logits read its own shots only."""
    torch.manual_seed(0)
    theta = ThetaGenerator(z_dim=10, attention=2)
    u = torch.randn(3, 1, 10)
    z, shots = torch.randn(3, 4, 10), (torch.rand(3, 5, 1, 28, 28) < 0.2).float()
    params = theta.decoder(u)
    memory = nets.shot_memory(params, shots, 2)
    assert memory["attend.keys"].shape == (3, 1, 2, 5 * 49 + 1, nets.ATTEND_DIM // 2)  # two heads
    torch.testing.assert_close(nets.decode({**params, **memory}, z), nets.decode(params, z))
    layer = theta.layers["decoder"]["attend_out__weight"]
    assert layer.U.abs().max() == 0 and layer.B.abs().max() == 0
    (nets.decode({**params, **memory}, z) * torch.randn(3, 4, 1, 28, 28)).sum().backward()
    assert layer.B.grad.abs().max() > 0 and layer.U.grad.abs().max() > 0
    with torch.no_grad():
        layer.B.normal_(0, 0.3)
        layer.U.normal_(0, 0.3)
        params = theta.decoder(u)
        memory = nets.shot_memory(params, shots, 2)
        scored = nets.decode({**params, **memory}, z)
        other = shots.clone()
        other[1] = 1 - other[1]
        changed = nets.decode({**params, **nets.shot_memory(params, other, 2)}, z)
    trained = nets.decode({**params, **memory}, z)
    torch.testing.assert_close(scored, trained.detach(), rtol=1e-5, atol=1e-5)
    assert (scored - nets.decode(params, z)).abs().max() > 0.1
    assert (changed[1] - scored[1]).abs().max() > 1e-3
    torch.testing.assert_close(changed[[0, 2]], scored[[0, 2]])
