"""What a fit that stopped on an exception tells the user: where it stopped, on what, and what was judged."""

from __future__ import annotations

import re

from lightning_lossguard.report.safe_text import one_line

MAX_ERROR_CHARS = 300
"""An exception's text is cut to this many characters in the note (the traceback has the rest)."""

_ANOMALY = re.compile(r"Function '([^']+)' returned nan values in its (\d+)th output")
"""How autograd's anomaly mode (``detect_anomaly=True``) words the NaN it stops a backward on."""


def failure_note(step: int, batches: int, error: BaseException, loss_finite: bool | None = None) -> str:
    """The note of a fit that stopped at ``step`` on ``error`` after ``batches`` batches ended. ``loss_finite``: whether
    the loss of the batch that raised was finite (None: it never reached LossGuard)."""
    text = one_line(str(error))
    what = type(error).__name__ + (f": {text[:MAX_ERROR_CHARS].rstrip('.')}" if text else "")
    ended = f"the {batches} batch{'es' if batches != 1 else ''} that ended before it"
    raised = "" if loss_finite is None else " and the loss of the one that raised"
    if batches:
        judged = f"LossGuard judged {ended}{raised}"
    elif loss_finite is None:
        judged = "No batch ended before it: LossGuard judged nothing"
    else:
        judged = "LossGuard judged the loss of the batch that raised, the first"
    note = f"The fit stopped at step {step} on {what}. {judged}."
    anomaly = _ANOMALY.search(text)
    if anomaly is None:
        return note
    function = anomaly.group(1)
    if loss_finite is False:
        return note + f" Autograd's anomaly mode stopped the backward of that batch's non-finite loss ({function})."
    made = (
        " while the batch's loss was finite, so the NaN was made in the backward (sqrt/log/pow at 0, a division by a "
        "value that can be 0)"
        if loss_finite
        else ""
    )
    return (
        note + f" Autograd's anomaly mode stopped the backward: {function} returned NaN{made}; the traceback printed "
        "with the error shows the forward line of that operation."
    )
