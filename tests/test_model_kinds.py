"""Every kind of model people train is watched, in real fits: float64, complex and sparse gradients, lazy
modules, parameters added or unfrozen mid-run, several optimizers with ``toggle_optimizer``, parameters that
live on the root module. Each run must leave LossGuard's coverage complete and its gradients measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import BackboneFinetuning
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.fault_zoo.scenarios import loader, regression_data
from lightning_lossguard import LossGuard
from lightning_lossguard.signals.recorder import SignalRecorder
from tests.conftest import events, trainer


class Regressor(L.LightningModule):
    def __init__(self, net: nn.Module, lr: float = 1e-2, optimizer: type[torch.optim.Optimizer] = torch.optim.Adam):
        super().__init__()
        self.net = net
        self.lr = lr
        self.optimizer = optimizer

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x.to(self.dtype)), y.to(self.dtype))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters(), lr=self.lr)


def watched(guard: LossGuard) -> tuple[str, ...]:
    return guard._layout.param_names


def grad_norms(log_dir: str) -> list[float]:
    return [e.value for e in events(log_dir).Scalars("lossguard/grad_norm")]


def test_float64_training_is_watched(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    t = trainer(tmp_path, [guard], max_steps=60, precision="64-true")
    t.fit(Regressor(nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))), loader(regression_data()))
    assert guard.gaps == [] and len(watched(guard)) == 4
    norms = grad_norms(t.logger.log_dir)  # type: ignore[union-attr]
    assert len(norms) == 6 and all(np.isfinite(norms)) and min(norms) > 0


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_half_precision_parameters_are_watched(tmp_path: Path, precision: str) -> None:
    # Parameters and gradients in 16 bits (no master copy): the norms are taken in float32, so they neither
    # overflow nor round to zero, and a healthy run stays quiet. (SGD: Adam's eps=1e-8 is 0 in float16, and its
    # first step divides by zero -- a real NaN, which LossGuard reports.)
    guard = LossGuard(report_every=10, verbose=False)
    t = trainer(tmp_path, [guard], max_steps=60, precision=precision)
    model = Regressor(nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1)), lr=0.05, optimizer=torch.optim.SGD)
    t.fit(model, loader(regression_data()))
    assert guard.gaps == [] and len(watched(guard)) == 4
    norms = grad_norms(t.logger.log_dir)  # type: ignore[union-attr]
    assert len(norms) == 6 and all(np.isfinite(norms)) and min(norms) > 0
    assert [d.code for d in guard.diagnoses if d.severity.value != "info"] == []


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_a_half_precision_fault_is_diagnosed(tmp_path: Path, precision: str) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    model = Regressor(nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 1)), lr=3.0, optimizer=torch.optim.SGD)
    trainer(tmp_path, [guard], max_steps=100, precision=precision).fit(model, loader(regression_data()))
    assert guard.gaps == []
    assert {"exploding_gradients", "loss_divergence", "nonfinite_loss", "nonfinite_gradients"} & {
        d.code for d in guard.diagnoses if d.severity.value == "error"
    }


def test_a_float64_fault_is_diagnosed(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    model = Regressor(nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 1)), lr=3.0, optimizer=torch.optim.SGD)
    trainer(tmp_path, [guard], max_steps=100, precision="64-true").fit(model, loader(regression_data()))
    assert guard.gaps == []
    assert {"exploding_gradients", "loss_divergence", "nonfinite_loss"} & {d.code for d in guard.diagnoses}


class ComplexLinear(nn.Module):
    """A complex-valued layer (as in signal processing models); the loss is real."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n, dtype=torch.cfloat) / n**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.cfloat) @ self.weight).abs()


