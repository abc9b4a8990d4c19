"""Per-parameter gradient norms, measured on the device with fused ops.

On a sampled optimizer step: one ``torch._foreach_norm`` over the gradients and one ``torch.stack`` into a
device row. Nothing is read back here. Gradients of every kind people train are read: float32/16/bf16
(summed in float32: half-precision sums of squares overflow), float64 and complex (in their own precision),
sparse gradients (the norm of their stored values) and DTensor shards (the local shard's norm; the
recorder combines the ranks' norms once per report). On report steps only, two extra samples are taken:
the share of "dead units" (output rows whose gradient is exactly zero) and the update-to-weight ratio. Both are
stored as the parts that add up across the shards of a parameter (dead rows and rows; the update's norm and the
weight's norm) and divided at report time, when the recorder has every rank's parts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from lightning_lossguard.signals.buffer import DeviceRows
from lightning_lossguard.signals.parameters import Sharding
from lightning_lossguard.signals.stacking import StackedNorms, stack_groups, stacked

Row = torch.Tensor | list[torch.Tensor]
"""A gradient row: a view of the buffer, or a deferred row's 0-d values (see :meth:`DeviceRows.defer`)."""

NO_GRADIENT = -1.0
"""Row value for a parameter that had no gradient (``p.grad is None``) at that step."""

_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_HALF_DTYPES = (torch.float16, torch.bfloat16)

SAMPLE_ELEMENTS = 65_536
"""The dead-unit and update-ratio samples read at most about this many elements of a parameter: evenly spaced
rows (units) of a larger one. Both are shares over units, estimated as well from a few hundred of them, and
the cost of a report step then no longer grows with the model (a 1024x1024 layer: 3 ms on a CPU core, 0.2 ms
sampled)."""


CLEARING_REPORTS = 1
"""Reports a manual-optimization watch (see :meth:`GradientProbe.watch_clearing`) may stay open across: it begins
on the batch before a report, so one report always falls inside it; an optimizer that has not stepped again by the
next report is no longer watched."""


@dataclasses.dataclass
class _Watch:
    """One optimizer's clearing check: its parameters, its index among the run's optimizers, the smallest gradient
    norm seen before a backward so far (a device scalar), and the reports since the watch began."""

    params: list[nn.Parameter]
    index: int = -1
    least: torch.Tensor | None = None
    reports: int = 0


