"""Datasets in the real on-disk formats, synthetic scenes and joint augmentation.

Every dataset returns a *sample dict* (CPU tensors, before any augmentation):

- ``image``: uint8 3×H×W RGB
- ``label``: int64 H×W class ids, 255 = ignore (all 255 for depth-only frames)
- ``depth``: float32 H×W metres, 0 = invalid (only NYUv2 datasets)
- ``labeled``: bool, False for depth-only frames
- ``index``: int, position in the dataset; ``name``: str, a stable id for reports
- ``sequence``: str, the recording a frame comes from (only CamVid)

Batches are moved to the device and augmented there (``transforms.JointAugment``).
"""
from labelreg.data.camvid import CAMVID_CLASSES, CamVid
from labelreg.data.nyu import NYU40_CLASSES, NYUv2DepthOnly, NYUv2Labeled, load_class_mapping, load_splits
from labelreg.palette import IGNORE_INDEX, colorize, voc_palette
from labelreg.data.transforms import FitPad, JointAugment, Resize, denormalize, normalize
from labelreg.data.voc import VOC_CLASSES, VOCSegmentation

__all__ = [
    "CAMVID_CLASSES",
    "CamVid",
    "FitPad",
    "IGNORE_INDEX",
    "JointAugment",
    "NYU40_CLASSES",
    "NYUv2DepthOnly",
    "NYUv2Labeled",
    "Resize",
    "VOCSegmentation",
    "VOC_CLASSES",
    "colorize",
    "denormalize",
    "load_class_mapping",
    "load_splits",
    "normalize",
    "voc_palette",
]
