from lightning_lossguard.report.failure import MAX_ERROR_CHARS, failure_note

ANOMALY = RuntimeError("Function 'SqrtBackward0' returned nan values in its 0th output.")


def test_a_plain_exception_says_where_the_fit_stopped_and_what_was_judged() -> None:
    note = failure_note(35, 35, RuntimeError("user bug"))
    assert (
        note
        == "The fit stopped at step 35 on RuntimeError: user bug. LossGuard judged the 35 batches that ended before it."
    )
    assert failure_note(0, 0, KeyboardInterrupt()) == (
        "The fit stopped at step 0 on KeyboardInterrupt. No batch ended before it: LossGuard judged nothing."
    )
    assert "the 1 batch that ended" in failure_note(1, 1, ValueError("x"))


def test_a_long_or_multiline_error_is_one_line_cut_short() -> None:
    note = failure_note(3, 3, RuntimeError("first\nsecond " + "x" * 1000))
    assert "\n" not in note and "first second" in note and len(note) < MAX_ERROR_CHARS + 120


def test_anomaly_mode_tells_where_the_nan_was_made_from_the_loss_of_the_batch_that_raised() -> None:
    made = failure_note(40, 40, ANOMALY, loss_finite=True)
    assert "the 40 batches that ended before it and the loss of the one that raised" in made
    assert "SqrtBackward0 returned NaN while the batch's loss was finite" in made
    assert "non-finite loss (SqrtBackward0)" in failure_note(40, 40, ANOMALY, loss_finite=False)
    unknown = failure_note(40, 40, ANOMALY)
    assert "SqrtBackward0 returned NaN; the traceback" in unknown and "loss was finite" not in unknown
    assert "anomaly" not in failure_note(40, 40, RuntimeError("CUDA out of memory"), loss_finite=True)
