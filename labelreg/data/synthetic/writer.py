"""Writing: the on-disk NYUv2 (.mat, splits, class mapping, depth-only frames) and VOC formats."""
from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from labelreg.data.synthetic.classes import NYU40_CLASS_NAMES, RAW_NAMES, RAW_TO_NYU40
from labelreg.data.synthetic.render import check_size, render_scene, voc_label
from labelreg.palette import voc_palette
from labelreg.storage import write_text_atomic


@dataclass
class SyntheticPaths:
    """Every path ``write_synthetic_dataset`` writes."""

    root: Path
    nyu_mat: Path
    splits: Path
    mapping: Path
    depth_only_dir: Path
    voc_root: Path  # root/"VOCdevkit"/"VOC2012"

    @property
    def marker(self) -> Path:
        return self.root / ".complete"

    @property
    def owner(self) -> Path:
        """Written first and kept: this folder belongs to the generator, which may rewrite it."""
        return self.root / OWNER_NAME


OWNER_NAME = ".labelreg-synthetic"
OWNER_TEXT = "written by labelreg's synthetic data generator, which may rewrite this folder\n"
_held = threading.local()  # .roots: the folders this thread holds (synthetic_lock is re-entrant per thread)


@contextmanager
def synthetic_lock(out) -> Iterator[None]:
    """Hold the synthetic data folder ``out`` alone: an exclusive ``flock`` on its ownership file.

    Two trainings that synthesize the same new ``data.root`` at once used to collide in HDF5 ("unable
    to lock file", no file named); now the second waits here (saying so) for the first to finish.
    Refuses a folder holding files the generator did not write, as ``write_synthetic_dataset`` does."""
    root = Path(out)
    key, held = str(root.resolve()), _held.__dict__.setdefault("roots", set())
    if key in held:
        yield
        return
    check_writable_target(out)
    root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root / OWNER_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is writing the synthetic data set at {root}", file=sys.stderr,
                  flush=True)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, OWNER_TEXT.encode())
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(descriptor)  # releases the lock


