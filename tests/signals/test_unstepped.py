import torch
from torch import nn

from lightning_lossguard.signals.unstepped import Unstepped, UnsteppedParameters


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _backward(model: nn.Module) -> None:
    model(torch.randn(16, 4)).pow(2).mean().backward()


def test_parameters_left_out_of_the_optimizer_are_read_once_they_have_a_gradient() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)
    unstepped = UnsteppedParameters(model, [optimizer])
    assert unstepped
    assert unstepped.read([optimizer]) == []  # no gradient yet: not judged
    _backward(model)
    optimizer.step()
    assert unstepped.read([optimizer]) == [Unstepped("0.weight", 32), Unstepped("0.bias", 8)]  # graph not read: None
    unstepped.read_by_trained({id(model[0].bias)})
    assert unstepped.read([optimizer]) == [
        Unstepped("0.weight", 32, read_by_trained=False),
        Unstepped("0.bias", 8, read_by_trained=True),
    ]


def test_a_parameter_moved_by_hand_is_dropped_for_good() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)
    unstepped = UnsteppedParameters(model, [optimizer])
    _backward(model)
    model[0].weight.data.mul_(0.99)  # an EMA-style update that bypasses autograd's version counter
    assert unstepped.read([optimizer]) == [Unstepped("0.bias", 8)]
    model[0].weight.data.div_(0.99)
    assert unstepped.read([optimizer]) == [Unstepped("0.bias", 8)]


def test_a_parameter_added_to_an_optimizer_or_frozen_later_is_dropped() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)
    unstepped = UnsteppedParameters(model, [optimizer])
    _backward(model)
    optimizer.add_param_group({"params": [model[0].weight]})
    model[0].bias.requires_grad_(False)
    assert unstepped.read([optimizer]) == []
    assert not unstepped


def test_frozen_parameters_and_a_fully_held_model_keep_nothing() -> None:
    model = _model()
    model[0].requires_grad_(False)
    assert not UnsteppedParameters(model, [torch.optim.SGD(model[2].parameters(), lr=0.1)])
    assert not UnsteppedParameters(model, [torch.optim.SGD([p for p in model.parameters() if p.requires_grad])])


def test_without_an_optimizer_nothing_is_kept() -> None:
    assert not UnsteppedParameters(_model(), [])


def test_the_mode_of_the_module_that_owns_a_parameter_is_read_with_it() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)
    unstepped = UnsteppedParameters(model, [optimizer])
    model[0].eval()  # a fixed feature extractor kept in eval mode
    _backward(model)
    assert [u.training for u in unstepped.read([optimizer])] == [False, False]
