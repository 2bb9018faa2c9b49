"""Synthetic rooms written in the real NYUv2 / VOC formats (labelreg.data.synthetic)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from labelreg.config import config_from_dict
from labelreg.data import synthetic as S
from labelreg.data.build import build_dataset
from labelreg.data.nyu import NYU40_CLASSES
from labelreg.palette import voc_palette

N_LAB, N_DEPTH, SIZE = 6, 4, (64, 80)
H, W = SIZE


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    paths = S.write_synthetic_dataset(root, labeled=N_LAB, depth_only=N_DEPTH, size=SIZE, seed=3,
                                      test_fraction=0.5, progress=False)
    return paths


def _read_mat(path):
    with h5py.File(path, "r") as fh:
        return {k: fh[k][()] for k in ("images", "depths", "labels")}, {
            k: fh[k].attrs["MATLAB_class"] for k in ("images", "depths", "labels")}


# --------------------------------------------------------------------------- class tables

def test_class_tables():
    assert len(S.NYU40_CLASS_NAMES) == 40
    assert S.NYU40_CLASS_NAMES[:3] == ["wall", "floor", "cabinet"]
    assert S.NYU40_CLASS_NAMES[21] == "ceiling" and S.NYU40_CLASS_NAMES[-1] == "otherprop"
    assert S.RAW_TO_NYU40.dtype == np.uint8 and len(S.RAW_TO_NYU40) == len(S.RAW_NAMES)
    assert S.RAW_TO_NYU40.min() >= 1 and S.RAW_TO_NYU40.max() <= 40
    assert len(set(S.RAW_NAMES)) == len(S.RAW_NAMES)
    # several raw names share one 40-class id, like real NYUv2
    assert len(set(S.RAW_TO_NYU40.tolist())) < len(S.RAW_NAMES)
    used = {S.NYU40_CLASS_NAMES[c - 1] for c in S.RAW_TO_NYU40}
    for name in ("wall", "floor", "ceiling", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
                 "picture", "cabinet", "lamp", "pillow", "television", "night stand", "box", "otherprop"):
        assert name in used, name
    assert S.NYU40_CLASS_NAMES is NYU40_CLASSES  # one list, shared with the NYUv2 reader


def test_raw_to_voc():
    assert S.RAW_TO_VOC.dtype == np.uint8 and S.RAW_TO_VOC.shape == (len(S.RAW_NAMES),)
    assert S.RAW_TO_VOC.max() <= 20
    voc = dict(zip(S.RAW_NAMES, S.RAW_TO_VOC.tolist()))
    assert (voc["chair"], voc["office chair"], voc["sofa"], voc["couch"], voc["television"], voc["person"]) == (
        9, 9, 18, 18, 20, 15)
    assert voc["table"] == voc["coffee table"] == voc["dining table"] == 11
    # direct from raw names: plants and bottles are VOC objects although both are "otherprop"
    assert voc["plant"] == 16 and voc["bottle"] == 5
    assert voc["vase"] == voc["cup"] == voc["tv stand"] == 0
    assert voc["wall"] == voc["floor"] == voc["bed"] == voc["cabinet"] == 0
    assert set(voc.values()) == {0, 5, 9, 11, 15, 16, 18, 20}


# --------------------------------------------------------------------------- rendering

def test_render_scene_outputs():
    sc = S.render_scene(np.random.default_rng(0), size=SIZE)
    assert sc["rgb"].shape == (H, W, 3) and sc["rgb"].dtype == np.uint8
    assert sc["depth"].shape == (H, W) and sc["depth"].dtype == np.float32
    assert sc["raw_label"].shape == (H, W) and sc["raw_label"].dtype == np.uint16
    assert np.isfinite(sc["depth"]).all() and (sc["depth"] > 0).all()
    assert sc["depth"].max() < 15.0
    assert sc["raw_label"].max() <= len(S.RAW_NAMES)
    assert sc["rgb"].std() > 5  # not a flat image


def test_render_deterministic_and_seed_dependent():
    a = S.render_scene(np.random.default_rng([7, 1, 0]), size=SIZE)
    b = S.render_scene(np.random.default_rng([7, 1, 0]), size=SIZE)
    c = S.render_scene(np.random.default_rng([8, 1, 0]), size=SIZE)
    for k in ("rgb", "depth", "raw_label"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["rgb"], c["rgb"])


def test_occlusion_consistent_with_depth():
    """Every object pixel is in front of the empty room behind it; room pixels are the room."""
    wall, floor, ceiling = (S.RAW_NAMES.index(n) + 1 for n in ("wall", "floor", "ceiling"))
    n_obj_pixels, max_gap = 0, 0.0
    for i in range(8):
        sc = S.render_scene(np.random.default_rng([11, 1, i]), size=SIZE)
        depth, room, raw = sc["depth"], sc["room_depth"], sc["raw_label"]
        assert (depth <= room + 1e-5).all()
        structure = np.isin(raw, [wall, floor, ceiling])
        obj = ~structure
        n_obj_pixels += int(obj.sum())
        # room-surface pixels show the room itself (nothing in front)...
        np.testing.assert_allclose(depth[structure], room[structure], rtol=1e-5)
        # ...and object pixels carry their own depth, strictly nearer than the surface behind
        # them (z-buffer); objects touching a wall may be only millimetres in front of it
        assert (depth[obj] < room[obj]).all()
        if obj.any():
            max_gap = max(max_gap, float((room[obj] - depth[obj]).max()))
    assert n_obj_pixels > 0 and max_gap > 0.5  # free-standing furniture is well in front of the walls


def test_object_classes_appear_over_scenes():
    seen = set()
    for i in range(25):
        raw = S.render_scene(np.random.default_rng([5, 1, i]), size=SIZE)["raw_label"]
        seen |= {int(S.RAW_TO_NYU40[r - 1]) for r in np.unique(raw) if r > 0}
    names = {S.NYU40_CLASS_NAMES[c - 1] for c in seen}
    for name in ("wall", "floor", "bed", "chair", "table", "picture"):
        assert name in names, (name, names)
    assert len(names) >= 12


def test_pottedplant_in_voc_labels():
    plants = 0
    for i in range(25):
        sc = S.render_scene(np.random.default_rng([5, 1, i]), size=SIZE)
        voc = S.voc_label(sc["raw_label"], sc["instance"])
        plants += bool((voc == 16).any())
    assert plants >= 2


def test_voc_label_band():
    raw = np.zeros((10, 12), np.uint16)
    inst = np.ones((10, 12), np.int32)
    raw[:] = S.RAW_NAMES.index("wall") + 1
    raw[3:7, 4:9] = S.RAW_NAMES.index("chair") + 1
    inst[3:7, 4:9] = 2
    raw[0, 0] = 0  # unlabeled
    inst[0, 0] = 3
    voc = S.voc_label(raw, inst)
    assert voc[0, 0] == 255
    assert voc[5, 6] == 9  # chair interior (2 px from the edge)
    assert voc[3, 4] == 255 and voc[2, 4] == 255  # band on both sides of the boundary
    assert voc[9, 11] == 0 and voc[1, 1] == 0  # background far from objects
    assert voc[0, 1] == 0  # no band around unlabeled/background pairs


# --------------------------------------------------------------------------- files

def test_paths_and_exists(ds, tmp_path):
    p = S.synthetic_paths(ds.root)
    assert p == ds
    assert p.voc_root == ds.root / "VOCdevkit" / "VOC2012"
    assert S.dataset_exists(ds.root)
    assert not S.dataset_exists(tmp_path / "nothing")
    meta = json.loads((ds.root / ".complete").read_text())
    assert meta["labeled"] == N_LAB and meta["depth_only"] == N_DEPTH and meta["seed"] == 3


def test_marker_missing_means_incomplete(tmp_path):
    p = S.write_synthetic_dataset(tmp_path, labeled=2, depth_only=1, size=(32, 48), progress=False)
    assert S.dataset_exists(tmp_path)
    (p.depth_only_dir / "frame_00000.h5").unlink()
    assert not S.dataset_exists(tmp_path)
    S.write_synthetic_dataset(tmp_path, labeled=2, depth_only=1, size=(32, 48), progress=False)
    assert S.dataset_exists(tmp_path)
    (tmp_path / ".complete").unlink()
    assert not S.dataset_exists(tmp_path)


def test_nyu_mat_layout(ds):
    raw = ds.nyu_mat.read_bytes()[:128]
    assert raw.startswith(b"MATLAB 7.3 MAT-file")
    assert raw[116:124] == b" " * 8 and raw[124:128] == b"\x00\x02IM"
    arrays, classes = _read_mat(ds.nyu_mat)
    assert arrays["images"].shape == (N_LAB, 3, W, H) and arrays["images"].dtype == np.uint8
    assert arrays["depths"].shape == (N_LAB, W, H) and arrays["depths"].dtype == np.float32
    assert arrays["labels"].shape == (N_LAB, W, H) and arrays["labels"].dtype == np.uint16
    assert classes == {"images": b"uint8", "depths": b"single", "labels": b"uint16"}
    with h5py.File(ds.nyu_mat, "r") as fh:
        assert fh.userblock_size == 512
        assert fh["images"].chunks == (1, 3, W, H)
    d = arrays["depths"]
    assert np.isfinite(d).all() and (d > 0).all()
    labels = arrays["labels"]
    assert labels.max() <= len(S.RAW_NAMES)
    # the .mat holds exactly the rendered scenes, column-major
    sc = S.render_scene(np.random.default_rng([3, 1, 2]), size=SIZE)
    np.testing.assert_array_equal(arrays["images"][2].transpose(0, 2, 1), sc["rgb"].transpose(2, 0, 1))
    np.testing.assert_array_equal(arrays["depths"][2].T, sc["depth"])
    np.testing.assert_array_equal(arrays["labels"][2].T, sc["raw_label"])


def test_splits_and_mapping(ds):
    sp = scipy.io.loadmat(ds.splits)
    tr, te = sp["trainNdxs"], sp["testNdxs"]
    assert tr.dtype == np.uint16 and te.dtype == np.uint16
    assert tr.ndim == 2 and tr.shape[1] == 1 and te.shape[1] == 1
    assert tr.shape[0] == 3 and te.shape[0] == 3  # test_fraction 0.5
    for x in (tr, te):
        assert (np.diff(x[:, 0].astype(int)) > 0).all()
    assert not set(tr[:, 0]) & set(te[:, 0])
    assert sorted(set(tr[:, 0]) | set(te[:, 0])) == list(range(1, N_LAB + 1))
    assert sp["__header__"].startswith(b"MATLAB 5.0 MAT-file")

    mp = scipy.io.loadmat(ds.mapping)
    assert mp["mapClass"].dtype == np.uint8 and mp["mapClass"].shape == (1, len(S.RAW_NAMES))
    np.testing.assert_array_equal(mp["mapClass"][0], S.RAW_TO_NYU40)
    assert mp["className"].shape == (1, 40)
    assert [str(c[0]) for c in mp["className"][0]] == S.NYU40_CLASS_NAMES
    assert [str(c[0]) for c in mp["allClassName"][0]] == S.RAW_NAMES


def test_depth_only_frames(ds):
    files = sorted(ds.depth_only_dir.glob("*.h5"))
    assert [f.name for f in files] == [f"frame_{i:05d}.h5" for i in range(N_DEPTH)]
    with h5py.File(files[1], "r") as fh:
        assert set(fh.keys()) == {"rgb", "depth"}
        rgb, depth = fh["rgb"][()], fh["depth"][()]
    assert rgb.shape == (3, H, W) and rgb.dtype == np.uint8
    assert depth.shape == (H, W) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth > 0).all()
    sc = S.render_scene(np.random.default_rng([3, 2, 1]), size=SIZE)
    np.testing.assert_array_equal(rgb, sc["rgb"].transpose(2, 0, 1))
    np.testing.assert_array_equal(depth, sc["depth"])


def test_voc_tree(ds):
    seg = ds.voc_root / "ImageSets" / "Segmentation"
    train = seg.joinpath("train.txt").read_text().split()
    val = seg.joinpath("val.txt").read_text().split()
    trainval = seg.joinpath("trainval.txt").read_text().split()
    assert sorted(train + val) == sorted(trainval) and len(trainval) == N_LAB
    sp = scipy.io.loadmat(ds.splits)
    assert train == [f"synth_{i - 1:06d}" for i in sp["trainNdxs"][:, 0]]
    assert val == [f"synth_{i - 1:06d}" for i in sp["testNdxs"][:, 0]]

    arrays, _ = _read_mat(ds.nyu_mat)
    band_total = 0
    for i, name in enumerate(trainval):
        img = Image.open(ds.voc_root / "JPEGImages" / f"{name}.jpg")
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (W, H)
        # JPEG of the same picture as the .mat
        rgb = np.asarray(img).astype(int)
        assert np.abs(rgb - arrays["images"][i].transpose(2, 1, 0)).mean() < 12
        lab = Image.open(ds.voc_root / "SegmentationClass" / f"{name}.png")
        assert lab.mode == "P" and lab.size == (W, H)
        assert np.array_equal(np.array(lab.getpalette()[:768], dtype=np.uint8).reshape(-1, 3), voc_palette())
        voc = np.asarray(lab)
        assert set(np.unique(voc).tolist()) <= set(range(21)) | {255}
        raw = arrays["labels"][i].T.astype(np.int64)
        mapped = np.where(raw > 0, S.RAW_TO_VOC[np.maximum(raw, 1) - 1], 255)
        band = voc == 255
        band_total += int((band & (raw > 0)).sum())
        # away from the void band the VOC label is RAW_TO_VOC of the raw label
        np.testing.assert_array_equal(voc[~band], mapped[~band])
        assert (voc[raw == 0] == 255).all()
    assert band_total > 0


def test_dataset_deterministic(tmp_path):
    kw = dict(labeled=3, depth_only=2, size=(32, 48), test_fraction=0.34, progress=False)
    a = S.write_synthetic_dataset(tmp_path / "a", seed=1, **kw)
    b = S.write_synthetic_dataset(tmp_path / "b", seed=1, **kw)
    c = S.write_synthetic_dataset(tmp_path / "c", seed=2, **kw)
    assert a.nyu_mat.read_bytes() == b.nyu_mat.read_bytes()
    assert a.splits.read_bytes() == b.splits.read_bytes()
    assert a.mapping.read_bytes() == b.mapping.read_bytes()
    for f in ("frame_00000.h5", "frame_00001.h5"):
        assert (a.depth_only_dir / f).read_bytes() == (b.depth_only_dir / f).read_bytes()
    pa = (a.voc_root / "SegmentationClass" / "synth_000001.png").read_bytes()
    assert pa == (b.voc_root / "SegmentationClass" / "synth_000001.png").read_bytes()
    ma, _ = _read_mat(a.nyu_mat)
    mc, _ = _read_mat(c.nyu_mat)
    assert not np.array_equal(ma["images"], mc["images"])
    # scene i does not depend on how many others were generated
    d = S.write_synthetic_dataset(tmp_path / "d", seed=1, labeled=2, depth_only=1, size=(32, 48), progress=False)
    md, _ = _read_mat(d.nyu_mat)
    np.testing.assert_array_equal(md["images"], ma["images"][:2])


def test_rewrite_smaller_removes_stale_files(tmp_path):
    S.write_synthetic_dataset(tmp_path, labeled=4, depth_only=3, size=(32, 48), progress=False)
    p = S.write_synthetic_dataset(tmp_path, labeled=2, depth_only=1, size=(32, 48), progress=False)
    assert len(list(p.depth_only_dir.glob("*.h5"))) == 1
    assert len(list((p.voc_root / "JPEGImages").glob("*.jpg"))) == 2
    assert len(list((p.voc_root / "SegmentationClass").glob("*.png"))) == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=(60, 80)), r"size must be two positive multiples of 16 \(height, width\), got \(60, 80\)"),
    (dict(size=(64, 0)), r"size must be two positive multiples of 16 \(height, width\), got \(64, 0\)"),
    (dict(size=(64,)), r"size must be a pair \(height, width\), got \(64,\)"),
    (dict(labeled=0), "labeled must be positive, got 0"),
    (dict(labeled=1), r"labeled must be at least 2 \(one train and one test scene\), got 1"),
    (dict(labeled=-3), "labeled must be positive, got -3"),
    (dict(depth_only=-1), "depth_only must be non-negative, got -1"),
    (dict(labeled=2.5), "labeled must be an integer, got 2.5"),
    (dict(test_fraction=0.0), r"test_fraction must be in \(0, 1\), got 0.0"),
    (dict(test_fraction=1.0), r"test_fraction must be in \(0, 1\), got 1.0"),
    (dict(seed=-1), "seed must be non-negative, got -1"),
])
def test_invalid_arguments(tmp_path, kwargs, message):
    args = dict(labeled=2, depth_only=0, size=(32, 48), progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        S.write_synthetic_dataset(tmp_path, **args)
    assert not S.dataset_exists(tmp_path)


def test_render_invalid_size():
    with pytest.raises(ValueError, match="multiples of 16"):
        S.render_scene(np.random.default_rng(0), size=(100, 160))


def test_writes_only_into_a_new_empty_or_own_folder(tmp_path):
    real = tmp_path / "real"
    (real / "nyu").mkdir(parents=True)
    (real / "nyu" / "nyu_depth_v2_labeled.mat").write_bytes(b"the real download")
    cfg = config_from_dict({"data": {"dataset": "nyu", "root": str(real), "synthesize_if_missing": True,
                                     "synth_labeled": 2, "synth_depth_only": 0, "synth_size": [32, 48]}})
    with pytest.raises(ValueError, match=r"real holds files the synthetic generator did not write \(nyu\)"):
        build_dataset(cfg.data, "train")
    assert (real / "nyu" / "nyu_depth_v2_labeled.mat").read_bytes() == b"the real download"
    assert sorted(p.name for p in real.iterdir()) == ["nyu"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        S.write_synthetic_dataset(tmp_path / "a_file", labeled=2, depth_only=0, size=(32, 48), progress=False)
    # its own folder, even interrupted (no completion marker), is rewritten
    own = S.write_synthetic_dataset(tmp_path / "own", labeled=2, depth_only=0, size=(32, 48), progress=False)
    own.marker.unlink()
    S.write_synthetic_dataset(tmp_path / "own", labeled=2, depth_only=0, size=(32, 48), progress=False)
    assert S.dataset_exists(tmp_path / "own")
