"""ImageFolder data for phase zero (SUNet classification pretraining, ``labelreg train-cls``).

Data (``data.root``): one folder per class under each split, as torchvision's ImageFolder::

    <data.root>/<data.train_split>/<class>/*.jpg|*.jpeg|*.png
    <data.root>/<data.val_split>/<class>/*.jpg|*.jpeg|*.png

Classes are the sorted folder names; the validation split must have exactly the training classes.

Sizes. Images are decoded with PIL and brought to one fixed size on the CPU so batches stack:
the shorter side is scaled (bilinear, antialiased) and the centre cut out — never stretched.

- training samples: short side ``round(crop · 256/224)`` then a centre square (e.g. 256×256 for
  224 crops), from which the device draws a random resized crop of ``data.crop_size`` (area
  ``data.crop_area``, aspect ``data.crop_aspect``) and a horizontal flip (``data.hflip``);
  the parts of a non-square image outside the centre square are not seen in training.
- validation samples: the standard ImageNet protocol, short side ``round(eval · 256/224)`` then a
  centre crop of ``data.eval_size`` (default: ``data.crop_size``) — "resize 256, centre crop 224";
  on the device only normalisation.

``write_toy_imagefolder`` writes the tiny data set of ``configs/demo/sunet64-tiny_cls.yaml``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from labelreg.config import ConfigError, DataConfig
from labelreg.data.transforms import JointAugment

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Train/eval images are stored at 256/224 of the crop size, as in the ResNet ImageNet recipe.
RESIZE_RATIO = 256 / 224


def _sized(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {tuple(size)}")
    return height, width


def list_classes(folder: Path) -> list[str]:
    """Sorted names of the class sub-folders of ``folder`` (hidden folders skipped)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"no class folders in {folder}: expected {folder}/<class>/<image>.jpg")
    return classes


def load_image(path: Path, size: tuple[int, int], short_side: int | None = None) -> np.ndarray:
    """Decode ``path`` as RGB and return uint8 H×W×3 at exactly ``size`` = (H, W).

    Scale so the shorter side becomes ``short_side`` (default: just enough to cover ``size``;
    never less than that), then cut out the centre ``size``. Done in one PIL resize of the
    sub-pixel centre box (bilinear, antialiased when shrinking). Large JPEGs are decoded at a
    reduced scale (PIL ``draft``) that still covers the box.
    """
    target_h, target_w = size
    with Image.open(path) as image:
        width, height = image.size
        scale = max(target_h / height, target_w / width)
        if short_side is not None:
            scale = max(scale, short_side / min(height, width))
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        factor_x, factor_y = image.size[0] / width, image.size[1] / height  # draft may have shrunk it
        image = image.convert("RGB")
        box_w, box_h = target_w / scale * factor_x, target_h / scale * factor_y
        left, top = (image.size[0] - box_w) / 2, (image.size[1] - box_h) / 2
        image = image.resize((target_w, target_h), Image.Resampling.BILINEAR,
                             box=(left, top, left + box_w, top + box_h))
        return np.asarray(image, dtype=np.uint8)


class ImageFolderDataset(Dataset):
    """Folder-per-class images at ``root/split/<class>/*.{jpg,jpeg,png}`` (classes sorted).

    Args:
        root: folder holding the split folders.
        split: name of the split folder (``train``, ``val``…).
        size: output H×W (int = square); every sample is exactly this size (see :func:`load_image`).
        short_side: shorter side before the centre crop (None: the least that covers ``size``).
        limit: keep at most this many images, chosen round-robin over classes (each class's first
            files in sorted order) so a small limit still covers every class.

    Samples: ``{"image": uint8 3×H×W, "target": int64 scalar, "index": int, "name": "class/file"}``.
    """

    def __init__(self, root: str | Path, split: str, *, size: int | Sequence[int], short_side: int | None = None,
                 limit: int | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.folder = self.root / split
        if not self.folder.is_dir():
            hint = f"; {self.root} has {sorted(p.name for p in self.root.iterdir() if p.is_dir())}" \
                if self.root.is_dir() else f" ({self.root} does not exist either)"
            raise FileNotFoundError(f"split folder {split!r} not found: {self.folder}{hint}")
        self.size = _sized(size)
        self.short_side = short_side
        self.class_names = list_classes(self.folder)
        self.class_to_index = {name: index for index, name in enumerate(self.class_names)}
        samples: list[tuple[Path, int]] = []
        for index, name in enumerate(self.class_names):
            files = sorted(p for p in (self.folder / name).iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            samples.extend((path, index) for path in files)
        if not samples:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {self.folder}")
        if limit is not None:
            if limit <= 0:
                raise ConfigError(f"a data limit must be positive, got {limit}")
            rank: dict[int, int] = {}
            order = []
            for position, (_, target) in enumerate(samples):
                order.append((rank.get(target, 0), target, position))
                rank[target] = rank.get(target, 0) + 1
            keep = sorted(position for _, _, position in sorted(order)[:limit])
            samples = [samples[position] for position in keep]
        self.samples = samples

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, target = self.samples[index]
        try:
            array = load_image(path, self.size, self.short_side)
        except Exception as error:  # PIL raises several types for truncated or foreign files
            raise RuntimeError(f"cannot read image {path} (index {index} of {self.folder}): "
                               f"{type(error).__name__}: {error}") from error
        return {"image": torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(),
                "target": torch.tensor(target, dtype=torch.int64), "index": index,
                "name": f"{path.parent.name}/{path.name}"}

    def __repr__(self) -> str:
        return (f"ImageFolderDataset({str(self.folder)!r}, {len(self)} images, {self.num_classes} classes, "
                f"size={self.size}, short_side={self.short_side})")


def check_same_classes(train_set: ImageFolderDataset, val_set: ImageFolderDataset) -> None:
    """Raise ValueError when the two splits do not have identical (sorted) class folders."""
    check_class_names(train_set.class_names, train_set.folder, val_set.class_names, val_set.folder)


def check_class_names(expected: list[str], expected_where: Path, found: list[str], found_where: Path) -> None:
    if expected == found:
        return
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))

    def show(names: list[str]) -> str:
        return f"{names[:10]}{'…' if len(names) > 10 else ''}"

    raise ValueError(f"the classes of {found_where} differ from those of {expected_where}: "
                     f"missing in {found_where.name!r}: {show(missing)}, not in {expected_where.name!r}: {show(extra)}")


