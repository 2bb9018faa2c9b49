"""NYUv2 readers on tiny files written in the real layouts (MATLAB v7.3 = HDF5)."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader

from labelreg.data.nyu import (NYU40_CLASSES, NYUv2DepthOnly, NYUv2Labeled,
                               load_class_mapping, load_splits)

META = Path(__file__).resolve().parents[3] / "shared" / "data" / "nyuv2-meta"
needs_meta = pytest.mark.skipif(not (META / "splits.mat").is_file()
                                or not (META / "classMapping40.mat").is_file(),
                                reason=f"real NYUv2 meta files not found in {META}")

N, H, W, R = 3, 7, 10, 30  # odd, non-square frames and a short synthetic mapping
MARK = (2, 8)  # (row, col) of the marker pixel in the H×W frame


def write_labeled_mat(path: Path, images: np.ndarray, depths: np.ndarray,
                      labels: np.ndarray) -> None:
    """Write N×H×W(×3) arrays as MATLAB v7.3 does: HDF5 with reversed dims, 512-byte userblock."""
    with h5py.File(path, "w", userblock_size=512) as f:
        f["images"] = images.transpose(0, 3, 2, 1)  # N×H×W×3 → N×3×W×H
        f["depths"] = depths.transpose(0, 2, 1)
        f["labels"] = labels.transpose(0, 2, 1)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")


def frames() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H×W frames with a marker at MARK: image (N,H,W,3) uint8, depth, raw labels uint16."""
    images = np.zeros((N, H, W, 3), np.uint8)
    depths = np.full((N, H, W), 2.5, np.float32)
    labels = np.ones((N, H, W), np.uint16)  # raw id 1
    for n in range(N):
        images[n][MARK] = (200 + n, 100, 50)
        depths[n][MARK] = 7.0 + n
        labels[n][MARK] = 5
    labels[:, 0, 0] = 0          # unlabeled → ignore
    depths[:, 0, 1] = np.nan     # invalid readings → 0
    depths[:, 0, 2] = 0.0
    depths[:, 0, 3] = -1.0
    depths[:, 0, 4] = np.inf
    return images, depths, labels


def write_mapping(path: Path, map_class: np.ndarray) -> None:
    names = np.empty((1, 40), dtype=object)
    for k in range(40):
        names[0, k] = f"class{k + 1}"
    scipy.io.savemat(str(path), {"mapClass": map_class.reshape(1, -1).astype(np.uint8),
                                 "className": names})


def write_splits(path: Path, train: list[int], test: list[int]) -> None:
    scipy.io.savemat(str(path), {"trainNdxs": np.array(train, np.uint16).reshape(-1, 1),
                                 "testNdxs": np.array(test, np.uint16).reshape(-1, 1)})


# Synthetic mapping: raw k → 40-class (k % 40) + 1, so raw 5 → 0-based 5, raw 1 → 1.
MAP_CLASS = (np.arange(1, R + 1) % 40) + 1


@pytest.fixture
def nyu_dir(tmp_path: Path) -> Path:
    write_labeled_mat(tmp_path / "nyu_depth_v2_labeled.mat", *frames())
    write_mapping(tmp_path / "classMapping40.mat", MAP_CLASS)
    write_splits(tmp_path / "splits.mat", train=[3, 1], test=[2])
    return tmp_path


