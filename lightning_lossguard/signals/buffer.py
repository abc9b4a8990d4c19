"""Fixed-width rows of per-step values kept on the device until the report step."""

from __future__ import annotations

import torch


class DeviceRows:
    """A growable ``[rows, width]`` float32 buffer on one device.

    Writing a row launches device copies only: nothing here waits for the device. Rows are read back
    by :meth:`take`, which returns a device tensor; the caller copies everything to the host once.
    """

    def __init__(self, width: int, capacity: int = 64) -> None:
        if width < 1:
            raise ValueError("width must be >= 1")
        self.width = width
        self._capacity = max(1, capacity)
        self._data: torch.Tensor | None = None
        self.count = 0

    def next_row(self, device: torch.device) -> torch.Tensor:
        """A writable ``[width]`` view for the next row (allocated on first use, grown when full)."""
        if self._data is None or self._data.device != device:
            self._data = torch.empty(self._capacity, self.width, dtype=torch.float32, device=device)
            self.count = 0
        if self.count == self._data.shape[0]:
            # Doubling keeps the amortised cost constant; the copy stays on the device.
            grown = torch.empty(2 * self.count, self.width, dtype=torch.float32, device=device)
            grown[: self.count].copy_(self._data)
            self._data = grown
        row = self._data[self.count]
        self.count += 1
        return row

    def take(self) -> torch.Tensor:
        """The rows written since the last call (a device tensor), and start over."""
        if self._data is None or self.count == 0:
            self.count = 0
            return torch.empty(0, self.width)
        rows = self._data[: self.count].clone()
        self.count = 0
        return rows
