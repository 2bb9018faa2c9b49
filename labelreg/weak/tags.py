"""Image-level tags derived from segmentation labels (thesis §4.4: all annotation but the tags is discarded).

A tag is a foreground class present anywhere in the label map: background (0) and
void (255) are never tags, because background is not a "real" class in chapter 4
— it is defined as the complement of the foreground classes (§4.3.1).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from labelreg.palette import IGNORE_INDEX

BACKGROUND = 0


def tags_from_label(label: torch.Tensor | np.ndarray, num_classes: int, *,
                    ignore_index: int = IGNORE_INDEX) -> list[int]:
    """H×W class ids → sorted foreground classes present (no 0, no ``ignore_index``).

    Raises ValueError for ids outside [0, num_classes) that are not ``ignore_index``,
    so a wrong class count cannot silently produce impossible tags.
    """
    values = np.unique(label.cpu().numpy() if torch.is_tensor(label) else np.asarray(label))
    bad = values[(values != ignore_index) & ((values < 0) | (values >= num_classes))]
    if bad.size:
        raise ValueError(f"label ids {bad[:10].tolist()} outside 0..{num_classes - 1} and not {ignore_index}")
    return [int(v) for v in values if v != BACKGROUND and v != ignore_index]


def tag_matrix(tags: Sequence[Iterable[int]], num_classes: int) -> np.ndarray:
    """Per-image tag lists → N×C bool matrix (column 0, background, is always False)."""
    matrix = np.zeros((len(tags), num_classes), dtype=bool)
    for row, present in enumerate(tags):
        for c in present:
            if not 0 < c < num_classes:
                raise ValueError(f"image {row}: tag {c} is not a foreground class in 1..{num_classes - 1}")
            matrix[row, c] = True
    return matrix
