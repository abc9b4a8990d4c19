import pytest
import torch

from lightning_lossguard.signals.batch import leading_rows, loss_of


@pytest.mark.parametrize(
    ("batch", "rows"),
    [
        (torch.zeros(32, 3), 32),
        ((torch.zeros(16, 3), torch.zeros(16)), 16),
        ({"image": torch.zeros(8, 1, 4, 4), "label": torch.zeros(8)}, 8),
        ([[torch.zeros(4, 2)], torch.zeros(4)], 4),
        (("text", 3), 0),
        (torch.tensor(1.0), 0),
    ],
)
def test_the_first_batch_size_is_read_from_its_first_tensor(batch: object, rows: int) -> None:
    assert leading_rows(batch) == rows


def test_the_loss_and_its_terms_are_read_from_what_the_step_returned() -> None:
    loss = torch.tensor(1.5)
    assert loss_of({"loss": loss})[0] is loss
    assert loss_of(loss) == (loss, None)
    terms = {"mse": torch.tensor(1.0)}
    assert loss_of({"loss": loss, "loss_terms": terms}) == (loss, terms)
    assert loss_of({"loss": torch.ones(3)}) == (None, None)  # not a scalar: no loss to watch
    assert loss_of(None) == (None, None)
