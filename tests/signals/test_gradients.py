import numpy as np
import pytest
import torch
from torch import nn

from lightning_lossguard.signals.gradients import NO_GRADIENT, SAMPLE_ELEMENTS, GradientProbe
from lightning_lossguard.signals.parameters import Sharding, build_layout, layer_name, watched_parameters
from lightning_lossguard.signals.window import global_norms, layer_norms


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 2)  # registered first, runs last
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(x).mean(1)))


def _watched(net: nn.Module) -> object:
    return watched_parameters(net, [torch.optim.SGD(net.parameters(), lr=0.1)])


def test_layout_orders_layers_by_execution_and_skips_frozen_parameters() -> None:
    net = Net()
    watched = _watched(net)
    layout = build_layout(net, watched, execution_order=["embed", "body.0", "body.1", "head"])
    assert "frozen.weight" not in watched.names and "frozen.weight" in watched.frozen
    assert layout.layers[:4] == ("embed", "body.0", "body.1", "head")
    comparable = dict(zip(layout.layers, layout.comparable))
    assert comparable == {"embed": False, "body.0": True, "body.1": False, "head": True, "unused": True}
    assert layer_name("encoder.3.weight") == "encoder.3" and layer_name("scale") == "scale"


def test_norms_match_a_slow_per_parameter_reference() -> None:
    net = Net()
    watched = _watched(net)
    layout = build_layout(net, watched)
    params = list(watched.params)
    names = list(watched.names)
    probe = GradientProbe(params)
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randint(0, 10, (16, 5))).pow(2).sum().backward()
        probe.record(opt)
    rows = probe.rows.take().numpy()
    assert rows.shape == (3, len(params))
    reference = [p.grad.norm().item() if p.grad is not None else NO_GRADIENT for p in params]
    np.testing.assert_allclose(rows[-1], reference, rtol=1e-5)
    assert rows[-1][names.index("unused.weight")] == NO_GRADIENT
    total = torch.sqrt(sum(p.grad.norm() ** 2 for p in params if p.grad is not None)).item()
    np.testing.assert_allclose(global_norms(rows)[-1], total, rtol=1e-5)
    per_layer = layer_norms(rows, layout.layer_of, len(layout.layers))
    head = layout.layers.index("head")
    expected = torch.sqrt(net.head.weight.grad.norm() ** 2 + net.head.bias.grad.norm() ** 2).item()
    np.testing.assert_allclose(per_layer[-1, head], expected, rtol=1e-5)
    assert np.isnan(per_layer[-1, layout.layers.index("unused")])


def test_half_precision_gradients_do_not_overflow_the_norm() -> None:
    p = nn.Parameter(torch.zeros(1000, dtype=torch.bfloat16))
    p.grad = torch.full((1000,), 300.0, dtype=torch.bfloat16)
    probe = GradientProbe([p])
    probe.record(torch.optim.SGD([p], lr=0.1))
    np.testing.assert_allclose(probe.rows.take().item(), 300.0 * 1000**0.5, rtol=1e-2)


def test_dead_unit_share_and_update_ratio_samples() -> None:
    layer = nn.Linear(4, 10)
    params = list(layer.parameters())
    probe = GradientProbe(params)
    opt = torch.optim.SGD(params, lr=0.5)
    layer.weight.grad = torch.ones(10, 4)
    layer.weight.grad[:7] = 0.0  # 7 of 10 units get nothing
    layer.bias.grad = torch.ones(10)
    probe.sample_dead_units([0])
    before = layer.weight.detach().clone()
    probe.snapshot_weights(opt, max_elements=10_000)
    opt.step()
    probe.sample_update_ratio()
    dead = probe.dead_units.take()[0]  # [dead rows per parameter..., rows per parameter...]
    assert dead[0].item() == 7 and dead[2].item() == 10 and dead[1].item() == NO_GRADIENT
    update, weight = probe.update_ratio.take()[0, [0, 2]].tolist()
    assert abs(update - (layer.weight.detach() - before).norm().item()) < 1e-6
    assert abs(weight - before.norm().item()) < 1e-6