def check_writable_target(out) -> None:
    """Refuse to write into a folder that holds anything the generator did not write.

    Allowed: a new or empty folder, or one holding the generator's ownership file (or, for data
    sets written before that file existed, its completion marker). Anything else (e.g. a real
    NYUv2 download) is never overwritten.
    """
    p = synthetic_paths(out)
    if not p.root.exists():
        return
    if not p.root.is_dir():
        raise ValueError(f"{p.root} is a file, not a folder; choose another folder for the synthetic data set")
    if p.owner.is_file() or p.marker.is_file():
        return
    entries = sorted(entry.name for entry in p.root.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise ValueError(
            f"{p.root} holds files the synthetic generator did not write ({shown}); it writes only into a new or "
            f"empty folder or one marked as its own ({OWNER_NAME}), so nothing there is replaced. Point data.root "
            "(or --out) at another folder, or set data.synthesize_if_missing=false to use the data that is there")


def synthetic_paths(out) -> SyntheticPaths:
    """The paths of a synthetic dataset rooted at ``out`` (nothing is written)."""
    root = Path(out)
    nyu = root / "nyu"
    return SyntheticPaths(
        root=root,
        nyu_mat=nyu / "nyu_depth_v2_labeled.mat",
        splits=nyu / "splits.mat",
        mapping=nyu / "classMapping40.mat",
        depth_only_dir=nyu / "depth_only",
        voc_root=root / "VOCdevkit" / "VOC2012",
    )


def dataset_exists(out) -> bool:
    """True when a complete synthetic dataset is at ``out`` (its marker, written last, and all files)."""
    p = synthetic_paths(out)
    try:
        meta = json.loads(p.marker.read_text())
        n_depth = int(meta["depth_only"])
        ids_ok = all((p.voc_root / "ImageSets" / "Segmentation" / f"{s}.txt").is_file()
                     for s in ("train", "val", "trainval"))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not (ids_ok and p.nyu_mat.is_file() and p.splits.is_file() and p.mapping.is_file()):
        return False
    if n_depth and not (p.depth_only_dir / _frame_name(n_depth - 1)).is_file():
        return False
    return True


def _frame_name(i: int) -> str:
    return f"frame_{i:05d}.h5"


def _voc_id(i: int) -> str:
    return f"synth_{i:06d}"


STREAM_LABELED, STREAM_DEPTH, STREAM_SPLIT = 1, 2, 3


def _mat_header(text: str) -> bytes:
    """The 128-byte MATLAB header: 116 bytes text, 8 bytes subsystem offset, version, endian."""
    raw = text.encode("ascii")[:116].ljust(116, b" ")
    return raw + b" " * 8 + b"\x00\x02" + b"IM"


_V73_HEADER = _mat_header(
    "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2015 HDF5 schema 1.00 ."
)
_V5_HEADER_TEXT = "MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2015"


def _savemat_fixed(path: Path, mdict: dict) -> None:
    """scipy.io.savemat, then a fixed header text so the bytes do not depend on the clock."""
    scipy.io.savemat(str(path), mdict, format="5", do_compression=False, oned_as="row")
    with open(path, "r+b") as fh:
        fh.write(_V5_HEADER_TEXT.encode("ascii").ljust(116, b" "))


def _check_count(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value}")


def write_synthetic_dataset(out, *, labeled=300, depth_only=2000, size=(128, 160), seed=0, test_fraction=0.4,
                            progress=True, if_missing=False) -> SyntheticPaths:
    """Render and write a synthetic dataset in the real NYUv2 / VOC formats under ``out``.

    ``labeled`` scenes go to the NYUv2 .mat (split into train/test by
    ``test_fraction``) and, identically, to the VOC tree; ``depth_only`` further
    scenes go to ``nyu/depth_only`` as unlabeled frames. Deterministic per ``seed``:
    scene i of each kind comes from its own random stream. A marker file is written
    last, so ``dataset_exists`` never mistakes an interrupted write for a complete one. One writer at a
    time holds the folder (``synthetic_lock``); with ``if_missing`` a complete data set found once the
    folder is held (another process just wrote it) is used as it is.
    """
    H, W = check_size(size)
    _check_count("labeled", labeled)
    _check_count("depth_only", depth_only, allow_zero=True)
    if labeled < 2:
        raise ValueError(f"labeled must be at least 2 (one train and one test scene), got {labeled}")
    _check_count("seed", seed, allow_zero=True)
    try:
        test_fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}") from None
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = min(labeled - 1, max(1, int(round(labeled * test_fraction))))

    with synthetic_lock(out):
        if if_missing and dataset_exists(out):
            print(f"using the synthetic data set another process has just written at {out}", file=sys.stderr)
            return synthetic_paths(out)
        return _write_held(out, labeled=labeled, depth_only=depth_only, size=(H, W), seed=seed, n_test=n_test,
                           test_fraction=test_fraction, progress=progress)


