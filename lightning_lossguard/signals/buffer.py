"""Fixed-width rows of per-step values kept on the device until the report step."""

from __future__ import annotations

import torch


class DeviceRows:
    """A growable ``[rows, width]`` float32 buffer on one device.

    Writing a row launches device copies only: nothing here waits for the device. Rows are read back
    by :meth:`take`, which returns a device tensor; the caller copies everything to the host once.
    The row views are made once per allocation: indexing a tensor on every step costs more than the
    copy into it.
    """

    def __init__(self, width: int, capacity: int = 64) -> None:
        if width < 1:
            raise ValueError("width must be >= 1")
        self.width = width
        self._capacity = max(1, capacity)
        self._data: torch.Tensor | None = None
        self._rows: list[torch.Tensor] = []
        self.count = 0

    def next_row(self, device: torch.device) -> torch.Tensor:
        """A writable ``[width]`` view for the next row (allocated on first use, grown when full)."""
        if self._data is None or self._data.device != device:
            self._allocate(torch.empty(self._capacity, self.width, dtype=torch.float32, device=device))
            self.count = 0
        if self.count == len(self._rows):
            # Doubling keeps the amortised cost constant; the copy stays on the device.
            assert self._data is not None
            grown = torch.empty(2 * self.count, self.width, dtype=torch.float32, device=device)
            grown[: self.count].copy_(self._data)
            self._allocate(grown)
        row = self._rows[self.count]
        self.count += 1
        return row

    def _allocate(self, data: torch.Tensor) -> None:
        self._data = data
        self._rows = list(data.unbind(0))

    def peek(self) -> torch.Tensor:
        """The rows written since the last :meth:`take`, left in place (a view on the device)."""
        assert self._data is not None
        return self._data[: self.count]

    def take(self) -> torch.Tensor:
        """The rows written since the last call (a device view, valid until the next write), and start over."""
        if self._data is None or self.count == 0:
            self.count = 0
            return torch.empty(0, self.width)
        rows = self._data[: self.count]
        self.count = 0
        return rows
