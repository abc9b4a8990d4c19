import torch

from lightning_lossguard.signals.buffer import DeviceRows


def test_rows_grow_past_capacity_and_keep_order() -> None:
    rows = DeviceRows(width=2, capacity=2)
    for i in range(5):
        rows.next_row(torch.device("cpu")).copy_(torch.tensor([i, -i], dtype=torch.float32))
    taken = rows.take()
    assert taken[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert rows.take().shape == (0, 2)
