"""PASCAL VOC 2012 segmentation, optionally augmented with SBD ("trainaug").

Layouts: ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass,
ImageSets/Segmentation/<split>.txt}`` and SBD ``benchmark_RELEASE/dataset/{img,
cls/<id>.mat, train.txt, val.txt}``. VOC label PNGs are palette images whose pixel
*indices* are the classes (0..20, 255 = void border); the colours are only a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.io
import torch
from PIL import Image
from torch.utils.data import Dataset

from labelreg.palette import IGNORE_INDEX

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]


def _find_dir(root: Path, candidates: list[Path], required: list[str], what: str) -> Path:
    """The first candidate folder holding every name in ``required``; else a clear error."""
    for folder in candidates:
        if all((folder / name).exists() for name in required):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{what}: no folder containing {required} under {root}; tried {tried}")


def find_voc_root(voc_root: str | Path) -> Path:
    """Accept ``VOC2012``, ``VOCdevkit`` or the folder holding ``VOCdevkit``."""
    root = Path(voc_root)
    candidates = [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]
    return _find_dir(root, candidates, ["JPEGImages"], "PASCAL VOC 2012")


def find_sbd_root(sbd_root: str | Path) -> Path:
    """Accept ``benchmark_RELEASE/dataset``, ``benchmark_RELEASE`` or its parent."""
    root = Path(sbd_root)
    candidates = [root, root / "dataset", root / "benchmark_RELEASE" / "dataset"]
    return _find_dir(root, candidates, ["cls", "train.txt", "val.txt"], "SBD")


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _check_values(label: np.ndarray, path: Path) -> None:
    bad = (label > len(VOC_CLASSES) - 1) & (label != IGNORE_INDEX)
    if bad.any():
        raise ValueError(f"{path}: label values {np.unique(label[bad])[:10].tolist()} "
                         f"outside 0..{len(VOC_CLASSES) - 1} and not {IGNORE_INDEX}")


def _unreadable(path: Path, error: OSError, what: str, where: str = "") -> ValueError:
    first = (str(error).splitlines() or [type(error).__name__])[0]
    return ValueError(f"{where}{path}: cannot read the {what} ({first}); it is truncated or corrupt: replace it "
                      "(or remove its id from the split list)")


def read_label_png(path: Path, where: str = "") -> np.ndarray:
    """A palette ("P") or grey ("L") PNG → H×W uint8 class indices (not colours)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: label PNGs must be palette/indexed; got {im.mode}")
            label = np.array(im)  # for mode "P" this is the palette index per pixel
    except OSError as error:
        raise _unreadable(path, error, "label PNG", where) from None
    _check_values(label, path)
    return label


def read_sbd_mat(path: Path) -> np.ndarray:
    """SBD ``cls/<id>.mat`` (struct GTcls, field Segmentation) → H×W uint8 class indices."""
    try:
        mat = scipy.io.loadmat(str(path), simplify_cells=True)
    except Exception as err:  # corrupt file or not a MATLAB ≤ v7.2 file
        raise ValueError(f"{path}: cannot read SBD label .mat ({err})") from err
    try:
        label = np.asarray(mat["GTcls"]["Segmentation"])
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{path}: expected struct GTcls with field Segmentation ({err!r})") from err
    if label.ndim != 2:
        raise ValueError(f"{path}: GTcls.Segmentation must be H×W, got shape {label.shape}")
    _check_values(label, path)
    return label.astype(np.uint8)


class VOCSegmentation(Dataset):
    """VOC 2012 semantic segmentation, 21 classes, 255 = void.

    Splits: ``train``/``val``/``trainval`` from VOC's lists; ``trainaug`` (needs
    ``sbd_root``) = SBD train ∪ SBD val ∪ VOC train minus VOC val, sorted (10,582 ids).
    Labels come from VOC ``SegmentationClass`` when present, else SBD ``cls/*.mat``.
    Samples: ``image`` uint8 3×H×W, ``label`` int64 H×W, ``labeled`` True, ``index``,
    ``name`` (the VOC id, e.g. ``2007_000032``).
    """

    num_classes = len(VOC_CLASSES)
    class_names = VOC_CLASSES

    def __init__(self, voc_root: str | Path, split: str = "train",
                 sbd_root: str | Path | None = None, *,
                 transform: Transform | None = None) -> None:
        self.root = find_voc_root(voc_root)
        self.sbd = find_sbd_root(sbd_root) if sbd_root is not None else None
        self.split = split
        self.transform = transform
        lists = self.root / "ImageSets" / "Segmentation"
        if split in ("train", "val", "trainval"):
            self.ids = _read_ids(lists / f"{split}.txt")
        elif split == "trainaug":
            if self.sbd is None:
                raise ValueError("split 'trainaug' needs sbd_root (the SBD benchmark_RELEASE folder)")
            ids = set(_read_ids(self.sbd / "train.txt")) | set(_read_ids(self.sbd / "val.txt"))
            ids |= set(_read_ids(lists / "train.txt"))
            # VOC val is the evaluation set, so it must never leak into training.
            self.ids = sorted(ids - set(_read_ids(lists / "val.txt")))
        else:
            raise ValueError(f"split must be train, val, trainval or trainaug, got {split!r}")
        if not self.ids:
            listed = lists / f"{split}.txt" if split != "trainaug" else f"{lists} and {self.sbd}"
            raise ValueError(f"split {split!r} lists no images ({listed}); check the split name and its list file")

    def __len__(self) -> int:
        return len(self.ids)

    def _paths(self, name: str, index: int) -> tuple[Path, Path]:
        """(image path, label path), preferring VOC's files over SBD's."""
        image = self.root / "JPEGImages" / f"{name}.jpg"
        label = self.root / "SegmentationClass" / f"{name}.png"
        if self.sbd is not None:
            if not image.is_file():
                image = self.sbd / "img" / f"{name}.jpg"
            if not label.is_file():
                label = self.sbd / "cls" / f"{name}.mat"
        for p in (image, label):
            if not p.is_file():
                raise FileNotFoundError(f"{self.split}[{index}] ({name}): missing {p}")
        return image, label

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        name = self.ids[index]
        image_path, label_path = self._paths(name, index)
        where = f"{self.split}[{index}] ({name}): "
        label = read_sbd_mat(label_path) if label_path.suffix == ".mat" else read_label_png(label_path, where)
        try:
            with Image.open(image_path) as im:
                image = np.array(im.convert("RGB"))
        except OSError as error:
            raise _unreadable(image_path, error, "image", where) from None
        if image.shape[:2] != label.shape:
            raise ValueError(f"index {index}: image {image_path} is {image.shape[:2]} but "
                             f"label {label_path} is {label.shape}")
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.from_numpy(label.astype(np.int64)),
            "labeled": True,
            "index": index,
            "name": name,
        }
        return self.transform(sample) if self.transform else sample
