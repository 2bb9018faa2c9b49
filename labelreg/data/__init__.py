"""Datasets in the real on-disk formats, synthetic scenes and joint augmentation.

Every dataset returns a *sample dict* (CPU tensors, before any augmentation):

- ``image``: uint8 3×H×W RGB
- ``label``: int64 H×W class ids, 255 = ignore (all 255 for depth-only frames)
- ``depth``: float32 H×W metres, 0 = invalid (only NYUv2 datasets)
- ``labeled``: bool, False for depth-only frames
- ``index``: int, position in the dataset; ``name``: str, a stable id for reports

Batches are moved to the device and augmented there (``transforms.JointAugment``).
"""
from labelreg.data.palette import IGNORE_INDEX, colorize, voc_palette

__all__ = ["IGNORE_INDEX", "colorize", "voc_palette"]
