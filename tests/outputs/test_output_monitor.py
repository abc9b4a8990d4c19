"""OutputMonitor in real ``Trainer.fit`` runs: range mismatches, collapse, class separation, no host reads."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_lossguard import LossGuard, Monitor, OutputMonitor
from lightning_lossguard.outputs.range_probe import RangeProbe
from tests.conftest import ReadCounter, events, trainer

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is fastest, and on a busy machine more threads spin-wait for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Steps(L.LightningModule):
    """Returns the documented convention from both steps: {"loss", "preds", "target"}."""

    def __init__(self, net: nn.Module, loss: Loss = F.mse_loss, lr: float = 1e-2) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.lr = lr

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        preds = self.net(x)
        return {"loss": self.loss(preds, y), "preds": preds, "target": y}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        preds = self.net(x)
        loss = self.loss(preds, y)
        self.log("val_loss", loss)
        return {"loss": loss, "preds": preds, "target": y}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def regression(n: int, seed: int, offset: float) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 1, generator=torch.Generator().manual_seed(3))
    return TensorDataset(x, 0.5 * x @ w + offset)


def classes(n: int, seed: int, k: int, dim: int = 8, sep: float = 1.5, minority: float | None = None) -> TensorDataset:
    """Gaussian clusters; with ``minority``, two classes where class 1 is that rare share."""
    g = torch.Generator().manual_seed(seed)
    rare = (torch.rand(n, generator=g) < minority).long() if minority is not None else None
    y = rare if rare is not None else torch.randint(0, k, (n,), generator=g)
    centers = torch.randn(k, dim, generator=torch.Generator().manual_seed(7)) * sep
    return TensorDataset(centers[y] + torch.randn(n, dim, generator=g), y)


def fit(
    tmp_path: Path,
    module: L.LightningModule,
    train: TensorDataset,
    val: TensorDataset | None,
    monitor: OutputMonitor,
    batch_size: int = 32,
    **kwargs: Any,
) -> LossGuard:
    guard = LossGuard(monitors=[monitor], report_every=10, verbose=False, **kwargs.pop("guard", {}))
    t = trainer(tmp_path, [guard], **{"max_epochs": 3, **kwargs})
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    t.fit(module, train_loader, DataLoader(val, batch_size=128) if val is not None else None)
    return guard


def logs(guard: LossGuard) -> Path:
    """The run's log directory (where the report and the TensorBoard events are)."""
    assert guard.report_path is not None
    return Path(guard.report_path).parent


def codes(guard: LossGuard, severity: str = "info") -> list[str]:
    return [d.code for d in guard.diagnoses if d.severity.at_least(severity)]


# -- output_range_mismatch ---------------------------------------------------------------------------------
def test_a_final_relu_with_negative_targets_is_an_output_range_mismatch(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1), nn.ReLU())
    guard = fit(
        tmp_path, Steps(net), regression(1024, 0, offset=-1.5), regression(256, 1, offset=-1.5), OutputMonitor()
    )
    [found] = [d for d in guard.diagnoses if d.code == "output_range_mismatch"]
    assert found.severity == "warning" and found.step == 10  # the first report step
    assert found.evidence["bound"] == 0.0 and found.evidence["unreachable_share"] > 0.5
    report = json.loads((logs(guard) / "lossguard.json").read_text())
    assert "output_range_mismatch" in [d["code"] for d in report["diagnoses"]]


class Exp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


def test_an_exp_on_a_regression_head_with_negative_targets_is_a_bound(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1), Exp())
    guard = fit(
        tmp_path, Steps(net), regression(1024, 0, offset=-0.5), regression(256, 1, offset=-0.5), OutputMonitor()
    )
    [found] = [d for d in guard.diagnoses if d.code == "output_range_mismatch"]
    assert found.subject == "bounded output" and found.step <= 30  # within three report windows
    assert found.evidence["pred_min"] > 0 and found.evidence["unreachable_share"] > 0.3


