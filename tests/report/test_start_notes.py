from lightning_lossguard.report.start_notes import overfit_batches_note, start_notes

QUIET = {"fast_dev_run": False, "has_logger": True, "has_log_dir": True, "no_parameters": False, "manual": False}


def test_a_plain_fit_starts_without_notes() -> None:
    assert start_notes(**QUIET) == []


def test_the_report_destination_note_names_the_first_reason_only() -> None:
    notes = start_notes(**{**QUIET, "fast_dev_run": True, "has_logger": False, "has_log_dir": False})
    assert len(notes) == 1 and notes[0].startswith("fast_dev_run")
    assert start_notes(**{**QUIET, "has_logger": False})[0].startswith("No logger")
    assert start_notes(**{**QUIET, "has_log_dir": False}) == [
        "The logger has no log directory: the JSON report is not written."
    ]


def test_unavailable_signals_are_each_named() -> None:
    notes = start_notes(**{**QUIET, "no_parameters": True, "manual": True})
    assert [n.split(":")[0] for n in notes] == [
        "The model has no trainable parameters in its optimizers",
        "Manual optimization",
    ]
    assert "overfit_batches=5" in overfit_batches_note(5) and "val_loss_rising" in overfit_batches_note(5)


def test_loggers_without_tensorboard_are_named_with_where_the_diagnoses_go() -> None:
    [note] = start_notes(**{**QUIET, "loggers_without_tensorboard": ["CSVLogger", "MLFlowLogger"]})
    assert note.startswith("No TensorBoard logger (CSVLogger, MLFlowLogger)") and "lossguard.json" in note
    [note] = start_notes(**{**QUIET, "has_log_dir": False, "loggers_without_tensorboard": ["CSVLogger"]})[1:]
    assert note.endswith("only to the console.")
    assert start_notes(**{**QUIET, "has_logger": False, "loggers_without_tensorboard": []})[0].startswith("No logger")


def test_parameters_with_gradient_hooks_are_counted_in_a_note() -> None:
    [note] = start_notes(**QUIET, gradient_hooked=18, watched=20)
    assert note.startswith("18 of the 20 watched parameters carry gradient hooks (Tensor.register_hook)")
    assert "after the hooks ran" in note
