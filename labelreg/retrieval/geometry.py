"""Boxes on the bottleneck's grid of cells (thesis §5.4.3): one cell = 16×16 pixels.

A query box is given in pixels (half-open ``y0, x0, y1, x1``) and snapped to the cells it mostly
covers; a match is found as cells and reported back in pixels of its own image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from labelreg.models.autoencoder import DOWNSAMPLING

CELL = DOWNSAMPLING  # pixels per bottleneck cell


@dataclass(frozen=True)
class Cells:
    """A box on the coarse grid, half-open: rows r0..r1-1, columns c0..c1-1."""

    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """Cells covering an H×W image (the last row/column may be partly outside it)."""
    return math.ceil(height / CELL), math.ceil(width / CELL)


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"y0,x0,y1,x1"`` → ints (pixels, half-open)."""
    try:
        y0, x0, y1, x1 = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"a box looks like y0,x0,y1,x1 in pixels (e.g. 16,32,80,96), got {text!r}") from None
    return y0, x0, y1, x1


def _snap(low: int, high: int, cells: int, extent: int) -> tuple[int, int]:
    """The cell range [start, stop) whose edges lie nearest to the pixel range [low, high)."""
    # cell edges clipped to the image, so a partial last cell has its own (nearer) edge
    edges = np.minimum(np.arange(cells + 1) * CELL, extent)
    start = int(np.abs(edges - low).argmin())  # ties widen the box: the first edge for the start…
    stop = cells - int(np.abs(edges - high)[::-1].argmin())  # …and the last one for the stop
    if stop <= start:  # thin box: the cell under its centre
        start = min(int((low + high) / 2 // CELL), cells - 1)
        stop = start + 1
    return start, stop


def pixel_box_to_cells(box: Sequence[int], image_size: tuple[int, int]) -> Cells:
    """Snap a pixel box (y0, x0, y1, x1; half-open) to the cells it mostly covers.

    Each edge moves to the nearest cell edge (the image border counts as the last cell's
    edge); a box thinner than half a cell still keeps one cell, the one holding its centre.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    height, width = image_size
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"box {y0},{x0},{y1},{x1} must satisfy 0 <= y0 < y1 <= {height} and 0 <= x0 < x1 <= {width} "
                         "(pixels of the query image, half-open)")
    rows, cols = grid_shape(height, width)
    r0, r1 = _snap(y0, y1, rows, height)
    c0, c1 = _snap(x0, x1, cols, width)
    return Cells(r0, c0, r1, c1)


def cells_to_pixel_box(cells: Cells, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixels of ``cells`` inside an H×W image (y0, x0, y1, x1; half-open)."""
    height, width = image_size
    return (cells.r0 * CELL, cells.c0 * CELL, min(cells.r1 * CELL, height), min(cells.c1 * CELL, width))


def class_box(label: torch.Tensor | np.ndarray, class_id: int) -> tuple[int, int, int, int]:
    """Bounding box of the largest connected region of ``class_id`` in an H×W label map."""
    mask = np.asarray(label) == class_id
    if not mask.any():
        raise ValueError(f"class {class_id} does not occur in this label map")
    components, _ = ndimage.label(mask)
    sizes = np.bincount(components.ravel())[1:]
    ys, xs = np.nonzero(components == 1 + int(sizes.argmax()))
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