def test_a_large_parameter_is_sampled_on_evenly_spaced_units() -> None:
    layer = nn.Linear(256, 1024)  # 262,144 weights: 4x the sample size
    params = list(layer.parameters())
    probe = GradientProbe(params)
    opt = torch.optim.SGD(params, lr=0.5)
    layer.weight.grad = torch.ones(1024, 256)
    layer.weight.grad[:768] = 0.0  # the first three quarters of the units get nothing
    layer.bias.grad = torch.ones(1024)
    probe.sample_dead_units([0])
    before = layer.weight.detach().clone()
    probe.snapshot_weights(opt, max_elements=10**9)
    assert sum(w.numel() for _, w in probe._before_step) <= SAMPLE_ELEMENTS + 1024
    opt.step()
    probe.sample_update_ratio()
    dead = probe.dead_units.take()[0]
    assert dead[2].item() == 256 and dead[0].item() == 192  # every 4th unit: the same share, 0.75
    update, weight = probe.update_ratio.take()[0, [0, 2]].tolist()
    full = (layer.weight.detach() - before).norm().item() / before.norm().item()
    assert abs(update / weight - full) < 0.1 * full  # the sampled units' ratio estimates the layer's


def test_two_optimizers_in_one_batch_fill_one_dead_unit_sample_with_their_own_gradients() -> None:
    # Actor-critic in manual optimization: at the actor's step the critic's gradient is missing (first batch) or left
    # over from the last batch. Each optimizer's step samples its own parameters, into the batch's one row.
    actor, critic = nn.Linear(4, 6), nn.Linear(4, 8)
    params = [actor.weight, critic.weight]
    probe = GradientProbe(params)
    actor_opt, critic_opt = torch.optim.SGD([actor.weight], lr=0.1), torch.optim.SGD([critic.weight], lr=0.1)
    critic.weight.grad = torch.zeros(8, 4)  # stale: every unit would read dead
    actor.weight.grad = torch.ones(6, 4)
    actor.weight.grad[:3] = 0.0
    row = probe.sample_dead_units([0, 1], actor_opt)
    critic.weight.grad = torch.ones(8, 4)  # the critic's own backward
    critic.weight.grad[:2] = 0.0
    probe.sample_dead_units([0, 1], critic_opt, row)
    rows = probe.dead_units.take()
    assert rows.tolist() == [[3.0, 2.0, 6.0, 8.0]]  # one row: 3 of 6 actor units, 2 of 8 critic units
    probe.sample_dead_units([0, 1], actor_opt)  # the next batch opens a row of its own
    assert probe.dead_units.take().tolist() == [[3.0, NO_GRADIENT, 6.0, NO_GRADIENT]]


def test_manual_clearing_keeps_the_smallest_norm_before_a_backward_until_the_optimizer_steps_again() -> None:
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    probe = GradientProbe([*a.parameters(), *b.parameters()])
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    for p in [*a.parameters(), *b.parameters()]:
        p.grad = torch.full_like(p, 2.0)
    probe.watch_clearing(opt_a, 0)
    probe.watch_clearing(opt_b, 1)
    assert probe.watching_clearing
    probe.check_clearing()  # both still hold the last step's gradients
    opt_a.zero_grad()  # a's are set to None: a is cleared
    probe.check_clearing()
    for p in b.parameters():
        p.grad = torch.full_like(p, 1.0)  # b's only shrink: never empty
    probe.check_clearing()
    probe.end_clearing(opt_a)
    probe.end_clearing(opt_b)
    assert not probe.watching_clearing
    rows, sources = probe.take_leftover()
    assert rows.flatten().tolist() == pytest.approx([0.0, 8**0.5])  # b: 8 elements of 1.0
    assert sources == [0, 1]  # which optimizer each row checked
    probe.watch_clearing(opt_a)
    probe.end_clearing(opt_a)  # stepped again with no backward in between: nothing to say
    probe.end_clearing(opt_b)  # not watched
    assert probe.take_leftover()[0].numel() == 0


def test_a_manual_clearing_watch_whose_optimizer_stops_stepping_ends_after_the_next_report() -> None:
    a = nn.Linear(3, 2)
    probe = GradientProbe(list(a.parameters()))
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    probe.watch_clearing(opt)  # on the batch before a report
    probe.expire_clearing()  # that report
    assert probe.watching_clearing
    probe.expire_clearing()  # the next one: the optimizer never stepped again (a phase of training ended)
    assert not probe.watching_clearing
    probe.end_clearing(opt)
    assert probe.take_leftover()[0].numel() == 0


