"""Boxes on the bottleneck's grid: pixels ↔ cells, the largest region of a class."""
import itertools

import numpy as np
import pytest

from labelreg.retrieval.geometry import CELL, Cells, cells_to_pixel_box, class_box, grid_shape, pixel_box_to_cells


# ---------------------------------------------------------------------------- boxes
@pytest.mark.parametrize("size", [(64, 80), (70, 85), (17, 33)])
def test_cell_boxes_round_trip_through_pixels(size):
    rows, cols = grid_shape(*size)
    assert (rows, cols) == (-(-size[0] // CELL), -(-size[1] // CELL))
    for r0, r1 in itertools.combinations(range(rows + 1), 2):
        for c0, c1 in itertools.combinations(range(cols + 1), 2):
            cells = Cells(r0, c0, r1, c1)
            box = cells_to_pixel_box(cells, size)
            assert box == (16 * r0, 16 * c0, min(16 * r1, size[0]), min(16 * c1, size[1]))  # the last cell is partial
            assert pixel_box_to_cells(box, size) == cells


def test_pixel_boxes_snap_to_nearest_cell_edges():
    assert pixel_box_to_cells((5, 7, 30, 41), (64, 80)) == Cells(0, 0, 2, 3)
    assert pixel_box_to_cells((9, 24, 23, 57), (64, 80)) == Cells(1, 1, 2, 4)  # 9→1, 23→1: thin → centre; 24: tie
    assert pixel_box_to_cells((8, 0, 40, 80), (64, 80)) == Cells(0, 0, 3, 5)  # ties widen the box
    assert pixel_box_to_cells((0, 0, 70, 83), (70, 85)) == Cells(0, 0, 5, 6)  # the border is the last cell's edge
    assert pixel_box_to_cells((0, 0, 70, 82), (70, 85)) == Cells(0, 0, 5, 5)
    assert pixel_box_to_cells((20, 20, 22, 22), (64, 80)) == Cells(1, 1, 2, 2)  # a 2-pixel box keeps its cell
    with pytest.raises(ValueError, match="y0 < y1"):
        pixel_box_to_cells((10, 10, 10, 20), (64, 80))
    with pytest.raises(ValueError, match="<= 80"):
        pixel_box_to_cells((0, 0, 16, 96), (64, 80))


def test_class_box_is_the_largest_connected_region():
    label = np.zeros((20, 30), np.int64)
    label[2:4, 2:4] = 3          # small blob
    label[10:18, 5:25] = 3       # large blob
    assert class_box(label, 3) == (10, 5, 18, 25)
    with pytest.raises(ValueError, match="class 7"):
        class_box(label, 7)