def test_orientation_dtypes_and_mapping(nyu_dir: Path) -> None:
    ds = NYUv2Labeled(nyu_dir / "nyu_depth_v2_labeled.mat", "all")
    assert len(ds) == N and ds.num_classes == 40 and len(ds.class_names) == 40
    for n in range(N):
        s = ds[n]
        assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, H, W)
        assert s["label"].dtype == torch.int64 and s["label"].shape == (H, W)
        assert s["depth"].dtype == torch.float32 and s["depth"].shape == (H, W)
        r, c = MARK
        assert s["image"][:, r, c].tolist() == [200 + n, 100, 50]
        assert s["image"].sum() == 350 + n  # the marker is the only non-zero pixel
        assert s["depth"][r, c] == 7.0 + n
        assert s["label"][r, c] == 5                 # raw 5 → (5 % 40 + 1) - 1
        assert s["label"][0, 0] == 255               # raw 0 → ignore
        assert (s["label"] == 5).nonzero().tolist() == [list(MARK)]
        assert (s["label"] == 1).sum() == H * W - 2  # raw 1 → 1 everywhere else
        assert (s["depth"] == 7.0 + n).nonzero().tolist() == [list(MARK)]
        assert s["depth"][0, 1:5].tolist() == [0, 0, 0, 0]  # NaN, 0, -1, inf → 0
        assert s["labeled"] is True and s["index"] == n and s["name"] == f"nyu_{n + 1:04d}"


def test_splits_indices_and_transform(nyu_dir: Path) -> None:
    mat = nyu_dir / "nyu_depth_v2_labeled.mat"
    train = NYUv2Labeled(mat, "train")
    assert [train[i]["name"] for i in range(len(train))] == ["nyu_0003", "nyu_0001"]
    assert train[0]["image"][0, MARK[0], MARK[1]] == 202  # frame 3, not frame 1
    assert [s["name"] for s in NYUv2Labeled(mat, "test")] == ["nyu_0002"]
    sub = NYUv2Labeled(mat, "train", indices=[1])
    assert len(sub) == 1 and sub[0]["name"] == "nyu_0001" and sub[0]["index"] == 0
    flip = NYUv2Labeled(mat, "all", transform=lambda s: {**s, "name": s["name"] + "!"})
    assert flip[0]["name"] == "nyu_0001!"
    with pytest.raises(IndexError, match="index 2 out of range for 2 samples"):
        train[2]


def test_lazy_open_pickle_and_workers(nyu_dir: Path) -> None:
    ds = NYUv2Labeled(nyu_dir / "nyu_depth_v2_labeled.mat", "all")
    assert ds._h5 is None  # nothing held open after construction
    ds[0]
    assert ds._h5 is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None and clone[1]["name"] == "nyu_0002"
    handle = ds._h5
    ds._pid = -1  # as a forked child sees it: the inherited handle belongs to another pid
    assert ds._file() is not handle and ds._pid > 0
    # The parent already holds a handle: forked workers must open their own.
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork")
    names = [n for batch in loader for n in batch["name"]]
    assert names == ["nyu_0001", "nyu_0002", "nyu_0003"]


def test_load_class_mapping_synthetic(nyu_dir: Path) -> None:
    lut, names = load_class_mapping(nyu_dir / "classMapping40.mat")
    assert lut.dtype == np.int64 and lut.shape == (R + 1,)
    assert lut[0] == 255 and lut[1:].tolist() == (MAP_CLASS - 1).tolist()
    assert names[0] == "class1" and len(names) == 40
    # className saved as a char matrix (savemat of a list of str) reads back the same.
    scipy.io.savemat(str(nyu_dir / "chars.mat"), {"mapClass": MAP_CLASS.reshape(1, -1),
                                                 "className": list(NYU40_CLASSES)})
    assert load_class_mapping(nyu_dir / "chars.mat")[1] == NYU40_CLASSES


@needs_meta
def test_real_class_mapping() -> None:
    lut, names = load_class_mapping(META / "classMapping40.mat")
    assert lut.shape == (895,) and lut[0] == 255
    assert lut[1:].min() == 0 and lut[1:].max() == 39
    assert names == NYU40_CLASSES
    all_names = [str(c[0]) for c in scipy.io.loadmat(str(META / "classMapping40.mat"))["allClassName"][0]]
    assert lut[all_names.index("wall") + 1] == 0
    assert lut[all_names.index("floor") + 1] == 1


@needs_meta
def test_real_splits() -> None:
    splits = load_splits(META / "splits.mat")
    train, test = splits["train"], splits["test"]
    assert train.dtype == np.int64 and (len(train), len(test)) == (795, 654)
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(1449))


