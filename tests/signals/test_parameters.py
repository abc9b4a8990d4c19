"""The optimizers' key that spares the report-time re-read of the watched parameters when nothing changed; the
parameters torch.nn.utils.prune masks; the layer a parametrized tensor belongs to."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations, prune

from lightning_lossguard.signals.parameters import (
    WatchedSet,
    build_layout,
    optimizer_parameters_key,
    pruned_parameters,
)


def test_the_key_changes_when_a_parameter_is_frozen_cast_or_added_and_only_then() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    optimizer = torch.optim.SGD(net[0].parameters(), lr=0.1)
    key = optimizer_parameters_key([optimizer])
    assert optimizer_parameters_key([optimizer]) == key
    net[0].weight.requires_grad_(False)
    frozen = optimizer_parameters_key([optimizer])
    assert frozen != key
    net[0].weight.requires_grad_(True)
    assert optimizer_parameters_key([optimizer]) == key
    net.double()
    assert optimizer_parameters_key([optimizer]) != key
    optimizer.add_param_group({"params": net[1].parameters()})
    assert len(optimizer_parameters_key([optimizer])) == 4


def test_pruned_parameters_are_the_originals_that_prune_masks() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    assert pruned_parameters(net) == set()
    weight = net[0].weight
    prune.l1_unstructured(net[0], "weight", amount=0.5)
    prune.l1_unstructured(net[0], "weight", amount=0.5)  # pruned twice: a PruningContainer holds both
    assert net[0].weight_orig is weight and pruned_parameters(net) == {id(weight)}
    prune.remove(net[0], "weight")  # made permanent: a plain parameter again
    assert pruned_parameters(net) == set()


def test_a_parametrized_weight_belongs_to_its_layer_with_the_bias() -> None:
    # spectral_norm keeps the trained tensor at 0.parametrizations.weight.original; weight_norm splits it in two.
    net = nn.Sequential(parametrizations.spectral_norm(nn.Linear(4, 8)), nn.ReLU(), nn.Linear(8, 2))
    net[2] = parametrizations.weight_norm(net[2])
    names = [n for n, _ in net.named_parameters()]
    assert "0.parametrizations.weight.original" in names and "2.parametrizations.weight.original1" in names
    watched = WatchedSet(tuple(names), tuple(net.parameters()), tuple(0 for _ in names))
    layout = build_layout(net, watched, execution_order=["0", "2"])
    assert layout.layers == ("0", "2")
    assert [layout.layers[i] for i in layout.layer_of] == ["0", "0", "2", "2", "2"]
    assert layout.comparable == (True, True)
