"""Gradient paths between layers: the bitmask-matrix implementation against a plain pairwise reference."""

from __future__ import annotations

import random

from lightning_lossguard.run_layout import MAX_PATHS, RunLayout


def reference(layout: RunLayout, param_upstream: list[int]) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Output layers and depth paths by pairwise comparison (quadratic and slow, obviously right)."""
    n = len(layout.layers)
    up = [set() for _ in range(n)]  # up[b]: layers upstream of layer b
    for p, mask in enumerate(param_upstream):
        for q in range(len(param_upstream)):
            if mask >> q & 1 and layout.layer_of[q] != layout.layer_of[p]:
                up[layout.layer_of[p]].add(layout.layer_of[q])
    group = layout.layer_group
    outputs = [a for a in range(n) if not any(a in up[b] for b in range(n) if group[b] == group[a] and b != a)]
    paths = []
    for g in set(group):
        members = [m for m in range(n) if group[m] == g and layout.comparable[m]]
        sources = [s for s in members if not any(o in up[s] for o in members)]
        sinks = [t for t in members if not any(t in up[o] for o in members)]
        for s in sources:
            for t in sinks:
                if s in up[t]:
                    between = sum(1 for c in members if s in up[c] and c in up[t])
                    paths.append((s, t, between + 2))
    return sorted(outputs), sorted(paths)


def random_layout(rng: random.Random, layers: int) -> tuple[RunLayout, list[int]]:
    """A random DAG of layers (edges only from lower to higher index), two parameters per layer, two optimizers."""
    parents = {b: [a for a in range(b) if rng.random() < 0.3] for b in range(layers)}
    reach: list[set[int]] = []
    for b in range(layers):
        reach.append(set(parents[b]).union(*(reach[a] for a in parents[b])))
    layer_of = tuple(layer for layer in range(layers) for _ in range(2))
    masks = []
    for p, layer in enumerate(layer_of):
        mask = sum(1 << q for q, other in enumerate(layer_of) if other in reach[layer])
        mask |= (1 << (p - 1)) if p % 2 else 0  # the weight before a bias is upstream of it
        masks.append(mask)
    layout = RunLayout(
        param_names=tuple(f"p{i}" for i in range(len(layer_of))),
        layer_of=layer_of,
        layers=tuple(f"layer{i}" for i in range(layers)),
        comparable=tuple(rng.random() < 0.8 for _ in range(layers)),
        layer_group=tuple(0 if i < layers * 2 // 3 else 1 for i in range(layers)),
    )
    return layout, masks


def test_paths_and_outputs_match_the_pairwise_reference_on_random_graphs() -> None:
    rng = random.Random(0)
    for layers in (1, 2, 5, 12, 30):
        for _ in range(5):
            layout, masks = random_layout(rng, layers)
            built = layout.with_paths(masks)
            outputs, paths = reference(layout, masks)
            assert built.output_layers() == outputs
            got = built.depth_paths()
            assert set(got) <= set(paths) and len(got) == min(len(paths), MAX_PATHS)
            assert [p[2] for p in got] == sorted((p[2] for p in paths), reverse=True)[: len(got)]


def test_a_chain_of_a_thousand_layers_has_one_path_through_all_of_them() -> None:
    layers = 1000
    layer_of = tuple(layer for layer in range(layers) for _ in range(2))
    masks = [(1 << (2 * layer)) - 1 | ((1 << p - 1) if p % 2 else 0) for p, layer in enumerate(layer_of)]
    layout = RunLayout(
        layer_of=layer_of,
        layers=tuple(f"net.{i}" for i in range(layers)),
        comparable=(True,) * layers,
        layer_group=(0,) * layers,
    ).with_paths(masks)
    assert layout.depth_paths() == [(0, layers - 1, layers)]
    assert layout.output_layers() == [layers - 1]


def test_without_a_graph_the_layer_order_is_the_path() -> None:
    layout = RunLayout(
        layer_of=(0, 1, 2, 3),
        layers=("a", "b", "c", "d"),
        comparable=(True, False, True, True),
        layer_group=(0, 0, 0, 1),
    ).with_paths(None)
    assert layout.depth_paths() == [(0, 2, 2)]
    assert layout.output_layers() == [2, 3]


def test_lookup_tables_have_no_units_and_a_layer_of_tables_is_not_compared() -> None:
    layout = RunLayout(
        param_names=("pos", "mix.weight", "mix.bias", "head.weight", "head.codes"),
        param_units=(64, 16, 0, 10, 8),
        layer_of=(0, 1, 1, 2, 2),
        layers=("pos", "mix", "head"),
        comparable=(True, True, True),
    )
    tabled = layout.with_tables({0, 4})  # the root-level position table; a codebook beside the head's weight
    assert tabled.param_units == (0, 16, 0, 10, 0)
    assert tabled.comparable == (False, True, True)  # the head still has a weight of units
    assert layout.with_tables(set()) is layout


def test_a_linear_layer_read_only_in_part_keeps_its_comparison_but_has_no_units() -> None:
    layout = RunLayout(param_units=(64, 0, 100), layer_of=(0, 0, 1), layers=("body", "head"), comparable=(True, True))
    narrowed = layout.with_tables(set(), unused_units={2})
    assert narrowed.param_units == (64, 0, 0)
    assert narrowed.comparable == (True, True)