class GradientProbe:
    """Records per-parameter gradient norms into a device buffer, one row per sampled optimizer step.

    Args:
        parameters: the watched parameters, in layout order.
        sharding: per parameter, how its gradient is split across ranks (None: each rank holds all of it). A
            sharded parameter's row entry is the local shard's norm, combined across ranks by the recorder.

    Attributes:
        rows: per optimizer step, each parameter's gradient norm (``NO_GRADIENT`` when it had none).
        dead_units: per sample, ``[dead rows of each parameter..., rows of each parameter...]`` (``NO_GRADIENT``
            where not sampled): the dead-unit share is their ratio.
        update_ratio: per sample, ``[norm of each update..., norm of each weight before it...]``.
        unmoved: per sample, ``[sampled elements the step left exactly as they were..., sampled elements...]`` of
            the 16-bit parameters (``NO_GRADIENT`` elsewhere): an update under half a weight's spacing in
            bfloat16 or float16 rounds away, and the weight keeps its value.
    """

    def __init__(self, parameters: Sequence[nn.Parameter], sharding: Sequence[Sharding | None] = ()) -> None:
        self.parameters = list(parameters)
        self.sharding: list[Sharding | None] = list(sharding) or [None] * len(self.parameters)
        width = max(1, len(self.parameters))
        self.rows = DeviceRows(width)
        self.dead_units = DeviceRows(2 * width)
        self.update_ratio = DeviceRows(2 * width)
        self.unmoved = DeviceRows(2 * width)
        self.leftover = DeviceRows(1)  # gradient norm found before a backward that should start from zero
        # Sampled steps: the optimizer's gradient norm as LossGuard read it and again after the optimizer step. Code
        # of the run's own that clips after the read (the module's on_before_optimizer_step) shows between the two.
        self.step_norms = DeviceRows(2)
        self._norm_read: tuple[list[nn.Parameter], torch.Tensor] | None = None
        self._index = {id(p): i for i, p in enumerate(self.parameters)}
        self._groups: dict[int, tuple[list[nn.Parameter], list[int], bool]] = {}
        self._fused: dict[int, bool] = {}  # per optimizer: every gradient is a plain dense float32/16/bf16 tensor
        self._stacked: dict[int, StackedNorms | None] = {}  # per fused optimizer: its norms by stacks (CPU)
        self._before_step: list[tuple[list[int], torch.Tensor]] = []  # row positions, [len(positions), elements]
        self._clearing: dict[int, _Watch] = {}  # per watched optimizer (manual optimization)
        self._leftover_sources: list[int] = []  # per leftover row: the optimizer index it checked (-1: every one)

    def _group(self, optimizer: torch.optim.Optimizer) -> tuple[list[nn.Parameter], list[int], bool]:
        # This optimizer's watched parameters, their row positions, and whether they are the whole row in order.
        key = id(optimizer)
        if key not in self._groups:
            params = [p for g in optimizer.param_groups for p in g["params"] if id(p) in self._index]
            positions = [self._index[id(p)] for p in params]
            self._groups[key] = (params, positions, positions == list(range(len(self.parameters))))
        return self._groups[key]

    def record(self, optimizer: torch.optim.Optimizer, row: Row | None = None) -> Row | None:
        """Store this optimizer's gradient norms in a new row, or in ``row`` (several optimizers stepping in
        one batch share it). Returns the row written (``NO_GRADIENT`` where a parameter had none), or None when
        the optimizer steps no watched parameter. Device work only."""
        params, positions, whole = self._group(optimizer)
        if not params:
            return row
        grads = [p.grad for p in params]
        key = id(optimizer)
        if self._fused.get(key) and not any(g is None for g in grads):
            by_stacks = self._stacked.get(key)
            if by_stacks is not None and not isinstance(row, list):
                device = self._device(params)
                row = self.rows.next_row(device) if row is None and whole else self._open(row, device)
                try:
                    by_stacks.write(grads, row)  # type: ignore[arg-type]
                    return row
                except RuntimeError:  # a gradient changed shape, dtype or device: the fused norms below
                    self._stacked[key] = None
            try:
                fused = torch._foreach_norm(grads, 2, dtype=torch.float32)  # type: ignore[arg-type]
            except (RuntimeError, TypeError, NotImplementedError):
                self._fused[key] = False
            else:
                if row is None and whole:
                    return self.rows.defer(list(fused))  # stacked with the other rows when read: no op here
                row = self._open(row, fused[0].device)
                _scatter(row, positions, fused)
                return row
        present = [(i, g) for i, g in zip(positions, grads) if g is not None]
        if key not in self._fused and len(present) == len(grads):
            self._fused[key] = all(_plain(g) for g in grads)
            if self._fused[key]:
                by_stacks = StackedNorms(grads, positions)  # type: ignore[arg-type]
                self._stacked[key] = by_stacks if by_stacks.worthwhile else None
        if not present:
            row = self._open(row, self._device(params))
            return row  # every parameter of this optimizer had no gradient: a detached graph shows as -1s
        norms, where = _norms(present)
        row = self._open(row, norms[0].device)
        device = row[0].device if isinstance(row, list) else row.device
        _scatter(row, where, [n if n.device == device else n.to(device, non_blocking=True) for n in norms])
        return row

    def _open(self, row: Row | None, device: torch.device) -> Row:
        if row is None:
            row = self.rows.next_row(device)
            row.fill_(NO_GRADIENT)
        return row

    @staticmethod
    def _device(params: Sequence[nn.Parameter]) -> torch.device:
        local = getattr(params[0], "to_local", None)
        return local().device if callable(local) else params[0].device

    @property
    def sharded(self) -> list[bool]:
        """Per parameter, whether its gradient is split across ranks."""
        return [s is not None for s in self.sharding]

    def sample_leftover(self) -> None:
        """Report steps only, right before the backward of the first micro-batch of an accumulation window (Lightning
        has just called zero_grad): the norm of whatever gradient is still there, which should be 0."""
        norm = _present_norm(self.parameters)
        if norm is not None:
            self.leftover.next_row(norm.device)[0].copy_(norm)
            self._leftover_sources.append(-1)

    def take_leftover(self) -> tuple[torch.Tensor, list[int]]:
        """The leftover rows since the last take (on the device) and, per row, the index of the optimizer it checked
        (-1: every optimizer at once, the automatic-optimization check)."""
        sources, self._leftover_sources = self._leftover_sources, []
        return self.leftover.take(), sources

    # Manual optimization calls zero_grad itself, for each optimizer, wherever it likes (before its backward, after
    # its step). What must hold: between two steps of one optimizer, its gradients were empty before some backward.
    # From a report batch's step of an optimizer to its next step, the norm of its gradients is taken before every
    # backward and the smallest is kept: above 0, the second step used gradients piled up across both.
    @property
    def watching_clearing(self) -> bool:
        """Whether some optimizer's gradients are being checked before each backward."""
        return bool(self._clearing)

    def watch_clearing(self, optimizer: torch.optim.Optimizer, index: int = -1) -> None:
        """Manual optimization, report batches only, as ``optimizer`` (``index`` among the run's optimizers) steps:
        check its gradients before each backward until it steps again."""
        params = self._group(optimizer)[0]
        if params:
            self._clearing[id(optimizer)] = _Watch(params, index)

    def check_clearing(self) -> None:
        """Right before a backward: each watched optimizer's gradient norm now (0 when it has none), the smallest
        since its step kept. Device work only."""
        for watch in self._clearing.values():
            norm = _present_norm(watch.params)
            if norm is None:
                norm = torch.zeros((), device=self._device(watch.params))
            watch.least = norm if watch.least is None else torch.minimum(watch.least, norm)

    def end_clearing(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer`` steps again: the smallest norm seen before a backward since its watched step becomes a
        leftover row (none when no backward ran between the two steps)."""
        watch = self._clearing.pop(id(optimizer), None)
        if watch is not None and watch.least is not None:
            self.leftover.next_row(watch.least.device)[0].copy_(watch.least)
            self._leftover_sources.append(watch.index)

    def expire_clearing(self) -> None:
        """At each report: a watch still open after a whole interval is dropped unjudged (its optimizer stopped
        stepping, e.g. a phase of training that is over), so its check does not run before every backward for the
        rest of the run."""
        for key, watch in list(self._clearing.items()):
            watch.reports += 1
            if watch.reports > CLEARING_REPORTS:
                del self._clearing[key]

    @torch.no_grad()
    def sample_dead_units(
        self,
        unit_params: Iterable[int],
        optimizer: torch.optim.Optimizer | None = None,
        row: torch.Tensor | None = None,
        unit_axes: Mapping[int, int] | None = None,
    ) -> torch.Tensor | None:
        """Report steps only: per parameter with output units, its rows (units) with an all-zero gradient and its
        rows. A shard cut along another dimension than the rows holds no whole unit: not sampled. ``unit_axes``
        names the parameters whose units lie along another dimension (a transposed convolution's weight: 1); those
        are read along it, and not sampled when sharded.

        With ``optimizer``, only the parameters it steps are read: another optimizer's gradients may not be there
        yet, or be left over from the last batch (actor-critic and GAN steps in manual optimization). As with
        :meth:`record`, every optimizer that steps in one batch fills its part of one ``row``; returns the row
        written (None when nothing was sampled and no row was given)."""
        stepped = set(self._group(optimizer)[1]) if optimizer is not None else None
        at: list[int] = []
        sampled: list[torch.Tensor] = []
        for i in unit_params:
            if stepped is not None and i not in stepped:
                continue
            sharding = self.sharding[i]
            grad = _local(self.parameters[i].grad)
            if grad is None or grad.layout != torch.strided or grad.dim() < 2 or (sharding and not sharding.by_rows):
                continue
            if axis := (unit_axes or {}).get(i, 0):
                if sharding:
                    continue  # rows split across ranks: each holds a part of every unit
                grad = grad.transpose(0, axis)
            at.append(i)
            sampled.append(_sampled_rows(grad))
        if not sampled:
            return row
        groups, rest = stack_groups(sampled)
        width = len(self.parameters)
        positions: list[int] = []
        parts: list[torch.Tensor] = []  # per group or tensor: [dead rows..., rows...] of its parameters
        for group in [*groups, *([i] for i in rest)]:
            shape = sampled[group[0]].shape
            rows = shape[0]
            # A single tensor keeps its rows apart as a view (flattening a strided sample of rows would copy it).
            units = (stacked(sampled, group) if len(group) > 1 else sampled[group[0]]).reshape(
                len(group), rows, shape[1:].numel()
            )
            # One reading pass over the sampled rows and no copy of the gradient (abs() would allocate one).
            dead = (torch.count_nonzero(units, dim=2) == 0).sum(dim=1, dtype=torch.float32)
            parts += [dead, torch.full((len(group),), float(rows), device=dead.device)]
            positions += [at[j] for j in group] + [width + at[j] for j in group]
        if row is None:
            row = self.dead_units.next_row(parts[0].device)
            row.fill_(NO_GRADIENT)
        _write(row, positions, parts)
        return row

    @torch.no_grad()
    def norm_before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Sampled steps of automatic optimization: the norm of the optimizer's gradients where LossGuard reads them,
        before any clipping of the run's own after that. Not for sharded parameters: a shard's norm is not the norm
        a clip bounds."""
        params, positions, _ = self._group(optimizer)
        norm = None if any(self.sharding[i] is not None for i in positions) else _present_norm(params)
        self._norm_read = None if norm is None else (params, norm)

    @torch.no_grad()
    def norm_after_step(self) -> None:
        """After the optimizer step: the same gradients' norm again, beside the one read before (no host read). The
        gradients are still there: Lightning clears them at the next step's start."""
        if self._norm_read is None:
            return
        params, before = self._norm_read
        self._norm_read = None
        after = _present_norm(params)
        row = self.step_norms.next_row(before.device)
        row[0] = before
        row[1] = after if after is not None else 0.0

    @torch.no_grad()  # the weights are read and copied, not differentiated (no detach() per tensor)
    def snapshot_weights(self, optimizer: torch.optim.Optimizer, max_elements: int) -> None:
        """Report steps only: copy the weights (their sampled rows) before the optimizer step, ``max_elements`` in
        all at most."""
        params, positions, _ = self._group(optimizer)
        budget = max_elements
        at: list[int] = []
        sampled: list[torch.Tensor] = []
        for p, i in zip(params, positions):
            weight = _local(p)
            if weight is None or weight.is_complex():
                continue
            rows = _sampled_rows(weight)
            if rows.numel() > budget:
                continue
            if p.grad is None and (self.sharding[i] is None or weight.numel()):
                continue  # not stepped; but an empty shard (FSDP1: none of it on this rank) counts as zero
            budget -= rows.numel()
            at.append(i)
            sampled.append(rows)
        groups, rest = stack_groups(sampled)
        for group in groups:  # the stack is a copy already
            self._before_step.append(([at[j] for j in group], stacked(sampled, group)))
        for j in rest:
            self._before_step.append(([at[j]], sampled[j].clone().reshape(1, -1)))

    @torch.no_grad()
    def sample_update_ratio(self) -> None:
        """Report steps only, after the optimizer step: ||w_after - w_before|| and ||w_before|| per parameter (the
        ratio is taken at report time, over every shard)."""
        if not self._before_step:
            return
        before = [w for _, w in self._before_step]
        after = []
        for where, _ in self._before_step:
            now = [_sampled_rows(_local(self.parameters[i])) for i in where]
            after.append(stacked(now, range(len(now))))
        sizes = [_norm32(w) for w in before]
        # The snapshots are ours: turn them into the updates in place instead of allocating the differences.
        torch._foreach_sub_(before, after)  # type: ignore[arg-type]
        updates = [_norm32(w) for w in before]
        width = len(self.parameters)
        positions = [i for where, _ in self._before_step for i in where]
        row = self.update_ratio.next_row(updates[0].device)
        row.fill_(NO_GRADIENT)
        _write(row, positions + [width + i for i in positions], updates + sizes)
        self._count_unmoved(before, width)
        self._before_step.clear()

    def _count_unmoved(self, updates: list[torch.Tensor], width: int) -> None:
        """The 16-bit parameters' sampled elements that the step left unchanged (an exact zero update), counted on
        the device. Models with no 16-bit parameter record nothing."""
        low = [j for j, w in enumerate(updates) if w.dtype in _HALF_DTYPES]
        if not low:
            return
        positions = [i for j in low for i in self._before_step[j][0]]
        unmoved = [(updates[j] == 0).sum(dim=1, dtype=torch.float32) for j in low]
        device = updates[0].device
        elements = [torch.full((updates[j].shape[0],), float(updates[j].shape[1]), device=device) for j in low]
        row = self.unmoved.next_row(device)
        row.fill_(NO_GRADIENT)
        _write(row, positions + [width + i for i in positions], unmoved + elements)


def _sampled_rows(tensor: torch.Tensor | None) -> torch.Tensor:
    """The tensor itself, or for one of more than ``SAMPLE_ELEMENTS`` elements a view of evenly spaced rows along
    its first dimension (a 1-D tensor: evenly spaced elements) that holds about that many."""
    assert tensor is not None
    if tensor.numel() <= SAMPLE_ELEMENTS or tensor.dim() == 0:
        return tensor
    per_row = max(1, tensor[0].numel())
    step = -(-tensor.shape[0] * per_row // SAMPLE_ELEMENTS)  # ceil: at most SAMPLE_ELEMENTS elements
    return tensor[::step]


def _norm32(rows: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each row of ``[tensors, elements]`` as float32: half precision summed in float32, float64 in
    its own precision."""
    dtype = torch.float32 if rows.dtype in _FUSED_DTYPES else None
    norm: torch.Tensor = torch.linalg.vector_norm(rows, dim=1, dtype=dtype)
    return norm.float()


def _plain(grad: torch.Tensor | None) -> bool:
    """A dense float32/16/bf16 tensor (not a DTensor, not sparse): the fused norm's case."""
    return type(grad) is torch.Tensor and grad.layout == torch.strided and grad.dtype in _FUSED_DTYPES


def _local(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """The local shard of a DTensor (no communication), the tensor itself otherwise."""
    if tensor is None:
        return None
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def _present_norm(params: Sequence[nn.Parameter]) -> torch.Tensor | None:
    """The float32 L2 norm of the parameters' dense gradients together (None when none has one): one fused pass."""
    present = [_local(p.grad) for p in params if p.grad is not None]
    dense = [(i, g) for i, g in enumerate(present) if g is not None and g.layout == torch.strided]
    if not dense:
        return None
    norms = torch.stack([n if n.dtype == torch.float32 else n.float() for n in _norms(dense)[0]])
    total: torch.Tensor = torch.linalg.vector_norm(norms)
    return total


def _norms(present: Sequence[tuple[int, torch.Tensor]]) -> tuple[list[torch.Tensor], list[int]]:
    """Norms of gradients of any kind: fused for dense float32/16/bf16, one op each for the rest."""
    fused: list[torch.Tensor] = []
    fused_at: list[int] = []
    norms: list[torch.Tensor] = []
    where: list[int] = []
    for i, grad in present:
        g = _local(grad)
        assert g is not None
        if g.layout == torch.sparse_coo:
            g = g._values()  # the norm of the stored values (duplicates of an uncoalesced gradient count apart)
        elif g.layout != torch.strided:
            g = g.values()
        if g.dtype in _FUSED_DTYPES:
            fused.append(g)
            fused_at.append(i)
        else:  # float64 and complex: summed in their own precision, stored as float32
            norms.append(torch.linalg.vector_norm(g))
            where.append(i)
    if fused:
        norms = [*torch._foreach_norm(fused, 2, dtype=torch.float32), *norms]
        where = fused_at + where
    return norms, where


def _write(row: torch.Tensor, positions: list[int], values: Sequence[torch.Tensor]) -> None:
    """Store 1-D values, concatenated, at ``positions`` of the row. On a CPU in one op (a per-element copy is a
    loop there); on a GPU they come one value per parameter (nothing is stacked there) and go through
    :func:`_scatter`, which needs no index tensor (no host-to-device transfer)."""
    if row.device.type == "cpu":
        row.index_copy_(0, torch.tensor(positions), torch.cat(list(values)))
    else:
        _scatter(row, positions, [value.reshape(()) for value in values])


def _scatter(row: Row, positions: list[int], values: Sequence[torch.Tensor]) -> None:
    if isinstance(row, list):  # a deferred row: its values are replaced, no op
        for i, value in zip(positions, values):
            row[i] = value.float()
        return
    # Copy into 0-d views of the row: no index tensor, so no host-to-device transfer.
    views = row.unbind()
    torch._foreach_copy_([views[i] for i in positions], list(values))