def test_a_softmax_before_cross_entropy_is_an_output_range_mismatch(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Softmax(dim=1))
    guard = fit(tmp_path, Steps(net, F.cross_entropy), classes(512, 0, 4), None, OutputMonitor(), max_epochs=1)
    [found] = [d for d in guard.diagnoses if d.code == "output_range_mismatch"]
    assert found.subject == "probabilities as logits" and found.evidence["squashed_share"] == 1.0


def test_probabilities_that_are_not_probabilities(tmp_path: Path) -> None:
    def squared(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(p, y)  # a custom "probability" loss that does not check its input

    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    data = classes(512, 0, 2)
    data = TensorDataset(data.tensors[0], data.tensors[1].float().unsqueeze(1))
    guard = fit(tmp_path, Steps(net, squared), data, None, OutputMonitor(kind="probabilities"), max_epochs=1)
    assert [d.subject for d in guard.diagnoses if d.code == "output_range_mismatch"] == ["not probabilities"]


# -- prediction_collapse -------------------------------------------------------------------------------------
def test_an_imbalanced_95_5_dataset_collapses_to_the_majority_class(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    train, val = classes(1024, 0, 2, sep=0.3, minority=0.05), classes(512, 1, 2, sep=0.3, minority=0.05)
    guard = fit(tmp_path, Steps(net, F.cross_entropy, lr=1e-2), train, val, OutputMonitor())
    [found] = [d for d in guard.diagnoses if d.code == "prediction_collapse"]
    assert found.severity == "warning" and found.evidence["predicted_classes"] == 1
    assert found.evidence["top_class"] == 0 and found.evidence["min_recall"] < 0.1
    assert "weight" in found.remedies[0] and any("focal" in r for r in found.remedies)
    acc = events(logs(guard))
    assert "lossguard/outputs/confusion_matrix" in acc.Tags()["images"]
    image = acc.Images("lossguard/outputs/confusion_matrix")[-1]
    assert image.width == image.height > 0
    assert {"lossguard/outputs/predicted_class", "lossguard/outputs/target_class"} <= set(acc.Tags()["histograms"])
    [predicted] = acc.Histograms("lossguard/outputs/predicted_class")[-1:]
    assert predicted.histogram_value.bucket[0] == predicted.histogram_value.num == 512  # all in class 0
    assert "lossguard/outputs/macro_recall" in acc.Tags()["scalars"]


def test_healthy_balanced_classification_gets_no_warning(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    monitor = OutputMonitor(feature_layer="net.3")
    guard = fit(tmp_path, Steps(net, F.cross_entropy), classes(1024, 0, 4), classes(512, 1, 4), monitor)
    assert [c for c in codes(guard, "warning") if c in OutputMonitor.codes] == []
    assert monitor.collapse.evaluations == 3 and monitor.separation.evaluations == 3
    acc = events(logs(guard))
    assert len(acc.Scalars("lossguard/outputs/class_separation")) == 3
    cka = [e.value for e in acc.Scalars("lossguard/outputs/feature_cka_to_start")]
    assert cka[0] == pytest.approx(1.0) and 0 < cka[-1] < 1  # the features moved away from the first validation


def test_healthy_regression_gets_no_warning(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    monitor = OutputMonitor()
    guard = fit(tmp_path, Steps(net), regression(1024, 0, -1.5), regression(256, 1, -1.5), monitor)
    assert [c for c in codes(guard, "warning") if c in OutputMonitor.codes] == []
    assert monitor.range.windows >= 3  # judged, and quiet
    assert guard.notes == [n for n in guard.notes if "OutputMonitor" not in n]


# -- high_class_separation -------------------------------------------------------------------------------
def separation_after(tmp_path: Path, smoothing: float) -> float:
    """Ten Gaussian classes, a ReLU MLP with a 16-wide penultimate layer, 128 steps of Adam."""
    L.seed_everything(0, verbose=False)

    def loss(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(p, y, label_smoothing=smoothing)

    net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    monitor = OutputMonitor(feature_layer="net.3", cka_samples=0)
    train, val = classes(4096, 0, 10, dim=32, sep=1.0), classes(512, 1, 10, dim=32, sep=1.0)
    guard = fit(tmp_path / str(smoothing), Steps(net, loss), train, val, monitor, batch_size=128, max_epochs=4)
    [*_, last] = events(logs(guard)).Scalars("lossguard/outputs/class_separation")
    assert [d.code for d in guard.diagnoses if d.code == "high_class_separation"] == ["high_class_separation"]
    return float(last.value)


def test_label_smoothing_raises_class_separation_as_in_the_paper(tmp_path: Path) -> None:
    plain = separation_after(tmp_path, 0.0)
    smoothed = separation_after(tmp_path, 0.5)
    assert smoothed > plain + 0.02, (plain, smoothed)


# -- the per-step path --------------------------------------------------------------------------------------
def classifier_run(tmp_path: Path, monitor: OutputMonitor) -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    fit(tmp_path, Steps(net, F.cross_entropy), classes(512, 0, 4), classes(256, 1, 4), monitor, max_epochs=2)


def test_no_host_read_outside_report_steps(tmp_path: Path, reads: ReadCounter) -> None:
    classified = OutputMonitor(feature_layer="net.1")
    classifier_run(tmp_path, classified)
    regressed = OutputMonitor()
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.ReLU())
    fit(tmp_path, Steps(net), regression(512, 0, -1.5), regression(128, 1, -1.5), regressed, max_epochs=2)
    assert reads.per_step == []
    assert reads.on_report > 0
    # Every check ran (and read back on report steps): the test is not vacuous.
    assert classified.collapse.evaluations == classified.separation.evaluations == 2
    assert classified.range.windows and regressed.range.windows


def test_the_counter_catches_a_per_step_read_in_the_monitor(
    tmp_path: Path, reads: ReadCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RangeProbe.add

    def syncing(self: RangeProbe, layout: Any, preds: torch.Tensor, target: torch.Tensor) -> None:
        float(preds.max().detach())  # the kind of bug the test above exists for
        original(self, layout, preds, target)

    monkeypatch.setattr(RangeProbe, "add", syncing)
    classifier_run(tmp_path, OutputMonitor())
    assert reads.per_step and reads.per_step[0].startswith("__float__ in _take_pair")


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
def test_the_per_batch_path_never_synchronizes(device: str) -> None:
    """Driven without Lightning; on CUDA, sync debug mode raises on any op that waits for the device."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to(device).eval()
    head = nn.Sequential(nn.Linear(8, 1), nn.ReLU()).to(device)
    monitor = OutputMonitor(feature_layer="1", thresholds={"prediction_collapse": {"persist": 1}})
    clamped = OutputMonitor()
    monitor.setup(net, torch.device(device))
    clamped.setup(head, torch.device(device))
    x, y = (t.to(device) for t in classes(512, 0, 4).tensors)
    if device == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            for i in range(0, 512, 64):
                logits, out = net(x[i : i + 64]), head(x[i : i + 64])
                monitor.on_train_batch_end({"loss": logits.sum(), "preds": logits, "target": y[i : i + 64]}, None, i)
                monitor.on_validation_batch_end({"preds": logits, "target": y[i : i + 64]}, None, 0)
                clamped.on_train_batch_end({"preds": out, "target": out - 3.0 - out.mean()}, None, i)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode(0)
    monitor.judge_validation(8, 0)
    assert monitor.collapse.evaluations == 1 and monitor.separation.evaluations == 1
    assert monitor.range.windows == 1 and monitor.cka_reference is not None
    [found] = clamped.judge_training(8)
    assert found.code == "output_range_mismatch" and found.subject == "clamped output"
    monitor.teardown()


# -- state, options, notes -----------------------------------------------------------------------------------
def test_state_dict_round_trip_survives_a_checkpoint(tmp_path: Path) -> None:
    monitor = OutputMonitor(feature_layer="net.1", thresholds={"prediction_collapse": {"persist": 5}})
    classifier_run(tmp_path, monitor)
    state = monitor.state_dict()
    torch.save(state, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    clone = OutputMonitor(feature_layer="net.1")
    clone.load_state_dict(loaded)
    assert clone.collapse.evaluations == monitor.collapse.evaluations == 2
    assert clone.separation.first == monitor.separation.first and not math.isnan(clone.separation.first)
    assert clone.cka_reference is not None and monitor.cka_reference is not None
    assert torch.equal(clone.cka_reference, monitor.cka_reference) and clone.cka_reference.shape == (256, 16)
    assert clone.state_dict().keys() == state.keys()


def test_resuming_a_fit_keeps_the_monitor_state(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    module = Steps(net, F.cross_entropy)
    # Features that carry no class information: the model can only ever predict the majority class.
    train, val = classes(512, 0, 2, sep=0.0, minority=0.05), classes(512, 1, 2, sep=0.0, minority=0.05)
    first = OutputMonitor()
    fit(tmp_path, module, train, val, first, max_epochs=1, enable_checkpointing=True)
    [checkpoint] = list(tmp_path.rglob("*.ckpt"))
    second = OutputMonitor()
    guard = LossGuard(monitors=[second], report_every=10, verbose=False)
    loader = DataLoader(train, batch_size=32)
    trainer(tmp_path, [guard], max_epochs=2).fit(module, loader, DataLoader(val, batch_size=128), ckpt_path=checkpoint)
    assert second.collapse.evaluations == 2  # one from the checkpoint, one after resuming
    assert "prediction_collapse" in codes(guard)  # the streak continued across the resume


def test_lossguard_suppress_and_severity_apply_to_monitor_codes(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Softmax(dim=1))
    guard = fit(
        tmp_path,
        Steps(net, F.cross_entropy),
        classes(512, 0, 4),
        None,
        OutputMonitor(),
        max_epochs=1,
        guard={"severity": {"output_range_mismatch": "error"}},
    )
    assert [d.severity.value for d in guard.diagnoses if d.code == "output_range_mismatch"] == ["error"]
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Softmax(dim=1))
    guard = fit(
        tmp_path,
        Steps(net, F.cross_entropy),
        classes(512, 0, 4),
        None,
        OutputMonitor(),
        max_epochs=1,
        guard={"suppress": ["output_range_mismatch"]},
    )
    assert "output_range_mismatch" not in codes(guard)


def test_thresholds_are_overridable(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Softmax(dim=1))
    monitor = OutputMonitor(thresholds={"output_range_mismatch": {"squashed_share": 1.01}})
    guard = fit(tmp_path, Steps(net, F.cross_entropy), classes(512, 0, 4), None, monitor, max_epochs=1)
    assert "output_range_mismatch" not in codes(guard)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "scores"}, "kind must be 'auto' or one of regression, probabilities, logits"),
        ({"thresholds": {"prediction_collapse": {"persistence": 2}}}, "Allowed: min_samples, min_support,"),
        ({"thresholds": {"prediction_collapse": {"persist": "2"}}}, "persist must be an integer"),
        ({"thresholds": {"loss_plateau": {"block": 2}}}, "not an OutputMonitor code. Allowed: output_range_mismatch"),
        ({"thresholds": {"collapse": {}}}, "Known codes: nonfinite_loss"),
        ({"cka_samples": -1}, "cka_samples must be an integer >= 0"),
        ({"feature_layer": ""}, "feature_layer must be a layer name"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutputMonitor(**kwargs)


class NoPreds(Steps):
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return {"loss": super().training_step(batch, batch_idx)["loss"]}


def test_notes_say_what_could_not_be_checked(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    guard = fit(tmp_path, NoPreds(net), regression(256, 0, 0.0), None, OutputMonitor(feature_layer="head"))
    notes = " ".join(guard.notes)
    assert "saw no predictions" in notes and "'preds': preds" in notes
    assert "no layer named 'head'" in notes and "net.0" in notes
    binary = classes(256, 0, 2)
    labels = TensorDataset(binary.tensors[0], binary.tensors[1])
    net = nn.Sequential(nn.Linear(8, 1), nn.Flatten(0))
    guard = fit(
        tmp_path,
        Steps(net, lambda p, y: F.binary_cross_entropy_with_logits(p, y.float())),
        labels,
        None,
        OutputMonitor(),
        max_epochs=1,
    )
    assert any("pass OutputMonitor(kind=" in n and "target (32,) int64" in n for n in guard.notes)


def test_binary_logits_with_kind_set_are_classified(tmp_path: Path) -> None:
    data = classes(512, 0, 2)
    net = nn.Sequential(nn.Linear(8, 1), nn.Flatten(0))
    monitor = OutputMonitor(kind="logits")
    loss = lambda p, y: F.binary_cross_entropy_with_logits(p, y.float())  # noqa: E731
    fit(tmp_path, Steps(net, loss), data, classes(256, 1, 2), monitor, max_epochs=2)
    assert monitor.collapse.evaluations == 2 and monitor.range.windows >= 1


def test_monitor_images_are_heatmaps() -> None:
    from lightning_lossguard.outputs.heatmap import confusion_image

    image = confusion_image(np.array([[9, 1], [0, 10]]), side=40)
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    assert image[5, 5].tolist() < image[5, 25].tolist()  # the 90% cell is darker than the 10% cell
    assert image[25, 5].tolist() == [255, 255, 255]  # an empty cell is white


# -- under the cost budget ----------------------------------------------------------------------------------
class EveryBatch(Monitor):
    """A custom monitor that keeps the default: it sees every training batch."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, outputs: Any, batch: Any, step: int) -> None:
        self.batches += 1


def test_over_budget_the_output_checks_see_the_budget_s_timed_batches_and_still_find_a_final_relu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = OutputMonitor.on_train_batch_end

    def spy(self: OutputMonitor, outputs: Any, batch: Any, step: int) -> None:
        seen.append(step)
        original(self, outputs, batch, step)

    monkeypatch.setattr(OutputMonitor, "on_train_batch_end", spy)
    custom = EveryBatch()
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1), nn.ReLU())
    guard = LossGuard(monitors=[OutputMonitor(), custom], budget=1e-6, report_every=40, verbose=False)
    loader = DataLoader(regression(1024, 0, offset=-1.5), batch_size=8, shuffle=True)
    trainer(tmp_path, [guard], max_steps=400).fit(Steps(net), loader)
    budget = guard._budget
    assert budget is not None and budget.stride > 1  # a budget no run meets: the stride goes up
    assert custom.batches == 400  # a monitor that did not opt in sees every batch, whatever the stride
    assert len(seen) < 300 and len(seen) == budget.monitor_batches  # the output checks see the timed ones
    assert {39, 79, 119} <= set(seen)  # among them, always the batch before a report
    [found] = [d for d in guard.diagnoses if d.code == "output_range_mismatch"]
    assert found.step == 40 and found.evidence["bound"] == 0.0  # still at the first report
    assert budget.spent_monitor_us > 0


def test_the_over_budget_note_says_what_the_output_checks_cost(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    guard = LossGuard(monitors=[OutputMonitor()], budget=1e-6, verbose=False)
    loader = DataLoader(regression(512, 0, offset=0.0), batch_size=8)
    trainer(tmp_path, [guard], max_steps=120).fit(Steps(net), loader)
    [note] = [n for n in guard.notes if n.startswith("LossGuard's own time came to ")]
    assert guard._budget is not None
    assert f"monitors on {guard._budget.monitor_batches:,} batches " in note


def test_a_monitor_added_after_construction_still_sees_every_batch(tmp_path: Path) -> None:
    custom = EveryBatch()
    guard = LossGuard(verbose=False)
    guard.monitors.append(custom)  # the split into every-batch and sampled monitors is made again at setup
    loader = DataLoader(regression(256, 0, offset=0.0), batch_size=8)
    trainer(tmp_path, [guard], max_steps=24).fit(Steps(nn.Linear(8, 1)), loader)
    assert custom.batches == 24
