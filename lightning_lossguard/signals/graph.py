"""Which watched parameters lie upstream of which, read once from the autograd graph of a loss.

Parameter A is upstream of parameter B when A's gradient flows through an op that uses B: the op takes B
(possibly through a transpose, view or cast) and, as another input, a value computed from A. Comparing a
first layer with a last layer only makes sense along such a path: never between an actor and a critic that
only meet in a summed loss, or between two networks trained by different optimizers.

Walking the graph is pure host work on autograd node objects (no tensor is read); it runs on the first
training batch only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

_PASS_THROUGH = (
    "TBackward",
    "TransposeBackward",
    "PermuteBackward",
    "ViewBackward",
    "UnsafeViewBackward",
    "ReshapeAliasBackward",
    "ExpandBackward",
    "UnsqueezeBackward",
    "SqueezeBackward",
    "ToCopyBackward",
    "CloneBackward",
    "SliceBackward",
    "SelectBackward",
    "AliasBackward",
    "AsStridedBackward",
    "UnbindBackward",
    "SplitBackward",
    "SplitWithSizesBackward",
    "ChunkBackward",
)
"""Nodes that only reshape or cast a parameter on its way into an op (``weight.t()``, an AMP cast)."""

_CASTS = ("ToCopyBackward", "AliasBackward", "CloneBackward")
"""Pass-through nodes that keep a parameter's dimensions as they are (an AMP cast, an alias)."""

_ROW_READS = ("SliceBackward", "SelectBackward", "IndexSelectBackward", "NarrowBackward")
"""Nodes that read some rows of a tensor when their saved dimension is 0 (``table[:n]``, ``table[i]``)."""

_TABLE_READS = ("IndexBackward", "EmbeddingBackward", "EmbeddingBagBackward", "EmbeddingDenseBackward")
"""Nodes that look rows up by index (``table[ids]``, ``F.embedding(ids, table)``) when the parameter is the table."""

_UNIT_OPS = ("AddmmBackward", "MmBackward")
"""Ops that read a weight's rows as output units: a linear layer's matmul (its output's last dimension)."""

_OUTPUT_VIEWS = ("ViewBackward", "UnsafeViewBackward", "ReshapeAliasBackward")
"""Reshapes of a linear layer's output that keep its last dimension (a 3-D input is flattened and viewed back)."""

MAX_NODES = 200_000
"""Graphs larger than this are not walked (the paths then fall back to one path per optimizer)."""


class GraphFacts(NamedTuple):
    """What the autograd graph of a loss says about the watched parameters.

    Attributes:
        upstream: ``upstream[i]`` with bit ``j`` set when parameter ``j`` is upstream of parameter ``i``; None when
            no graph was found, it was too large to walk, or no watched parameter is in it (FSDP2 runs its graph on
            unsharded copies of the parameters it shards, not on the parameters the optimizer steps).
        tables: parameters read row by row somewhere (a learned position table sliced to the sequence length, a
            codebook indexed by codes): their rows are entries, not output units, and a row no batch reads gets no
            gradient by design.
        unused_units: weights of linear layers whose output is only read through a slice of its units (a wider
            head sliced to the classes in use): the units left out get no gradient by design, they are not dead.
    """

    upstream: list[int] | None
    tables: frozenset[int] = frozenset()
    unused_units: frozenset[int] = frozenset()

    def split(self, watched: int) -> tuple[GraphFacts, frozenset[int]]:
        """Facts read with more parameters indexed than the ``watched`` first ones: the facts on those alone, and
        the positions (counted from ``watched``) of the others that some watched parameter is downstream of."""
        if self.upstream is None:
            return self, frozenset()
        mask = (1 << watched) - 1
        beyond = 0
        for bits in self.upstream[:watched]:
            beyond |= bits >> watched
        return (
            GraphFacts(
                [bits & mask for bits in self.upstream[:watched]],
                frozenset(i for i in self.tables if i < watched),
                frozenset(i for i in self.unused_units if i < watched),
            ),
            frozenset(_bits(beyond)),
        )


class ParameterReads(NamedTuple):
    """The graph's lookup tables and partly read linear weights, kept by parameter identity: the watched set is
    read again when parameters are added, unfrozen or frozen, and their positions move."""

    tables: frozenset[int] = frozenset()
    unused_units: frozenset[int] = frozenset()

    @classmethod
    def of(cls, facts: GraphFacts, params: Sequence[object]) -> ParameterReads:
        """The parameters behind ``facts``' positions in ``params``."""
        return cls(frozenset(id(params[i]) for i in facts.tables), frozenset(id(params[i]) for i in facts.unused_units))

    def positions(self, params: Sequence[object]) -> tuple[set[int], set[int]]:
        """Positions in ``params`` of the tables, and of the partly read weights."""
        ids = [id(p) for p in params]
        return (
            {i for i, key in enumerate(ids) if key in self.tables},
            {i for i, key in enumerate(ids) if key in self.unused_units},
        )


