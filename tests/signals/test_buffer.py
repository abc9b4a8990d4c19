import torch

from lightning_lossguard.signals.buffer import DEFERRED_VALUES, DeviceRows


def test_rows_grow_past_capacity_and_keep_order() -> None:
    rows = DeviceRows(width=2, capacity=2)
    for i in range(5):
        rows.next_row(torch.device("cpu")).copy_(torch.tensor([i, -i], dtype=torch.float32))
    taken = rows.take()
    assert taken[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert rows.take().shape == (0, 2)


def test_deferred_rows_keep_their_order_among_written_ones_and_can_change_until_read() -> None:
    rows = DeviceRows(width=2, capacity=2)
    cpu = torch.device("cpu")
    rows.next_row(cpu).copy_(torch.tensor([0.0, 0.0]))
    late = rows.defer([torch.tensor(1.0), torch.tensor(-1.0)])
    late[1] = torch.tensor(-10.0)  # e.g. a second optimizer step of the same batch
    rows.next_row(cpu).copy_(torch.tensor([2.0, -2.0]))
    rows.defer([torch.tensor(3.0), torch.tensor(-3.0)])
    assert rows.peek()[:, 1].tolist() == [0.0, -10.0, -2.0, -3.0]
    assert rows.take()[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert rows.take().shape == (0, 2)


def test_many_deferred_rows_are_stacked_in_bounded_batches() -> None:
    rows = DeviceRows(width=1000, capacity=2)
    for i in range(10):
        rows.defer([torch.tensor(float(i))] * 1000)
        assert len(rows._deferred) * rows.width <= DEFERRED_VALUES  # at most 4 rows of 1000 kept as tensors
    assert rows.take()[:, 999].tolist() == [float(i) for i in range(10)]
