"""The optimizers' key that spares the report-time re-read of the watched parameters when nothing changed."""

from __future__ import annotations

import torch
from torch import nn

from lightning_lossguard.signals.parameters import optimizer_parameters_key


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
