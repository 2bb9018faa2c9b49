"""Colour palettes for label maps (PASCAL VOC's bit-interleaved palette)."""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``num_entries``×3 uint8, index 255 = (224, 224, 192).

    VOC builds each colour by spreading the bits of the class index over R, G and B,
    three bits per round, most significant first.
    """
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for index in range(num_entries):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """H×W integer label map → H×W×3 uint8 RGB using ``palette`` (VOC's by default)."""
    palette = voc_palette() if palette is None else palette
    label = np.asarray(label)
    return palette[np.clip(label, 0, len(palette) - 1).astype(np.int64)]
