"""A confusion matrix as an RGB image (numpy only: no plotting library needed)."""

from __future__ import annotations

import numpy as np

_LOW = np.array([255.0, 255.0, 255.0])  # white: no predictions
_HIGH = np.array([8.0, 48.0, 107.0])  # dark blue: every target of the row
_GRID = np.array([200, 200, 200], dtype=np.uint8)


def confusion_image(confusion: np.ndarray, side: int = 320) -> np.ndarray:
    """``[H, W, 3]`` uint8 heatmap of a ``[true, predicted]`` matrix, each row normalised to recall.

    Row ``i`` is true class ``i`` (top to bottom), column ``j`` predicted class ``j`` (left to right); a
    healthy classifier shows a dark diagonal, a collapsed one a dark column. Cells are square, about
    ``side`` pixels in all, with a light grid when cells are large enough to see it.
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    classes = matrix.shape[0]
    support = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)
    cell = max(1, side // max(classes, 1))
    colours = (_LOW + share[..., None] * (_HIGH - _LOW)).round().astype(np.uint8)
    image = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)
    if cell >= 6:
        image[::cell, :] = _GRID
        image[:, ::cell] = _GRID
    return np.ascontiguousarray(image)
