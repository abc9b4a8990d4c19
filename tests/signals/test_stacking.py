import pytest
import torch

from lightning_lossguard.signals.stacking import (
    STACK_MAX_ELEMENTS,
    STACK_MIN_IN_ALL,
    STACK_MIN_TENSORS,
    StackedNorms,
    stack_groups,
    stacked,
)


def test_tensors_of_one_shape_and_dtype_are_grouped_and_the_others_left_alone() -> None:
    small = [torch.randn(4, 4) for _ in range(STACK_MIN_TENSORS)]
    halves = [torch.randn(4, 4, dtype=torch.bfloat16) for _ in range(STACK_MIN_TENSORS)]
    too_few = [torch.randn(3) for _ in range(STACK_MIN_TENSORS - 1)]
    large = [torch.randn(STACK_MAX_ELEMENTS + 1) for _ in range(STACK_MIN_TENSORS)]
    empty = [torch.randn(0, 4) for _ in range(STACK_MIN_TENSORS)]
    off_cpu = [torch.empty(4, 4, device="meta") for _ in range(STACK_MIN_TENSORS)]
    tensors = [*small, *too_few, *halves, *large, *empty, *off_cpu]
    groups, rest = stack_groups(tensors)
    n = STACK_MIN_TENSORS
    assert groups == [list(range(n)), list(range(2 * n - 1, 3 * n - 1))]
    assert rest == [i for i in range(len(tensors)) if not (i < n or 2 * n - 1 <= i < 3 * n - 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stacked_norms_land_at_their_positions(dtype: torch.dtype) -> None:
    tensors = [torch.randn(8, 4, dtype=dtype) * (i + 1) for i in range(STACK_MIN_IN_ALL)]
    tensors += [torch.randn(5000), torch.randn(3)]  # not stacked: too large, alone of its shape
    positions = torch.randperm(len(tensors) + 2).tolist()[: len(tensors)]
    norms = StackedNorms(tensors, positions)
    assert norms.worthwhile
    row = torch.full((len(tensors) + 2,), -1.0)
    norms.write(tensors, row)
    expected = torch.full((len(tensors) + 2,), -1.0)
    for tensor, at in zip(tensors, positions):
        expected[at] = torch.linalg.vector_norm(tensor.float())
    torch.testing.assert_close(row, expected, rtol=1e-3 if dtype == torch.bfloat16 else 1e-6, atol=0)


def test_a_half_precision_stack_is_summed_in_float32() -> None:
    tensors = [torch.full((1000,), 300.0, dtype=torch.float16) for _ in range(STACK_MIN_IN_ALL)]
    row = torch.empty(len(tensors))
    StackedNorms(tensors, range(len(tensors))).write(tensors, row)  # 300^2 * 1000 overflows a float16 sum
    torch.testing.assert_close(row, torch.full_like(row, 300.0 * 1000**0.5), rtol=1e-2, atol=0)


def test_too_few_tensors_to_stack_are_not_worth_a_plan() -> None:
    tensors = [torch.randn(4) for _ in range(STACK_MIN_IN_ALL - 1)]  # one group, too small in all
    assert not StackedNorms(tensors, range(len(tensors))).worthwhile


def test_a_group_of_one_is_its_tensor_flattened_without_a_copy() -> None:
    tensors = [torch.arange(6.0).reshape(2, 3), torch.ones(2, 3)]
    alone = stacked(tensors, [0])
    assert alone.shape == (1, 6) and alone.data_ptr() == tensors[0].data_ptr()
    both = stacked(tensors, [0, 1])
    assert both.shape == (2, 6) and both.data_ptr() != tensors[0].data_ptr()
    assert torch.equal(both[1], torch.ones(6))