def test_many_small_parameters_of_one_shape_give_the_per_parameter_samples() -> None:
    # Stacked by shape on a CPU (a few ops instead of one per tensor): every number is the per-parameter one.
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(6, 6) for _ in range(8)], nn.Linear(6, 3000))
    params = list(net.parameters())
    probe = GradientProbe(params)
    opt = torch.optim.SGD(params, lr=0.5)
    for step in range(3):
        opt.zero_grad()
        net(torch.randn(4, 6)).relu().sum().backward()
        for layer in net[:4]:
            layer.weight.grad[: step + 1] = 0.0  # dead units, more each step
        probe.record(opt)
    assert probe._stacked[id(opt)] is not None  # the stacked path was taken
    reference = [p.grad.norm().item() for p in params]
    np.testing.assert_allclose(probe.rows.take().numpy()[-1], reference, rtol=1e-5)
    units = [i for i, p in enumerate(params) if p.dim() == 2]
    probe.sample_dead_units(units, opt)
    before = [p.detach().clone() for p in params]
    probe.snapshot_weights(opt, max_elements=10**9)
    opt.step()
    probe.sample_update_ratio()
    dead = probe.dead_units.take()[0].numpy()
    width = len(params)
    for i, p in enumerate(params):
        if i in units:
            assert dead[i] == (p.grad.flatten(1).abs().sum(dim=1) == 0).sum().item()
            assert dead[width + i] == p.shape[0]
        else:
            assert dead[i] == NO_GRADIENT
    update = probe.update_ratio.take()[0].numpy()
    np.testing.assert_allclose(
        update[:width], [(p.detach() - b).norm().item() for p, b in zip(params, before)], rtol=1e-4
    )
    np.testing.assert_allclose(update[width:], [b.norm().item() for b in before], rtol=1e-5)


def test_a_gradient_that_no_longer_fits_its_stack_is_still_measured() -> None:
    net = nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(16)])  # stacked
    params = list(net.parameters())
    probe = GradientProbe(params)
    opt = torch.optim.SGD(params, lr=0.1)
    for p in params:
        p.grad = torch.ones(4, 4)
    probe.record(opt)
    probe.record(opt)
    assert probe._stacked[id(opt)] is not None
    params[2].data = torch.zeros(5, 4)  # resized in place of the old weight (pruning, a grown vocabulary)
    params[2].grad = torch.ones(5, 4)
    probe.record(opt)
    assert probe._stacked[id(opt)] is None  # given up for the fused norms
    assert probe.rows.take().numpy()[-1].tolist() == pytest.approx([4.0, 4.0, 20**0.5] + [4.0] * 13)


def test_layer_norms_combine_each_layers_parameters_whatever_their_order() -> None:
    rng = np.random.default_rng(0)
    layer_of = tuple(int(v) for v in rng.integers(0, 6, size=40))  # layers 0-6, some with no parameter
    rows = rng.random((5, 40))
    rows[rng.random((5, 40)) < 0.3] = NO_GRADIENT
    rows[0, 3], rows[1, 7] = np.inf, np.nan
    got = layer_norms(rows, layer_of, 7)
    for r in range(5):
        for layer in range(7):
            mine = [rows[r, p] for p in range(40) if layer_of[p] == layer and rows[r, p] != NO_GRADIENT]
            expected = np.sqrt(sum(v * v for v in mine)) if mine else np.nan
            np.testing.assert_allclose(got[r, layer], expected, equal_nan=True)


def test_a_transposed_convolutions_units_are_its_weights_columns() -> None:
    # ConvTranspose2d keeps its weight as [in, out, kh, kw]: an output channel whose ReLU died is an all-zero
    # column. An all-zero row is a dead input channel (the layer before's unit), not one of this layer's.
    net = nn.Sequential(nn.ConvTranspose2d(3, 8, 2))
    up = net[0]
    params = list(up.parameters())
    layout = build_layout(net, watched_parameters(net, [torch.optim.SGD(params, lr=0.1)]))
    assert layout.unit_params == (0,) and layout.unit_axes == (1,)
    up.weight.grad = torch.ones(3, 8, 2, 2)
    up.weight.grad[:, :5] = 0.0  # 5 of 8 output channels get nothing
    up.weight.grad[0] = 0.0  # and input channel 0 carries nothing
    up.bias.grad = torch.ones(8)
    probe = GradientProbe(params)
    probe.sample_dead_units([0], unit_axes={0: 1})
    dead = probe.dead_units.take()[0]
    assert dead[0].item() == 5 and dead[2].item() == 8
    probe.sample_dead_units([0])  # read by rows, the input channel would count: 1 of 3
    assert probe.dead_units.take()[0, [0, 2]].tolist() == [1.0, 3.0]


def test_a_grouped_transposed_convolution_is_not_sampled_for_units() -> None:
    # With groups, a column mixes one output channel of every group: no unit can be read off it.
    net = nn.Sequential(nn.ConvTranspose2d(4, 8, 2, groups=2), nn.Conv2d(8, 4, 1))
    layout = build_layout(net, watched_parameters(net, [torch.optim.SGD(net.parameters(), lr=0.1)]))
    names = [n for n, _ in net.named_parameters()]
    assert [names[i] for i in layout.unit_params] == ["1.weight"] and layout.unit_axes == (0,)


