"""A short overhead smoke run (no timing assertions: timing belongs to the benchmark, not the suite)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from benchmarks.docs import PERFORMANCE, replace_section
from benchmarks.overhead import (
    DEVICE,
    WORKLOADS,
    judging_profile,
    main,
    ratio_spread,
    run,
    short_run_table,
    step_kinds_table,
)


def test_overhead_smoke_produces_a_ratio_for_every_configuration() -> None:
    table = run(repeats=1, quick=True, log=lambda _: None, workloads=WORKLOADS[:1])
    [row] = [line for line in table.splitlines() if line.startswith("| BoringModel")]
    ratios = re.findall(r"([0-9.]+)x", row)  # attributed, end to end, the grad_norm recipe
    assert len(ratios) == 3 and all(float(r) > 0 for r in ratios)
    # The budget's own measure of the run's share (of the last interval's), and the stride.
    assert re.search(r"\| [0-9.]+% \([0-9.]+%\), [0-9]+ \|", row)


def test_the_short_run_table_pays_a_toy_and_a_real_small_model_their_whole_fit() -> None:
    table = short_run_table(repeats=1, quick=True, log=lambda _: None)
    rows = table.splitlines()[2:]
    assert [row.split(",")[0] for row in rows] == ["| BoringModel-sized (Linear 32-2", "| conv autoencoder 1x32x32"]
    assert all(re.search(r"60 steps, whole fit \| [0-9.]+ s \| [0-9.]+x \|$", row) for row in rows)


def test_the_per_kind_table_times_plain_sampled_and_report_batches_apart() -> None:
    """A 400-step run of the ~1 ms model has all three kinds (the budget's stride is above 1 after its warm-up)."""
    table = step_kinds_table(lambda _: None, ((WORKLOADS[0], 400, "2"),))
    [row] = [line for line in table.splitlines() if line.startswith("| BoringModel")]
    plain, sampled, report = ((float(t), int(n)) for t, n in re.findall(r"\| ([0-9.]+) \(([0-9]+)\)", row))
    assert plain[1] + sampled[1] + report[1] == 399  # every batch but the first, in exactly one kind
    assert min(plain[1], sampled[1], report[1]) > 0 and report[1] >= 8
    assert 0 < plain[0] < sampled[0] and report[0] > 0  # a gradient pass costs more than no work


def test_what_the_detectors_hold_does_not_grow_with_the_run() -> None:
    """Histories are bounded (the longest holds ~20k steps, about 1 MiB): after 40k steps no more than after 20k."""
    (*_, early), (*_, late) = judging_profile(40_000, checkpoints=(20_000, 40_000))
    assert late < early * 1.1


def test_replace_section_rewrites_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("intro\n<!-- a:start -->\nold\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nkeep\n<!-- b:end -->\n")
    replace_section("a", "new table", doc)
    assert doc.read_text() == (
        "intro\n<!-- a:start -->\nnew table\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nkeep\n<!-- b:end -->\n"
    )
    with pytest.raises(ValueError, match="no <!-- c:start -->"):
        replace_section("c", "x", doc)


def test_the_end_to_end_ratio_comes_with_the_quartiles_of_its_pairs() -> None:
    guard, base = [1.10, 0.98, 1.02, 1.04, 1.00, 1.06, 1.01], [1.0] * 7
    assert ratio_spread(guard, base) == "1.020x (1.00–1.06)"
    assert ratio_spread([1.5], [1.0]) == "1.500x"  # too few pairs for quartiles


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--device", "cuda", "--quick"])
    assert "no CUDA device is available" in capsys.readouterr().err
    assert DEVICE.name == "cpu"  # the refused device is not left set for what runs next


def test_a_workload_row_that_does_not_exist_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--quick", "--workloads", "1,9"])
    assert f"row numbers 0-{len(WORKLOADS) - 1}" in capsys.readouterr().err


def test_a_partial_cpu_table_is_never_written_to_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--write-docs", "--workloads", "0"])
    assert "drop --workloads" in capsys.readouterr().err


def test_each_device_has_its_section_in_the_performance_doc() -> None:
    text = PERFORMANCE.read_text()
    for section in ("overhead", "overhead-long", "overhead-cuda"):
        assert f"<!-- {section}:start -->" in text and f"<!-- {section}:end -->" in text
