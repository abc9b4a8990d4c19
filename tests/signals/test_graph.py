"""Gradient paths read from the autograd graph, and when they are unknown."""

import torch
from torch import nn

from lightning_lossguard.signals.graph import GraphFacts, ParameterReads, read_graph


def test_a_chain_of_layers_has_each_layer_upstream_of_the_next() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    params = list(net.parameters())
    index = {id(p): i for i, p in enumerate(params)}
    upstream = read_graph([net(torch.randn(2, 3)).sum()], index).upstream
    assert upstream is not None
    assert upstream[2] & 0b11 == 0b11 and upstream[0] == 0  # the last layer's weight sees the first layer


def test_a_graph_that_holds_none_of_the_watched_parameters_gives_unknown_paths() -> None:
    # FSDP2 runs forward and backward on unsharded copies: the optimizer's (sharded) parameters are not in the graph.
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    copies = [nn.Parameter(p.detach().clone()) for p in net.parameters()]
    index = {id(p): i for i, p in enumerate(copies)}
    assert read_graph([net(torch.randn(2, 3)).sum()], index).upstream is None


def test_parameters_read_row_by_row_are_tables_and_weights_are_not() -> None:
    # A learned position table sliced to the sequence, a codebook indexed by codes, an embedding called
    # functionally: rows no batch reads get no gradient by design. A weight's columns sliced, or the weight cast
    # and transposed into a matmul, are not row reads.
    positions, codebook, functional, weight, columns = (nn.Parameter(torch.randn(16, 4)) for _ in range(5))
    params = [positions, codebook, functional, weight, columns]
    index = {id(p): i for i, p in enumerate(params)}
    x = torch.randn(3, 4)
    hidden = x + positions[:3] + codebook[torch.tensor([1, 5, 7])]
    hidden = hidden + torch.nn.functional.embedding(torch.tensor([0, 2, 9]), functional)
    loss = (hidden @ weight.double().float().t()).sum() + (hidden @ columns[:, :4].t()).sum()
    loss.backward()  # the walk runs after the first batch's backward: saved index tensors are freed by then
    assert read_graph([loss], index).tables == frozenset({0, 1, 2})


def test_a_linear_output_read_only_in_part_leaves_its_other_units_unused() -> None:
    # A 100-way head sliced to the 10 classes in use (2-D and, viewed back, 3-D); a head also read whole; a slice
    # that keeps every unit; a slice of the batch, not the units; two slices that read every unit between them.
    sliced, sliced_3d, also_whole, kept_all, batch_slice, halves = (nn.Linear(8, 100) for _ in range(6))
    params = [m.weight for m in (sliced, sliced_3d, also_whole, kept_all, batch_slice, halves)]
    index = {id(p): i for i, p in enumerate(params)}
    h = torch.randn(4, 8)
    loss = sliced(h)[:, :10].sum() + sliced_3d(torch.randn(2, 3, 8))[..., 5:20].sum()
    whole = also_whole(h)
    loss = loss + whole[:, :10].sum() + whole.mean() + kept_all(h)[:, 0:].sum() + batch_slice(h)[:2].sum()
    both = halves(h)  # a mean and a log-variance from one layer: every unit is read
    loss = loss + both[:, :50].sum() + both[:, 50:].exp().sum()
    loss.backward()
    assert read_graph([loss], index).unused_units == frozenset({0, 1})


def test_the_reads_follow_their_parameters_when_the_watched_set_moves() -> None:
    # A parameter unfrozen later is watched in front of the others: the table and the sliced weight keep
    # their meaning, not their old positions.
    table, head, other, unfrozen = (nn.Parameter(torch.zeros(2)) for _ in range(4))
    reads = ParameterReads.of(GraphFacts(None, frozenset({0}), frozenset({1})), [table, head, other])
    assert reads.positions([table, head, other]) == ({0}, {1})
    assert reads.positions([unfrozen, other, head, table]) == ({3}, {2})
    assert reads.positions([unfrozen, other]) == (set(), set())
    assert ParameterReads().positions([table, head]) == (set(), set())


def test_parameters_indexed_past_the_watched_ones_are_split_off_by_who_reads_them() -> None:
    # An encoder left out of the optimizer feeds the trained head; a fixed loss network only reads the head's output.
    encoder, head, critic = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(2, 1)
    watched = list(head.parameters())
    outside = [*encoder.parameters(), *critic.parameters()]
    index = {id(p): i for i, p in enumerate(watched + outside)}
    loss = critic(head(encoder(torch.randn(5, 3)))).sum()
    facts, read = read_graph([loss], index).split(len(watched))
    assert read == frozenset({0, 1})  # the encoder's weight and bias, not the critic's
    assert facts.upstream == [0, 0]  # the head alone: the bits of the parameters past it are cleared
    assert GraphFacts(None).split(2) == (GraphFacts(None), frozenset())