def _write_held(out, *, labeled: int, depth_only: int, size: tuple[int, int], seed: int, n_test: int,
                test_fraction: float, progress: bool) -> SyntheticPaths:
    """``write_synthetic_dataset``'s writing, its arguments checked and ``out`` held (``synthetic_lock``)."""
    H, W = size
    p = synthetic_paths(out)
    if p.marker.exists():
        p.marker.unlink()  # from here on the dataset is incomplete
    p.depth_only_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (p.voc_root / sub).mkdir(parents=True, exist_ok=True)
    # drop stale files of an earlier, larger dataset (only names this writer creates)
    for stale in p.depth_only_dir.glob("frame_*.h5"):
        stem = stale.stem[len("frame_"):]
        if not stem.isdigit() or int(stem) >= depth_only:
            stale.unlink()
    for folder, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
        for stale in (p.voc_root / folder).glob(f"synth_*{ext}"):
            stem = stale.stem[len("synth_"):]
            if not stem.isdigit() or int(stem) >= labeled:
                stale.unlink()

    total = labeled + depth_only
    bar = None
    if progress:
        bar = tqdm(total=total, desc="synthetic scenes", unit="scene", disable=None)  # None: no bar when output is not a terminal

    # split
    srng = np.random.default_rng([seed, STREAM_SPLIT])
    test_idx = np.sort(srng.permutation(labeled)[:n_test])
    is_test = np.zeros(labeled, dtype=bool)
    is_test[test_idx] = True
    train_ndx = (np.flatnonzero(~is_test) + 1).astype(np.uint16).reshape(-1, 1)
    test_ndx = (np.flatnonzero(is_test) + 1).astype(np.uint16).reshape(-1, 1)

    palette = voc_palette().reshape(-1).tolist()
    tmp_mat = p.nyu_mat.with_name(p.nyu_mat.name + ".partial")
    try:
        with h5py.File(tmp_mat, "w", userblock_size=512, libver="earliest") as fh:
            images = fh.create_dataset("images", shape=(labeled, 3, W, H), dtype=np.uint8,
                                       chunks=(1, 3, W, H), track_times=False)
            depths = fh.create_dataset("depths", shape=(labeled, W, H), dtype=np.float32,
                                       chunks=(1, W, H), track_times=False)
            labels = fh.create_dataset("labels", shape=(labeled, W, H), dtype=np.uint16,
                                       chunks=(1, W, H), track_times=False)
            for ds, cls in ((images, b"uint8"), (depths, b"single"), (labels, b"uint16")):
                ds.attrs.create("MATLAB_class", np.bytes_(cls))
            for i in range(labeled):
                sc = render_scene(np.random.default_rng([seed, STREAM_LABELED, i]), (H, W))
                images[i] = sc["rgb"].transpose(2, 1, 0)
                depths[i] = sc["depth"].T
                labels[i] = sc["raw_label"].T
                name = _voc_id(i)
                Image.fromarray(sc["rgb"]).save(p.voc_root / "JPEGImages" / f"{name}.jpg", quality=90)
                lab = Image.fromarray(voc_label(sc["raw_label"], sc["instance"]), mode="P")
                lab.putpalette(palette)
                lab.save(p.voc_root / "SegmentationClass" / f"{name}.png")
                if bar is not None:
                    bar.update(1)
        with open(tmp_mat, "r+b") as fh:
            fh.write(_V73_HEADER)
        tmp_mat.replace(p.nyu_mat)

        _savemat_fixed(p.splits, {"trainNdxs": train_ndx, "testNdxs": test_ndx})
        class_name = np.empty((1, len(NYU40_CLASS_NAMES)), dtype=object)
        class_name[0, :] = NYU40_CLASS_NAMES
        all_names = np.empty((1, len(RAW_NAMES)), dtype=object)
        all_names[0, :] = RAW_NAMES
        _savemat_fixed(p.mapping, {"mapClass": RAW_TO_NYU40.reshape(1, -1).copy(), "className": class_name,
                                   "allClassName": all_names})

        seg = p.voc_root / "ImageSets" / "Segmentation"
        train_ids = [_voc_id(i) for i in range(labeled) if not is_test[i]]
        val_ids = [_voc_id(i) for i in range(labeled) if is_test[i]]
        (seg / "train.txt").write_text("".join(f"{n}\n" for n in train_ids))
        (seg / "val.txt").write_text("".join(f"{n}\n" for n in val_ids))
        (seg / "trainval.txt").write_text("".join(f"{_voc_id(i)}\n" for i in range(labeled)))

        for i in range(depth_only):
            sc = render_scene(np.random.default_rng([seed, STREAM_DEPTH, i]), (H, W))
            with h5py.File(p.depth_only_dir / _frame_name(i), "w", libver="earliest") as fh:
                fh.create_dataset("rgb", data=np.ascontiguousarray(sc["rgb"].transpose(2, 0, 1)), track_times=False)
                fh.create_dataset("depth", data=sc["depth"], track_times=False)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    meta = {"labeled": labeled, "depth_only": depth_only, "size": [H, W], "seed": seed,
            "test_fraction": test_fraction, "n_train": int(labeled - n_test), "n_test": int(n_test),
            "format": "labelreg-synthetic-1"}
    write_text_atomic(p.marker, json.dumps(meta, indent=1) + "\n")
    return p