def read_graph(losses: Iterable[Any], index: Mapping[int, int]) -> GraphFacts:
    """Walk the graph of one training batch's losses (or their ``grad_fn``) once.

    Args:
        losses: loss tensors (or their ``grad_fn``) of one training batch.
        index: ``id(parameter) -> position`` of the watched parameters.
    """
    roots = [getattr(loss, "grad_fn", loss) for loss in losses]
    roots = [r for r in roots if r is not None and hasattr(r, "next_functions")]
    if not roots:
        return GraphFacts(None)
    below: dict[Any, int] = {}  # node -> bitmask of the watched parameters reachable from it
    upstream = [0] * (max(index.values(), default=-1) + 1)
    stack: list[tuple[Any, bool]] = [(r, False) for r in roots]
    opened: set[Any] = set()
    found = 0  # every watched parameter met in the graph
    tables: set[int] = set()
    parents: dict[Any, list[Any]] = {}  # node -> the nodes that take its output
    unit_reads: dict[int, list[Any]] = {}  # parameter -> the linear ops that take it
    while stack:
        node, expanded = stack.pop()
        if node in below or (not expanded and node in opened):
            continue
        if len(opened) > MAX_NODES:
            return GraphFacts(None)
        children = [c for c, _ in node.next_functions if c is not None]
        if not expanded:
            opened.add(node)
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in opened)
            continue
        below[node] = _own_bit(node, index)
        found |= below[node]
        local = 0
        data = 0
        for child in children:
            parents.setdefault(child, []).append(node)
            param, reader = _parameter_behind(node, child, index)
            if param is not None:
                local |= 1 << param
                found |= 1 << param
                if _reads_rows(reader):
                    tables.add(param)
                if node.name().startswith(_UNIT_OPS):
                    unit_reads.setdefault(param, []).append(node)
            else:
                data |= below.get(child, 0)
            below[node] |= below.get(child, 0)
        if local and data:
            for param in _bits(local):
                upstream[param] |= data & ~(1 << param)
    unused = {p for p, ops in unit_reads.items() if all(_units_read_in_part(op, parents) for op in ops)}
    return GraphFacts(upstream if below and found else None, frozenset(tables), frozenset(unused))


def _own_bit(node: Any, index: Mapping[int, int]) -> int:
    variable = getattr(node, "variable", None)
    position = index.get(id(variable)) if variable is not None else None
    return 1 << position if position is not None else 0


def _parameter_behind(consumer: Any, node: Any, index: Mapping[int, int]) -> tuple[int | None, Any]:
    """The watched parameter an input node of ``consumer`` is, through pass-through nodes only (None for data
    inputs), and the node that reads the parameter itself (casts aside)."""
    reader = consumer
    for _ in range(16):
        variable = getattr(node, "variable", None)
        if variable is not None:
            return index.get(id(variable)), reader
        children = [c for c, _ in node.next_functions if c is not None]
        if len(children) != 1 or not node.name().startswith(_PASS_THROUGH):
            return None, reader
        if not node.name().startswith(_CASTS):
            reader = node
        node = children[0]
    return None, reader


def _reads_rows(reader: Any) -> bool:
    """Whether the node reads some rows of the parameter it takes rather than all of it."""
    name: str = reader.name()
    if name.startswith(_ROW_READS):
        return bool(getattr(reader, "_saved_dim", None) == 0)
    if name.startswith("IndexBackward"):
        try:
            indices = reader._saved_indices
        except RuntimeError:  # freed by the backward: indexing a parameter is nearly always by its rows
            return True
        return bool(indices and indices[0] is not None)
    return name.startswith(_TABLE_READS)


def _units_read_in_part(op: Any, parents: Mapping[Any, list[Any]]) -> bool:
    """Whether the uses of a linear op's output (through reshapes) are all slices of its last dimension that leave
    some of it out together (``out[:, :10]``; not ``out[:, :z]`` and ``out[:, z:]``, a mean and a variance)."""
    uses: list[Any] = []
    frontier = list(parents.get(op, []))
    while frontier:
        node = frontier.pop()
        if node.name().startswith(_OUTPUT_VIEWS):
            frontier += parents.get(node, [])
        else:
            uses.append(node)
    kept: set[int] = set()
    units = 0
    for node in uses:
        sliced = _kept_units(node)
        if sliced is None:
            return False
        rows, units = sliced
        kept.update(rows)
    return bool(uses) and len(kept) < units


def _kept_units(node: Any) -> tuple[range, int] | None:
    """The units a slice of its input's last dimension keeps, and how many there are; None for anything else."""
    if not node.name().startswith("SliceBackward"):
        return None
    sizes = getattr(node, "_saved_self_sym_sizes", ())
    if not sizes or node._saved_dim != len(sizes) - 1:
        return None
    units = int(sizes[-1])
    return range(*slice(node._saved_start, node._saved_end, node._saved_step).indices(units)), units


def _bits(mask: int) -> Iterable[int]:
    # Set bits only, lowest first: a layer deep in a 1,000-layer model is bit ~2,000 of a mask with two bits set.
    while mask:
        lowest = mask & -mask
        yield lowest.bit_length() - 1
        mask ^= lowest
