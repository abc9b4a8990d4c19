"""Fixed-width rows of per-step values kept on the device until the report step."""

from __future__ import annotations

import torch

DEFERRED_VALUES = 4096
"""Deferred rows are stacked into the buffer once they hold this many values in all (or when read): one device
op for many rows, and a bounded number of small tensors kept alive meanwhile."""


class DeviceRows:
    """A growable ``[rows, width]`` float32 buffer on one device.

    Writing a row launches device copies only: nothing here waits for the device. Rows are read back
    by :meth:`take`, which returns a device tensor; the caller copies everything to the host once.
    The row views are made once per allocation: indexing a tensor on every step costs more than the
    copy into it. A row given as separate 0-d tensors can be deferred: the deferred rows are stacked
    in one op when read (each op on the step path costs ~20 µs on a CPU core whose caches the step emptied).
    """

    def __init__(self, width: int, capacity: int = 64) -> None:
        if width < 1:
            raise ValueError("width must be >= 1")
        self.width = width
        self._capacity = max(1, capacity)
        self._data: torch.Tensor | None = None
        self._rows: list[torch.Tensor] = []
        self.count = 0
        self._deferred: list[list[torch.Tensor]] = []

    def next_row(self, device: torch.device) -> torch.Tensor:
        """A writable ``[width]`` view for the next row (allocated on first use, grown when full)."""
        self._settle()  # rows keep their order
        self._reserve(self.count + 1, device)
        row = self._rows[self.count]
        self.count += 1
        return row

    def defer(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """Add a row given as ``width`` 0-d tensors on one device, without an op. Returns the row's list: item
        assignment still changes the row until it is read (the rows deferred before it may be stacked now)."""
        if (len(self._deferred) + 1) * self.width > DEFERRED_VALUES:
            self._settle()
        self._deferred.append(values)
        return values

    def _settle(self) -> None:
        """Write the deferred rows into the buffer, in order: one stack and one copy."""
        if not self._deferred:
            return
        rows, self._deferred = self._deferred, []
        stacked = self._stacked(rows)
        self._reserve(self.count + len(rows), stacked.device)
        assert self._data is not None
        self._data[self.count : self.count + len(rows)].copy_(stacked)
        self.count += len(rows)

    def _stacked(self, rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([value for row in rows for value in row]).reshape(len(rows), self.width)

    def _reserve(self, rows: int, device: torch.device) -> None:
        if self._data is None or self._data.device != device:
            self._allocate(torch.empty(max(self._capacity, rows), self.width, dtype=torch.float32, device=device))
            self.count = 0
        if rows > len(self._rows):
            # Doubling keeps the amortised cost constant; the copy stays on the device.
            grown = torch.empty(max(2 * len(self._rows), rows), self.width, dtype=torch.float32, device=device)
            assert self._data is not None
            grown[: self.count].copy_(self._data[: self.count])
            self._allocate(grown)

    def _allocate(self, data: torch.Tensor) -> None:
        self._data = data
        self._rows = list(data.unbind(0))

    def peek(self) -> torch.Tensor:
        """The rows written since the last :meth:`take`, left in place (a view on the device)."""
        self._settle()
        return self._data[: self.count] if self._data is not None else torch.empty(0, self.width)

    def take(self) -> torch.Tensor:
        """The rows written since the last call (a device view, valid until the next write), and start over."""
        if self.count == 0 and self._deferred:  # deferred rows only: their stack is the answer, no copy
            deferred, self._deferred = self._deferred, []
            return self._stacked(deferred)
        self._settle()
        if self._data is None or self.count == 0:
            self.count = 0
            return torch.empty(0, self.width)
        rows = self._data[: self.count]
        self.count = 0
        return rows
