"""Gradient paths read from the autograd graph, and when they are unknown."""

import torch
from torch import nn

from lightning_lossguard.signals.graph import upstream_parameters


def test_a_chain_of_layers_has_each_layer_upstream_of_the_next() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    params = list(net.parameters())
    index = {id(p): i for i, p in enumerate(params)}
    upstream = upstream_parameters([net(torch.randn(2, 3)).sum()], index)
    assert upstream is not None
    assert upstream[2] & 0b11 == 0b11 and upstream[0] == 0  # the last layer's weight sees the first layer


def test_a_graph_that_holds_none_of_the_watched_parameters_gives_unknown_paths() -> None:
    # FSDP2 runs forward and backward on unsharded copies: the optimizer's (sharded) parameters are not in the graph.
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    copies = [nn.Parameter(p.detach().clone()) for p in net.parameters()]
    index = {id(p): i for i, p in enumerate(copies)}
    assert upstream_parameters([net(torch.randn(2, 3)).sum()], index) is None