def test_complex_parameters_are_watched(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    net = nn.Sequential(ComplexLinear(16), nn.Linear(16, 1))
    t = trainer(tmp_path, [guard], max_steps=40)
    t.fit(Regressor(net), loader(regression_data()))
    assert guard.gaps == [] and "net.0.weight" in watched(guard)
    norms = grad_norms(t.logger.log_dir)  # type: ignore[union-attr]
    assert all(np.isfinite(norms)) and min(norms) > 0


class Recommender(L.LightningModule):
    """Matrix factorisation with sparse embedding gradients (SparseAdam) and a dense bias (Adam)."""

    def __init__(self) -> None:
        super().__init__()
        self.users = nn.Embedding(50, 8, sparse=True)
        self.items = nn.Embedding(40, 8, sparse=True)
        self.bias = nn.Parameter(torch.zeros(1))
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        u, i, r = batch
        sparse, dense = self.optimizers()  # type: ignore[misc]
        loss = F.mse_loss((self.users(u) * self.items(i)).sum(1) + self.bias, r)
        sparse.zero_grad()
        dense.zero_grad()
        self.manual_backward(loss)
        sparse.step()
        dense.step()
        return loss

    def configure_optimizers(self) -> Any:
        return [
            torch.optim.SparseAdam([self.users.weight, self.items.weight], lr=0.05),
            torch.optim.Adam([self.bias], lr=0.05),
        ]


def test_sparse_gradients_are_watched(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    u, i = torch.randint(0, 50, (2048,), generator=g), torch.randint(0, 40, (2048,), generator=g)
    r = torch.randn(2048, generator=g)
    guard = LossGuard(report_every=10, verbose=False)
    t = trainer(tmp_path, [guard], max_steps=60)
    t.fit(Recommender(), DataLoader(TensorDataset(u, i, r), batch_size=64))
    assert guard.gaps == [] and set(watched(guard)) == {"users.weight", "items.weight", "bias"}
    norms = grad_norms(t.logger.log_dir)  # type: ignore[union-attr]
    assert all(np.isfinite(norms)) and min(norms) > 0


def test_lazy_modules_are_watched_once_materialized(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    lazy = nn.Sequential(nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(1))  # uninitialized in configure_optimizers
    t = trainer(tmp_path, [guard], max_steps=30)
    t.fit(Regressor(lazy), loader(regression_data()))
    assert guard.gaps == [] and set(watched(guard)) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert len(grad_norms(t.logger.log_dir)) == 3  # type: ignore[union-attr]


def test_the_first_unit_sample_of_lazy_modules_is_taken_once_they_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's first dead-unit sample says whether units were alive at the start ("a learning rate that
    knocked them out" needs it). Lazy weights do not exist at the first batch's step: it was empty, and the
    first real sample came at the batch before the first report."""
    sampled: list[tuple[int, int]] = []
    before_step = SignalRecorder.sample_before_step

    def counted(self: SignalRecorder, step: int, optimizer: Any, units: Any, *rest: Any) -> None:
        sampled.append((step, len(units)))
        before_step(self, step, optimizer, units, *rest)

    monkeypatch.setattr(SignalRecorder, "sample_before_step", counted)
    guard = LossGuard(report_every=10, verbose=False)
    lazy = nn.Sequential(nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(1))
    trainer(tmp_path, [guard], max_steps=30).fit(Regressor(lazy), loader(regression_data()))
    first = next(step for step, units in sampled if units)
    assert first == 1, sampled


class Finetune(Regressor):
    """The backbone is frozen and not in the optimizer at first; BackboneFinetuning adds it at epoch 2."""

    def __init__(self) -> None:
        super().__init__(nn.Sequential())
        self.backbone = nn.Sequential(nn.Linear(16, 32), nn.Tanh())
        self.head = nn.Linear(32, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.head(self.backbone(x)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=1e-2)


def test_parameters_unfrozen_mid_run_are_watched_from_then_on(tmp_path: Path) -> None:
    seen: list[tuple[int, tuple[str, ...]]] = []

    class Spy(LossGuard):
        def _report(self, trainer: L.Trainer, module: L.LightningModule) -> Any:
            out = super()._report(trainer, module)
            seen.append((trainer.current_epoch, self._layout.param_names))
            return out

    guard = Spy(report_every=8, verbose=False)
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=2, lambda_func=lambda epoch: 1.0)
    data = loader(regression_data(n=512))  # 16 batches per epoch
    trainer(tmp_path, [finetuning, guard], max_epochs=4).fit(Finetune(), data)
    assert guard.gaps == []
    before = [names for epoch, names in seen if epoch < 2]
    after = [names for epoch, names in seen if epoch == 3]
    assert before and all(set(n) == {"head.weight", "head.bias"} for n in before)
    assert after and all({"backbone.0.weight", "head.weight"} <= set(n) for n in after)
    assert [d for d in guard.diagnoses if d.severity != "info"] == []


class GAN(L.LightningModule):
    """A GAN with manual optimization and toggle_optimizer, as in Lightning's GAN examples."""

    def __init__(self, zero_grad: bool = True) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.zero_grad_calls = zero_grad
        self.generator = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 8))
        self.discriminator = nn.Sequential(nn.Linear(8, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))

    def training_step(self, batch: Any, batch_idx: int) -> None:
        (real,) = batch
        opt_g, opt_d = self.optimizers()  # type: ignore[misc]
        z = torch.randn(real.shape[0], 4)
        self.toggle_optimizer(opt_g)
        fake = self.generator(z)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), torch.ones(real.shape[0], 1))
        if self.zero_grad_calls:
            opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.toggle_optimizer(opt_d)
        d_real = F.binary_cross_entropy_with_logits(self.discriminator(real), torch.ones(real.shape[0], 1))
        d_fake = F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), torch.zeros(real.shape[0], 1))
        if self.zero_grad_calls:
            opt_d.zero_grad()
        self.manual_backward((d_real + d_fake) / 2)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

    def configure_optimizers(self) -> Any:
        return [
            torch.optim.Adam(self.generator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
            torch.optim.Adam(self.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        ]


def gan_data() -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(4096, 8, generator=g) * 0.5 + torch.linspace(-1, 1, 8)
    return DataLoader(TensorDataset(real), batch_size=64, shuffle=True, generator=g)


def test_a_gan_with_toggle_optimizer_is_watched_whole(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    trainer(tmp_path, [guard], max_steps=2 * 120).fit(GAN(), gan_data())
    assert guard.gaps == [] and len(watched(guard)) == 8  # both networks, whatever was toggled when read
    assert [d for d in guard.diagnoses if d.severity != "info"] == []
    assert any("returned no loss" in n for n in guard.notes)  # no "run too short ... saw 0"
    assert not any(n.startswith("Run too short") and "loss_plateau" in n for n in guard.notes)


class RootParameters(L.LightningModule):
    """Parameters on the root module and in a ParameterList, used functionally (no child module runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 32) * 0.2)
        self.layers = nn.ParameterList([nn.Parameter(torch.randn(32, 32) * 0.2) for _ in range(2)])
        self.w2 = nn.Parameter(torch.randn(32, 1) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ self.w1)
        for w in self.layers:
            h = torch.tanh(h @ w)
        return h @ self.w2

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.forward(x), y)  # self.forward: no forward hook sees it

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_parameters_on_the_root_module_are_watched_without_per_step_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_lossguard.signals import parameters

    calls = []
    original = parameters.watched_parameters
    monkeypatch.setattr("lightning_lossguard.callback.watched_parameters", lambda *a: calls.append(1) or original(*a))
    guard = LossGuard(report_every=25, verbose=False)
    trainer(tmp_path, [guard], max_steps=100).fit(RootParameters(), loader(regression_data()))
    assert guard.gaps == [] and set(watched(guard)) == {"w1", "layers.0", "layers.1", "w2"}
    assert len(calls) <= 3 + 100 // 25  # at the start, after the first batch, at each report and the end
    assert [d for d in guard.diagnoses if d.severity != "info"] == []  # no expensive_loss from an unseen forward


def test_a_gan_that_never_calls_zero_grad_is_caught(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    trainer(tmp_path, [guard], max_steps=2 * 300).fit(GAN(zero_grad=False), gan_data())
    found = [d for d in guard.diagnoses if d.code == "exploding_gradients"]
    assert found and "zero_grad" in found[0].remedies[0], [d.one_line() for d in guard.diagnoses]


class RawOptimizer(Regressor):
    """Manual optimization that steps the torch optimizer it kept, not the one ``self.optimizers()`` wraps:
    Lightning's optimizer hooks never run, so no gradient can be measured there."""

    def __init__(self) -> None:
        super().__init__(nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1)))
        self.automatic_optimization = False

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self.raw = torch.optim.Adam(self.parameters(), lr=self.lr)
        return self.raw

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.raw.zero_grad()
        self.manual_backward(loss)
        self.raw.step()
        return loss


def test_optimizer_steps_outside_lightning_are_a_gradient_gap_not_silence(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    # Epochs, not max_steps: the trainer's step counter only moves through Lightning's optimizer wrapper either.
    run = trainer(tmp_path, [guard], max_epochs=2, limit_train_batches=30)
    run.fit(RawOptimizer(), loader(regression_data()))
    [gap] = guard.gaps
    assert gap.signal == "gradients" and "on_before_optimizer_step never ran" in gap.reason
    assert "self.optimizers()" in gap.reason  # what to change
    assert guard._diagnostician.steps_judged > 0  # the loss is still watched
    # The gap says why the gradient codes were not judged: no note claims the run was too short for them.
    assert not any("exploding_gradients" in note or "tiny_updates" in note for note in guard.notes)


class Decoder(L.LightningModule):
    """A decoder's upsampling block: a transposed convolution and a ReLU, as in autoencoders and GAN generators."""

    def __init__(self, dead_channels: int) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 16, 4, stride=2, padding=1)
        self.out = nn.Conv2d(16, 1, 3, padding=1)
        with torch.no_grad():
            self.up.bias[:dead_channels] = -50.0  # these output channels never pass the ReLU

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        return F.mse_loss(self.out(F.relu(self.up(F.relu(self.enc(x))))), x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


@pytest.mark.parametrize("dead_channels", [0, 12])
def test_dead_output_channels_of_a_transposed_convolution_are_seen(tmp_path: Path, dead_channels: int) -> None:
    # Its weight is [in, out, kh, kw]: dead output channels are all-zero columns, which a count of rows missed
    # (12 of 16 dead read as nothing at all; the same block with a Conv2d was diagnosed).
    torch.manual_seed(0)
    guard = LossGuard(verbose=False)
    data = DataLoader(TensorDataset(torch.randn(640, 1, 16, 16)), batch_size=32)
    trainer(tmp_path, [guard], max_steps=300).fit(Decoder(dead_channels), data)
    found = [(d.code, d.subject) for d in guard.diagnoses]
    if dead_channels:
        assert ("dead_gradients", "up") in found, found
        [dead] = [d for d in guard.diagnoses if d.code == "dead_gradients"]
        assert dead.evidence["units"] == 16 and dead.evidence["dead_unit_share"] >= 0.7
    else:
        assert found == []


class Conv1D(nn.Module):
    """The linear layer of GPT-2 as Hugging Face defines it (``transformers.pytorch_utils.Conv1D``) and GPT-2 code
    copies it: ``nf`` output features, a weight of ``[in, out]`` and ``x @ weight + bias``."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], self.nf)


class Conv1DBlock(nn.Module):
    """GPT-2's MLP block with a ReLU: ``c_fc`` widens, ``c_proj`` narrows."""

    def __init__(self, dead_units: int) -> None:
        super().__init__()
        self.c_fc = Conv1D(64, 16)
        self.c_proj = Conv1D(1, 64)
        with torch.no_grad():
            self.c_fc.bias[:dead_units] = -50.0  # these units never pass the ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)))


@pytest.mark.parametrize("dead_units", [0, 48])
def test_dead_units_of_a_gpt2_conv1d_are_its_output_features(tmp_path: Path, dead_units: int) -> None:
    # Its weight is [in, out]: the units of c_fc that died are all-zero columns. Read by rows, c_fc showed no dead
    # unit and c_proj's rows (c_fc's dead outputs) were blamed instead: the wrong layer, with 64 "units".
    torch.manual_seed(0)
    guard = LossGuard(verbose=False)
    model = Regressor(Conv1DBlock(dead_units), lr=1e-3)
    trainer(tmp_path, [guard], max_steps=300).fit(model, loader(regression_data()))
    assert guard._layout.param_units[:4] == (64, 0, 1, 0)  # c_fc's and c_proj's output features
    found = [(d.code, d.subject) for d in guard.diagnoses]
    if dead_units:
        assert found == [("dead_gradients", "net.c_fc")], found
        [dead] = guard.diagnoses
        assert dead.evidence["units"] == 64 and dead.evidence["dead_unit_share"] >= 0.7
    else:
        assert found == []