def cls_sizes(cfg: DataConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """(training crop H×W, evaluation H×W) from ``data.crop_size`` / ``data.eval_size``."""
    if not cfg.crop_size:
        raise ConfigError("data.crop_size must be set for classification (e.g. [224, 224])")
    crop = _sized(cfg.crop_size)
    return crop, _sized(cfg.eval_size) if cfg.eval_size else crop


def build_cls_dataset(cfg: DataConfig, split: str, *, train: bool, limit: int | None = None) -> ImageFolderDataset:
    """The split at its CPU size: training = centre square of side crop·256/224, eval = resize-then-centre-crop."""
    crop, evaluation = cls_sizes(cfg)
    if train:
        side = round(max(crop) * RESIZE_RATIO)
        return ImageFolderDataset(cfg.root, split, size=(side, side), limit=limit)
    return ImageFolderDataset(cfg.root, split, size=evaluation, short_side=round(min(evaluation) * RESIZE_RATIO),
                              limit=limit)


def build_cls_augmentations(cfg: DataConfig) -> tuple[JointAugment, JointAugment]:
    """Device transforms: random resized crop (or scale jitter) + flip + normalise; eval normalises only.

    ``JointAugment`` needs no ``label``: without one it warps and normalises the image alone and
    copies ``target`` and the other keys through.
    """
    if cfg.crop_area and cfg.scale:
        raise ConfigError("set either data.crop_area (random resized crop) or data.scale (scale jitter), "
                          "not both; give the other null")
    crop, _ = cls_sizes(cfg)
    train = JointAugment(crop, train=True, hflip=cfg.hflip, crop_area=tuple(cfg.crop_area) if cfg.crop_area else None,
                         crop_aspect=tuple(cfg.crop_aspect), scale=tuple(cfg.scale) if cfg.scale else None,
                         generator=torch.Generator().manual_seed(0))
    return train, JointAugment(None, train=False)


# ----------------------------------------------------------------------------- toy data (demo config, tests)


def write_toy_imagefolder(root: str | Path, *, classes: int = 3, per_class: Sequence[int] = (6, 3),
                          splits: Sequence[str] = ("train", "val"), size: tuple[int, int] = (40, 48),
                          seed: int = 0) -> Path:
    """A tiny ImageFolder whose classes differ by colour and stripe orientation; JPEG and PNG mixed.

    Writes ``root/<split>/class_<c>/img_<i>.{jpg,png}`` with ``per_class[s]`` images per class in split s.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    palette = np.array([[220, 40, 40], [40, 200, 60], [50, 70, 230], [230, 200, 40], [180, 60, 200],
                        [40, 200, 200], [240, 130, 30], [120, 120, 120]], dtype=np.float64)
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width]
    for split, count in zip(splits, per_class):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = palette[c % len(palette)]
            for i in range(count):
                period = 6 + c % 3 * 2
                stripes = ((xs if c % 2 else ys) // (period // 2)) % 2
                image = colour * (0.55 + 0.45 * stripes[..., None]) + rng.normal(0, 12, (height, width, 3))
                image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
                if i % 2:
                    image.save(folder / f"img_{i}.png")
                else:
                    image.save(folder / f"img_{i}.jpg", quality=90)
    return root