def test_a_gpt2_style_conv1d_has_its_units_in_its_weights_columns() -> None:
    # GPT-2's Conv1D keeps its weight as [in, out] (x @ weight): Hugging Face's class and the copies of it in GPT-2
    # code, recognised by name and by ``nf`` being the weight's columns. A square weight fits either layout: only
    # Hugging Face's own class is read by columns then.
    def conv1d(nf: int, nx: int, module: str) -> nn.Module:
        kind = type("Conv1D", (nn.Module,), {"__module__": module})
        layer = kind()
        layer.nf, layer.weight, layer.bias = nf, nn.Parameter(torch.zeros(nx, nf)), nn.Parameter(torch.zeros(nf))
        return layer

    def axes(net: nn.Module) -> tuple[int, ...]:
        return build_layout(net, watched_parameters(net, [torch.optim.SGD(net.parameters(), lr=0.1)])).unit_axes

    hf, copy = "transformers.pytorch_utils", "my_gpt2.layers"
    assert axes(nn.Sequential(conv1d(8, 3, hf), conv1d(8, 3, copy))) == (1, 1)
    assert axes(nn.Sequential(conv1d(8, 8, hf), conv1d(8, 8, copy))) == (1, 0)  # square: the copy's rows
    wrong_nf = conv1d(8, 3, hf)
    wrong_nf.nf = 3  # nf names the rows: not that layout
    assert axes(nn.Sequential(wrong_nf, nn.Linear(3, 8))) == (0, 0)


def test_the_norm_around_a_step_shows_a_clip_made_after_the_read() -> None:
    weight, bias = nn.Parameter(torch.zeros(3, 4)), nn.Parameter(torch.zeros(3))
    weight.grad, bias.grad = torch.full((3, 4), 2.0), torch.full((3,), 2.0)
    optimizer = torch.optim.SGD([weight, bias], lr=0.1)
    probe = GradientProbe([weight, bias])
    probe.norm_before_step(optimizer)
    torch.nn.utils.clip_grad_norm_([weight, bias], 0.5)  # what a module's own on_before_optimizer_step does
    probe.norm_after_step()
    probe.norm_after_step()  # once per read
    [[before, after]] = probe.step_norms.take().tolist()
    assert before == pytest.approx(2.0 * 15**0.5) and after == pytest.approx(0.5, rel=1e-5)


def test_no_norm_around_a_step_for_a_sharded_parameter_or_without_gradients() -> None:
    weight = nn.Parameter(torch.zeros(3, 4))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    probe = GradientProbe([weight])
    probe.norm_before_step(optimizer)  # no gradient yet
    probe.norm_after_step()
    weight.grad = torch.ones(3, 4)
    sharded = GradientProbe([weight], [Sharding(2)])
    sharded.norm_before_step(optimizer)
    sharded.norm_after_step()
    assert probe.step_norms.take().numel() == 0 and sharded.step_norms.take().numel() == 0


def test_a_bfloat16_step_counts_the_weights_it_left_unchanged() -> None:
    # Weights of 1.0 in bfloat16 are 2**-7 apart: a step of 1e-4 rounds away, one of 0.1 does not.
    layer = nn.Linear(4, 10).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    params = list(layer.parameters())
    probe = GradientProbe(params)
    opt = torch.optim.SGD(params, lr=1.0)
    grad = torch.full((10, 4), 1e-4)
    grad[:3] = 0.1  # 12 of 40 elements move
    layer.weight.grad = grad.to(torch.bfloat16)
    layer.bias.grad = torch.ones(10, dtype=torch.bfloat16)
    probe.snapshot_weights(opt, max_elements=10_000)
    opt.step()
    probe.sample_update_ratio()
    unmoved = probe.unmoved.take()[0].tolist()  # [unchanged elements per parameter..., sampled elements...]
    assert unmoved == [28.0, 0.0, 40.0, 10.0]


def test_float32_weights_record_no_unchanged_count() -> None:
    layer = nn.Linear(4, 10)
    params = list(layer.parameters())
    probe = GradientProbe(params)
    opt = torch.optim.SGD(params, lr=1.0)
    layer.weight.grad = torch.full((10, 4), 1e-12)
    layer.bias.grad = torch.ones(10)
    probe.snapshot_weights(opt, max_elements=10_000)
    opt.step()
    probe.sample_update_ratio()
    assert probe.update_ratio.take().shape[0] == 1 and probe.unmoved.take().shape[0] == 0
