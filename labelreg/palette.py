"""Colour palettes for label maps: PASCAL VOC's bit-interleaved palette (the saved prediction PNGs) and the
colours the figures give to ignored pixels and to VOC's and CamVid's classes."""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
# Figures draw ignored pixels black, and no class colour is black (``labelreg.viz.dataset_palette``): black
# means "not scored", never a class such as NYUv2's wall (~38% of the pixels) or VOC's background.
IGNORE_COLOUR = (0, 0, 0)
# VOC's own palette draws the background (class 0, most of every image) black; figures draw it light grey
VOC_BACKGROUND_COLOUR = (210, 210, 210)
# CamVid's 11 classes in the SegNet copy's own colours (its Scripts/camvid11.png, ids 0-10: Sky, Building,
# Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist); Unlabelled (id 11, black) is
# ignored, so black stays the ignore colour
CAMVID_COLOURS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))


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

