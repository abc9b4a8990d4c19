import math

import pytest
import torch
from torch import nn

from lightning_lossguard.detectors.high_class_separation import HighClassSeparation
from lightning_lossguard.outputs import class_separation, class_sums, linear_cka


# -- slow, obviously-correct references ------------------------------------------------------------------
def separation_by_pairs(features: torch.Tensor, labels: torch.Tensor) -> float:
    """R² straight from the paper's double sums over pairs of examples (cosine distance)."""
    x = features.double()
    x = x / x.norm(dim=1, keepdim=True)
    distance = 1 - x @ x.T
    classes = labels.unique().tolist()
    within = sum(float(distance[labels == k][:, labels == k].mean()) for k in classes) / len(classes)
    total = sum(float(distance[labels == j][:, labels == k].mean()) for j in classes for k in classes)
    return 1 - within / (total / len(classes) ** 2)


def cka_by_hsic(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA as HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with explicit centering matrices."""
    n = x.shape[0]
    gram_x, gram_y = x.double() @ x.double().T, y.double() @ y.double().T
    h = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n

    def hsic(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(gram_x, gram_y) / math.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y))


def features(seed: int, n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features of a small random network on inputs from three shifted clusters."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 10, generator=g) + 2.0 * torch.nn.functional.one_hot(labels, 10).float()
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    with torch.no_grad():
        return net(x), labels


# -- the math ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_class_separation_matches_the_pairwise_definition(seed: int) -> None:
    x, labels = features(seed)
    sums, counts = class_sums(x, labels, 3)
    assert class_separation(sums, counts) == pytest.approx(separation_by_pairs(x, labels), abs=1e-5)


def test_class_separation_extremes() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    tight = torch.eye(3)[labels] * torch.tensor([[1.0], [2.0], [1.0], [3.0], [1.0], [5.0]])  # one direction per class
    assert class_separation(*class_sums(tight, labels, 3)) == pytest.approx(1.0)
    mixed = torch.randn(600, 8, generator=torch.Generator().manual_seed(0))
    random_labels = torch.randint(0, 3, (600,), generator=torch.Generator().manual_seed(1))
    assert abs(class_separation(*class_sums(mixed, random_labels, 3))) < 0.02  # labels carry no information
    assert math.isnan(class_separation(*class_sums(mixed, torch.zeros(600), 3)))  # one class only


def test_labels_outside_the_classes_are_left_out() -> None:
    x, labels = features(0)
    padded = torch.cat([labels, torch.tensor([-100, 7])])
    sums, counts = class_sums(torch.cat([x, torch.randn(2, x.shape[1])]), padded, 3)
    assert counts.sum() == len(labels)
    assert class_separation(sums, counts) == pytest.approx(separation_by_pairs(x, labels), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_cka_of_network_features_with_themselves_is_one_and_matches_hsic(seed: int) -> None:
    x, _ = features(seed)
    y, _ = features(seed + 10)  # another network on other inputs: unrelated features
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(cka_by_hsic(x, y), abs=1e-9)
    assert linear_cka(x, x[:, :8]) == pytest.approx(cka_by_hsic(x, x[:, :8]), abs=1e-9)
    assert linear_cka(x, y) < 0.9


def test_linear_cka_invariances_and_errors() -> None:
    x, _ = features(3)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    assert linear_cka(x, 3.0 * x @ rotation + 1.0) == pytest.approx(1.0)  # orthogonal, isotropic scale, shift
    assert math.isnan(linear_cka(x, torch.ones_like(x)))
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, x[:10])


# -- the detector -------------------------------------------------------------------------------------------
def test_high_separation_is_an_info_with_the_trade_off_explained() -> None:
    detector = HighClassSeparation()
    assert detector.update(10, 0.35, samples=500, classes=10, layer="net.3") == []
    [found] = detector.update(20, 0.72, samples=500, classes=10, layer="net.3", cka_to_start=0.6)
    assert found.code == "high_class_separation" and found.severity == "info" and found.subject == "net.3"
    assert "R²=0.72" in found.message and "0.35 at the first validation" in found.message
    assert "transfer worse" in found.message and "CKA" in found.message
    assert found.evidence["first_separation"] == 0.35 and found.evidence["cka_to_start"] == 0.6
    assert "label smoothing" in found.remedies[0] and "fine-tune more layers" in found.remedies[1]


@pytest.mark.parametrize(
    ("separation", "samples", "classes"), [(0.9, 20, 10), (0.9, 500, 1), (math.nan, 500, 10), (0.4, 500, 10)]
)
def test_unjudgeable_or_low_separation_stays_quiet(separation: float, samples: int, classes: int) -> None:
    assert HighClassSeparation().update(1, separation, samples, classes) == []


def test_threshold_and_state_round_trip() -> None:
    detector = HighClassSeparation(HighClassSeparation.Thresholds(max_separation=0.9))
    assert detector.update(1, 0.8, 500, 4) == []
    clone = HighClassSeparation()
    clone.load_state_dict(detector.state_dict())
    assert clone.first == 0.8 and clone.evaluations == 1 and clone.unjudged() is None
