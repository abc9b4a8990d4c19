"""Run an example and record, on every rank, the gradient norms LossGuard judged: per step, per layer and in total.

    python tests/distributed/record_norms.py examples/fsdp2.py --fault exploding

Each rank writes ``norms-rank<r>.json`` into the working directory when the fit ends (also when it raises). The
example is imported and its ``main(argv)`` called, so that Lightning re-launches this script (with the same
arguments) for the other ranks and every rank records.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

from lightning_lossguard.diagnostician import Diagnostician

rows: list[dict[str, Any]] = []
judge = Diagnostician.judge


def recording(self: Diagnostician, window: Any, layout: Any, *rates: float) -> Any:
    layers = window.layer_grad_norms(layout.layer_of, len(layout.layers))
    for step, total, per_layer in zip(window.optimizer_steps, window.grad_norms, layers):
        rows.append({"step": step, "total": float(total), "layers": dict(zip(layout.layers, map(float, per_layer)))})
    return judge(self, window, layout, *rates)


def main() -> None:
    Diagnostician.judge = recording  # type: ignore[method-assign]
    spec = importlib.util.spec_from_file_location("example", sys.argv[1])
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    try:
        example.main(sys.argv[2:])
    finally:
        rank = os.environ.get("LOCAL_RANK", "0")
        with open(f"norms-rank{rank}.json", "w") as f:
            json.dump(rows, f, allow_nan=True)


if __name__ == "__main__":
    main()