@needs_meta
def test_real_mapping_on_dataset(tmp_path: Path) -> None:
    images, depths, labels = frames()
    labels[:] = 21  # raw 21 is 'wall' in allClassName (1-based)
    labels[:, 0, 0] = 0
    labels[0][MARK] = 894  # the largest raw id the real mapping knows
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    write_labeled_mat(mat, images, depths, labels)
    ds = NYUv2Labeled(mat, "all", mapping_path=META / "classMapping40.mat")
    lut, _ = load_class_mapping(META / "classMapping40.mat")
    s = ds[0]
    assert s["label"][0, 0] == 255 and s["label"][1, 1] == 0
    assert s["label"][MARK] == lut[894]
    assert ds.class_names[0] == "wall"
    # The real splits reference 1449 frames; this file has 3 → error names file, key, index.
    with pytest.raises(ValueError, match=r"splits\.mat: (trainNdxs|testNdxs) holds index \d+"):
        NYUv2Labeled(mat, "train", splits_path=META / "splits.mat", mapping_path=META / "classMapping40.mat")


# ---- errors -----------------------------------------------------------------------

def test_missing_and_non_hdf5_mat(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        NYUv2Labeled(tmp_path / "nope.mat", "all")
    v5 = tmp_path / "old_v5.mat"
    scipy.io.savemat(str(v5), {"images": np.zeros((1, 3, 4, 5), np.uint8)})
    with pytest.raises(ValueError, match=r"old_v5\.mat: not a MATLAB v7\.3/HDF5 file"):
        NYUv2Labeled(v5, "all")


def test_missing_dataset_and_bad_shapes(nyu_dir: Path) -> None:
    mat = nyu_dir / "broken.mat"
    images, depths, labels = frames()
    with h5py.File(mat, "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)
        f["labels"] = labels.transpose(0, 2, 1)
    with pytest.raises(ValueError, match=r"broken\.mat.*depths"):
        NYUv2Labeled(mat, "all")
    with h5py.File(mat, "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)
        f["labels"] = labels.transpose(0, 2, 1)
        f["depths"] = depths  # left in H×W order: shape no longer matches images
    with pytest.raises(ValueError, match=r"broken\.mat: depths has shape"):
        NYUv2Labeled(mat, "all")
    with h5py.File(mat, "w") as f:
        f["images"] = images  # N×H×W×3 without the transpose
        f["labels"] = labels
        f["depths"] = depths
    with pytest.raises(ValueError, match=r"broken\.mat: images must be N×3×W×H"):
        NYUv2Labeled(mat, "all")


def test_split_errors(nyu_dir: Path) -> None:
    mat = nyu_dir / "nyu_depth_v2_labeled.mat"
    with pytest.raises(ValueError, match="split must be"):
        NYUv2Labeled(mat, "val")
    with pytest.raises(FileNotFoundError, match="other_splits.mat"):
        NYUv2Labeled(mat, "train", splits_path=nyu_dir / "other_splits.mat")
    scipy.io.savemat(str(nyu_dir / "nokey.mat"), {"trainNdxs": np.ones((1, 1), np.uint16)})
    with pytest.raises(ValueError, match=r"nokey\.mat: key 'testNdxs' missing"):
        load_splits(nyu_dir / "nokey.mat")
    write_splits(nyu_dir / "big.mat", train=[1, 4], test=[2])
    with pytest.raises(ValueError, match=r"big\.mat: trainNdxs holds index 4"):
        NYUv2Labeled(mat, "train", splits_path=nyu_dir / "big.mat")
    write_splits(nyu_dir / "zero.mat", train=[0], test=[2])
    with pytest.raises(ValueError, match=r"zero\.mat: trainNdxs holds index 0"):
        NYUv2Labeled(mat, "train", splits_path=nyu_dir / "zero.mat")
    with pytest.raises(ValueError, match="indices must lie"):
        NYUv2Labeled(mat, "train", indices=[2])


def test_mapping_errors(tmp_path: Path) -> None:
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    write_labeled_mat(mat, *frames())
    with pytest.raises(FileNotFoundError, match="classMapping40.mat"):
        NYUv2Labeled(mat, "all")
    with pytest.raises(FileNotFoundError, match="elsewhere.mat"):
        NYUv2Labeled(mat, "all", mapping_path=tmp_path / "elsewhere.mat")
    scipy.io.savemat(str(tmp_path / "nonames.mat"), {"mapClass": MAP_CLASS.reshape(1, -1)})
    with pytest.raises(ValueError, match=r"nonames\.mat: key 'className' missing"):
        load_class_mapping(tmp_path / "nonames.mat")


def test_raw_id_beyond_mapping(nyu_dir: Path) -> None:
    images, depths, labels = frames()
    labels[1][3, 3] = R + 1
    labels[1][4, 4] = R + 7
    mat = nyu_dir / "nyu_depth_v2_labeled.mat"
    write_labeled_mat(mat, images, depths, labels)
    ds = NYUv2Labeled(mat, "all")
    ds[0]  # the other frames are fine
    with pytest.raises(ValueError, match=re.escape(f"nyu_depth_v2_labeled.mat: image 2 (1-based) "
                                                   f"has raw label id(s) [{R + 1}, {R + 7}]")):
        ds[1]


# ---- depth-only frames -------------------------------------------------------------

def write_h5_frame(path: Path, rgb: np.ndarray, depth: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f["rgb"], f["depth"] = rgb, depth


def test_depth_only_h5_folder(tmp_path: Path) -> None:
    for k, name in enumerate(["b.h5", "a.hdf5"]):
        rgb = np.zeros((3, H, W), np.uint8)
        rgb[:, MARK[0], MARK[1]] = 10 + k
        depth = np.full((H, W), 1.5, np.float32)
        depth[0, 0], depth[0, 1] = np.nan, -2.0
        write_h5_frame(tmp_path / name, rgb, depth)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = NYUv2DepthOnly(tmp_path)
    assert len(ds) == 2 and ds.num_classes == 40 and len(ds.class_names) == 40
    s = ds[0]
    assert s["name"] == "a" and s["index"] == 0 and s["labeled"] is False
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, H, W)
    assert s["image"][:, MARK[0], MARK[1]].tolist() == [11, 11, 11]
    assert s["label"].dtype == torch.int64 and (s["label"] == 255).all()
    assert s["depth"].dtype == torch.float32 and s["depth"][0, :3].tolist() == [0, 0, 1.5]
    assert [b for batch in DataLoader(ds, batch_size=1, num_workers=2) for b in batch["name"]] == ["a", "b"]


def test_depth_only_png_list(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[MARK] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "frames" / "f1.jpg.png")
    Image.fromarray(rgb).save(tmp_path / "frames" / "f2.png")
    depth = np.full((H, W), 1234, np.uint16)
    depth[0, 0] = 0
    depth[MARK] = 65535
    Image.fromarray(depth).save(tmp_path / "frames" / "d1.png")
    Image.fromarray(depth).save(tmp_path / "frames" / "d2.png")
    lst = tmp_path / "list.csv"
    lst.write_text("# rgb,depth\nframes/f1.jpg.png, frames/d1.png\n\n"
                   f"{tmp_path / 'frames' / 'f2.png'}   frames/d2.png  # absolute + spaces\n")
    ds = NYUv2DepthOnly(lst, depth_scale=1000.0)
    assert len(ds) == 2
    s = ds[1]
    assert s["name"] == "f2" and s["labeled"] is False
    assert s["image"][:, MARK[0], MARK[1]].tolist() == [1, 2, 3]
    assert s["depth"].dtype == torch.float32
    assert s["depth"][0, 0] == 0 and s["depth"][1, 1] == pytest.approx(1.234)
    assert s["depth"][MARK] == pytest.approx(65.535)
    assert NYUv2DepthOnly(lst, depth_scale=5000.0)[0]["depth"][1, 1] == pytest.approx(1234 / 5000)


def expect_errors(dataset, errors: list[tuple[type[Exception], str]], start: int = 0) -> None:
    """``dataset[start + k]`` raises ``errors[k]`` = (exception type, message pattern)."""
    for index, (error, pattern) in enumerate(errors, start):
        with pytest.raises(error, match=pattern):
            dataset[index]


def test_depth_only_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent_dir"):
        NYUv2DepthOnly(tmp_path / "absent_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        NYUv2DepthOnly(tmp_path / "empty")

    h5dir = tmp_path / "h5"
    h5dir.mkdir()
    rgb, depth = np.zeros((3, H, W), np.uint8), np.ones((H, W), np.float32)
    write_h5_frame(h5dir / "0_ok.h5", rgb, depth)
    write_h5_frame(h5dir / "1_mm.h5", rgb, depth.astype(np.uint16))
    write_h5_frame(h5dir / "2_size.h5", rgb, depth[:, :-1])
    write_h5_frame(h5dir / "3_hwc.h5", rgb.transpose(1, 2, 0), depth)
    with h5py.File(h5dir / "4_nokey.h5", "w") as f:
        f["rgb"] = rgb
    ds = NYUv2DepthOnly(h5dir)
    ds[0]
    expect_errors(ds, [(ValueError, r"1_mm\.h5 \(index 1\): depth must be float"),
                       (ValueError, r"2_size\.h5 \(index 2\): depth must be"),
                       (ValueError, r"3_hwc\.h5 \(index 3\): rgb must be 3×H×W"),
                       (ValueError, r"4_nokey\.h5 \(index 4\): dataset 'depth' missing")], start=1)
    (h5dir / "0_ok.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"0_ok\.h5"):
        ds[0]

    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((H, W + 1), np.uint16)).save(tmp_path / "wide16.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "depth8.png")
    lst = tmp_path / "pairs.txt"
    lst.write_text("rgb.png missing_depth.png\nrgb.png wide16.png\nrgb.png depth8.png\n")
    expect_errors(NYUv2DepthOnly(lst), [(FileNotFoundError, r"missing_depth\.png"),
                                        (ValueError, r"index 1: size mismatch, .*rgb\.png.*wide16\.png"),
                                        (ValueError, r"depth8\.png \(index 2\): depth PNG must be 16-bit")])
    bad = tmp_path / "bad.txt"
    bad.write_text("a.png b.png c.png\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: expected"):
        NYUv2DepthOnly(bad)
    (tmp_path / "blank.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match=r"blank\.txt: list .* is empty"):
        NYUv2DepthOnly(tmp_path / "blank.txt")


def test_empty_split_and_unreadable_files_name_the_file(nyu_dir: Path, tmp_path: Path) -> None:
    write_splits(nyu_dir / "splits.mat", train=[], test=[2])
    with pytest.raises(ValueError, match=r"splits\.mat: split 'train' \(trainNdxs\) lists no images"):
        NYUv2Labeled(nyu_dir / "nyu_depth_v2_labeled.mat", "train")
    mat = nyu_dir / "nyu_depth_v2_labeled.mat"
    mat.write_bytes(mat.read_bytes()[:1024])  # truncated download
    with pytest.raises(ValueError, match=rf"{re.escape(str(mat))}: cannot read this HDF5 file .*truncated"):
        NYUv2Labeled(mat, "test")
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    write_h5_frame(frames_dir / "a.h5", np.zeros((3, H, W), np.uint8), np.ones((H, W), np.float32))
    (frames_dir / "a.h5").write_bytes((frames_dir / "a.h5").read_bytes()[:600])
    with pytest.raises(ValueError, match=r"a\.h5 \(depth-only frame 0\): cannot read it .*truncated"):
        NYUv2DepthOnly(frames_dir)[0]
