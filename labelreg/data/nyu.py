"""NYU Depth v2 readers: the labeled .mat (MATLAB v7.3) and depth-only frames.

The labeled file stores MATLAB's column-major H×W×3×N arrays, which HDF5 exposes
reversed: ``images`` N×3×W×H, ``depths``/``labels`` N×W×H. Every frame is
transposed back to H×W here so callers never see the MATLAB layout.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import scipy.io
import torch
from PIL import Image
from torch.utils.data import Dataset

from labelreg.palette import IGNORE_INDEX

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]

NUM_CLASSES = 40
# The 40 names of classMapping40.mat's className, for datasets read without that file.
NYU40_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
]
_SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}


def _loadmat(path: str | Path, what: str) -> dict[str, Any]:
    """scipy.io.loadmat with errors that name the file (MATLAB ≤ v7.2 files only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as err:  # scipy's answer to v7.3 (HDF5) files
        raise ValueError(f"{path}: cannot read {what} ({err})") from err
    except Exception as err:  # corrupt or not a .mat at all
        raise ValueError(f"{path}: cannot read {what} as a MATLAB file ({err})") from err


def _cell_strings(cell: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (or a char matrix) → list of Python str."""
    if cell.dtype.kind == "U":  # char matrix: loadmat gives one padded string per row
        return [str(row).strip() for row in cell.ravel()]
    return [str(np.asarray(c).ravel()[0]) if np.asarray(c).size else "" for c in cell.ravel()]


def load_splits(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``splits.mat`` → {"train": int64 (795,), "test": int64 (654,)}, 0-based.

    The file holds 1-based MATLAB indices ``trainNdxs``/``testNdxs`` (K×1 uint16).
    """
    mat = _loadmat(path, "NYUv2 splits file")
    splits = {}
    for split, key in _SPLIT_KEYS.items():
        if key not in mat:
            raise ValueError(f"{path}: key {key!r} missing from NYUv2 splits file")
        one_based = np.asarray(mat[key]).astype(np.int64).ravel()
        if one_based.size and one_based.min() < 1:
            raise ValueError(f"{path}: {key} holds index {one_based.min()}; MATLAB indices start at 1")
        splits[split] = one_based - 1
    return splits


def load_class_mapping(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read ``classMapping40.mat`` → (lut int64 (R+1,), 40 class names).

    ``lut[raw_id]`` is the 0-based 40-class id; ``lut[0] = 255`` because raw 0 means
    unlabeled. R is the length of ``mapClass`` (894 in the real file; smaller in
    synthetic copies, so it is never assumed).
    """
    mat = _loadmat(path, "NYUv2 class mapping")
    for key in ("mapClass", "className"):
        if key not in mat:
            raise ValueError(f"{path}: key {key!r} missing from NYUv2 class mapping")
    map_class = np.asarray(mat["mapClass"]).astype(np.int64).ravel()
    if map_class.size and (map_class.min() < 1 or map_class.max() > NUM_CLASSES):
        raise ValueError(f"{path}: mapClass values must lie in 1..{NUM_CLASSES}, "
                         f"got {map_class.min()}..{map_class.max()}")
    names = _cell_strings(np.asarray(mat["className"]))
    if len(names) != NUM_CLASSES:
        raise ValueError(f"{path}: className has {len(names)} entries, expected {NUM_CLASSES}")
    lut = np.concatenate([[IGNORE_INDEX], map_class - 1]).astype(np.int64)
    return lut, names


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _valid_depth(depth: np.ndarray) -> np.ndarray:
    """float32 metres with non-finite or non-positive readings set to 0 (= invalid)."""
    depth = depth.astype(np.float32, copy=False)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0)).astype(np.float32)


def _image_id(mat_index: int) -> str:
    return f"nyu_{mat_index + 1:04d}"  # 1-based, like MATLAB


class NYUv2Labeled(Dataset):
    """The 1449 densely labeled NYUv2 frames, 40-class labels, depth in metres.

    Samples: ``image`` uint8 3×H×W, ``label`` int64 H×W (255 = unlabeled),
    ``depth`` float32 H×W (0 = invalid), ``labeled`` True, ``index``, ``name``
    ``nyu_XXXX`` (1-based index in the .mat, as the splits file counts).

    ``indices`` optionally keeps a subset of the split: 0-based positions within it.
    """

    num_classes = NUM_CLASSES

    def __init__(self, mat_path: str | Path, split: str = "train",
                 splits_path: str | Path | None = None,
                 mapping_path: str | Path | None = None, *,
                 indices: Any = None, transform: Transform | None = None) -> None:
        self.mat_path = Path(mat_path)
        self.split = split
        self.transform = transform
        n, self.width, self.height = self._validate_mat()

        if split == "all":
            mat_indices = np.arange(n, dtype=np.int64)
        elif split in _SPLIT_KEYS:
            splits_path = Path(splits_path) if splits_path else self.mat_path.parent / "splits.mat"
            mat_indices = load_splits(splits_path)[split]
            if not mat_indices.size:
                raise ValueError(f"{splits_path}: split {split!r} ({_SPLIT_KEYS[split]}) lists no images")
            bad = mat_indices[(mat_indices < 0) | (mat_indices >= n)]
            if bad.size:
                raise ValueError(f"{splits_path}: {_SPLIT_KEYS[split]} holds index {bad[0] + 1} "
                                 f"(1-based) but {self.mat_path.name} has only {n} images")
        else:
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        if indices is not None:
            positions = np.asarray(indices, dtype=np.int64).ravel()
            if positions.size and (positions.min() < 0 or positions.max() >= len(mat_indices)):
                raise ValueError(f"indices must lie in 0..{len(mat_indices) - 1} "
                                 f"(positions within split {split!r})")
            mat_indices = mat_indices[positions]
        self.mat_indices = mat_indices

        if mapping_path is None:
            mapping_path = self.mat_path.parent / "classMapping40.mat"
            if not mapping_path.is_file():
                raise FileNotFoundError(f"40-class labels need classMapping40.mat; none beside "
                                        f"{self.mat_path} and no mapping_path given")
        self.mapping_path = Path(mapping_path)
        self.lut, self.class_names = load_class_mapping(self.mapping_path)

        # The h5py handle is opened lazily, once per process (see _file).
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    def _validate_mat(self) -> tuple[int, int, int]:
        """Check the .mat with a short-lived open; return (N, W, H)."""
        path = self.mat_path
        if not path.is_file():
            raise FileNotFoundError(f"NYUv2 labeled file not found: {path}")
        try:
            if not h5py.is_hdf5(str(path)):
                raise ValueError(f"{path}: not a MATLAB v7.3/HDF5 file (expected nyu_depth_v2_labeled.mat)")
            with h5py.File(path, "r") as f:
                missing = [k for k in ("images", "depths", "labels") if k not in f]
                if missing:
                    raise ValueError(f"{path}: dataset(s) {missing} missing")
                images, depths, labels = f["images"].shape, f["depths"].shape, f["labels"].shape
        except OSError as error:
            raise ValueError(f"{path}: cannot read this HDF5 file ({_first_line(error)}); it is truncated, corrupt "
                             "or unreadable: download or generate it again") from None
        if len(images) != 4 or images[1] != 3:
            raise ValueError(f"{path}: images must be N×3×W×H, got shape {images}")
        n, _, w, h = images
        for key, shape in (("depths", depths), ("labels", labels)):
            if tuple(shape) != (n, w, h):
                raise ValueError(f"{path}: {key} has shape {shape}, expected {(n, w, h)} "
                                 f"to match images {images}")
        return n, w, h

    def _file(self) -> h5py.File:
        # h5py handles do not survive fork, so each DataLoader worker opens its own.
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.mat_path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.mat_indices)

    @property
    def ids(self) -> list[str]:
        """Image ids in split order (``nyu_0001`` = the first image of the .mat, 1-based like MATLAB)."""
        return [_image_id(int(i)) for i in self.mat_indices]

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        i = int(self.mat_indices[index])
        try:
            f = self._file()
            image = np.ascontiguousarray(f["images"][i].transpose(0, 2, 1))  # 3×W×H → 3×H×W
            raw = np.ascontiguousarray(f["labels"][i].T).astype(np.int64)
            depth = _valid_depth(np.ascontiguousarray(f["depths"][i].T))
        except OSError as error:
            raise ValueError(f"{self.mat_path}: cannot read image {i + 1} (1-based; {self.split}[{index}]): "
                             f"{_first_line(error)}; the file is truncated or corrupt: download or generate it "
                             "again") from None

        too_big = raw >= len(self.lut)
        if too_big.any():
            ids = np.unique(raw[too_big])[:10].tolist()
            raise ValueError(f"{self.mat_path}: image {i + 1} (1-based) has raw label id(s) {ids} "
                             f"beyond the {len(self.lut) - 1} ids of {self.mapping_path.name}")
        sample = {
            "image": torch.from_numpy(image),
            "label": torch.from_numpy(self.lut[raw]),
            "depth": torch.from_numpy(depth),
            "labeled": True,
            "index": index,
            "name": _image_id(i),
        }
        return self.transform(sample) if self.transform else sample


class NYUv2DepthOnly(Dataset):
    """Unlabeled NYUv2 frames (RGB + depth) for semi-supervised training.

    ``root_or_list`` is either a folder of ``*.h5``/``*.hdf5`` frames (``rgb`` 3×H×W
    uint8, ``depth`` H×W float metres) or a text/CSV list of "rgb,depth" pairs where
    depth is a 16-bit PNG divided by ``depth_scale`` (1000 → metres).
    Samples: ``image`` uint8 3×H×W, ``label`` int64 H×W all 255, ``depth`` float32
    H×W (0 = invalid), ``labeled`` False, ``index``, ``name`` (file stem).
    """

    num_classes = NUM_CLASSES

    def __init__(self, root_or_list: str | Path, *, depth_scale: float = 1000.0,
                 transform: Transform | None = None) -> None:
        self.root = Path(root_or_list)
        self.depth_scale = float(depth_scale)
        self.transform = transform
        self.class_names: list[str] = list(NYU40_CLASSES)
        # Each entry is (hdf5 path,) or (rgb path, depth png path).
        self.entries: list[tuple[Path, ...]]
        if self.root.is_dir():
            files = sorted(p for p in self.root.iterdir()
                           if p.is_file() and p.suffix.lower() in (".h5", ".hdf5"))
            if not files:
                raise FileNotFoundError(f"no *.h5/*.hdf5 depth frames in folder {self.root}")
            self.entries = [(p,) for p in files]
        elif self.root.is_file():
            self.entries = self._read_list(self.root)
        else:
            raise FileNotFoundError(f"depth-only source not found: {self.root}")

    @staticmethod
    def _read_list(list_path: Path) -> list[tuple[Path, ...]]:
        entries = []
        for lineno, line in enumerate(list_path.read_text().splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = [s.strip() for s in (line.split(",") if "," in line else line.split())]
            if len(fields) != 2 or not all(fields):
                raise ValueError(f"{list_path}:{lineno}: expected 'rgb_path,depth_path', got {line!r}")
            entries.append(tuple(list_path.parent / p for p in fields))
        if not entries:
            raise ValueError(f"{list_path}: list of RGB/depth pairs is empty")
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def _read_h5(self, path: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not path.is_file():
            raise FileNotFoundError(f"depth frame {index} missing: {path}")
        try:
            with h5py.File(path, "r") as f:  # one small file per frame: open per access, fork-safe
                for key in ("rgb", "depth"):
                    if key not in f:
                        raise ValueError(f"{path} (index {index}): dataset {key!r} missing")
                rgb, depth = f["rgb"][()], f["depth"][()]
        except OSError as error:
            raise ValueError(f"{path} (depth-only frame {index}): cannot read it ({_first_line(error)}); the file "
                             "is truncated or corrupt: replace or remove it") from None
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[0] != 3:
            raise ValueError(f"{path} (index {index}): rgb must be 3×H×W uint8, "
                             f"got {rgb.dtype} {rgb.shape}")
        # Integer depth is likely millimetres; refuse rather than silently mis-scale.
        if depth.dtype.kind != "f" or depth.shape != rgb.shape[1:]:
            raise ValueError(f"{path} (index {index}): depth must be float {rgb.shape[1:]} metres, "
                             f"got {depth.dtype} {depth.shape}")
        return rgb, depth

    def _read_png_pair(self, rgb_path: Path, depth_path: Path,
                       index: int) -> tuple[np.ndarray, np.ndarray]:
        for p in (rgb_path, depth_path):
            if not p.is_file():
                raise FileNotFoundError(f"depth-only pair {index} of {self.root}: missing {p}")
        try:
            with Image.open(rgb_path) as im:
                rgb = np.array(im.convert("RGB")).transpose(2, 0, 1)
        except OSError as error:
            raise ValueError(f"{rgb_path} (depth-only pair {index}): cannot read the image ({_first_line(error)}); "
                             "it is truncated or corrupt: replace it or drop it from the list") from None
        try:
            with Image.open(depth_path) as im:
                if not re.fullmatch(r"I(;16.*)?", im.mode):
                    raise ValueError(f"{depth_path} (index {index}): depth PNG must be 16-bit, "
                                     f"got mode {im.mode!r} (8-bit PNGs cannot hold depth)")
                depth = np.array(im).astype(np.float32) / self.depth_scale
        except OSError as error:
            raise ValueError(f"{depth_path} (depth-only pair {index}): cannot read the depth PNG "
                             f"({_first_line(error)}); it is truncated or corrupt: replace it or drop it from the "
                             "list") from None
        if depth.shape != rgb.shape[1:]:
            raise ValueError(f"index {index}: size mismatch, {rgb_path} is {rgb.shape[1:]} "
                             f"but {depth_path} is {depth.shape}")
        return np.ascontiguousarray(rgb), depth

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        entry = self.entries[index]
        rgb, depth = self._read_h5(entry[0], index) if len(entry) == 1 else \
            self._read_png_pair(entry[0], entry[1], index)
        h, w = depth.shape
        sample = {
            "image": torch.from_numpy(rgb),
            "label": torch.full((h, w), IGNORE_INDEX, dtype=torch.int64),
            "depth": torch.from_numpy(_valid_depth(depth)),
            "labeled": False,
            "index": index,
            "name": entry[0].stem,
        }
        return self.transform(sample) if self.transform else sample
