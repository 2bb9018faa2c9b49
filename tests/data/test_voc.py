"""VOC 2012 / SBD reader on tiny trees written in the real layouts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from labelreg.palette import voc_palette
from labelreg.data.voc import VOC_CLASSES, VOCSegmentation

H, W = 5, 8


def save_jpg(path: Path, shape: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), 128, np.uint8)).save(path, quality=95)


def save_label_png(path: Path, label: np.ndarray) -> None:
    """A palette PNG like VOC's: pixel values are class indices, colours from the palette."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path)


def save_sbd_mat(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"GTcls": {"Segmentation": label.astype(np.uint8),
                                           "Boundaries": np.zeros((20, 1), object),
                                           "CategoriesPresent": np.unique(label)}})


def make_voc(root: Path, ids: dict[str, list[str]], labelled: list[str]) -> Path:
    """``root/VOCdevkit/VOC2012`` with split lists, a JPEG per listed id, PNGs for ``labelled``."""
    voc = root / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    for split, names in ids.items():
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        for n in names:
            save_jpg(voc / "JPEGImages" / f"{n}.jpg")
    for k, n in enumerate(labelled):
        label = np.zeros((H, W), np.uint8)
        label[1, 2] = k + 1
        label[-1, :] = 255  # void border
        save_label_png(voc / "SegmentationClass" / f"{n}.png", label)
    return voc


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return make_voc(tmp_path, {"train": ["a", "b"], "val": ["c"], "trainval": ["a", "b", "c"]},
                    labelled=["a", "b", "c"])


def test_palette_index_not_colour(voc: Path) -> None:
    label = np.zeros((H, W), np.uint8)
    label[3, 6] = 15  # 'person', drawn (192, 128, 128) by the palette
    save_label_png(voc / "SegmentationClass" / "a.png", label)
    assert tuple(Image.open(voc / "SegmentationClass" / "a.png").convert("RGB").getpixel((6, 3))) \
        == tuple(voc_palette()[15])
    s = VOCSegmentation(voc, "train")[0]
    assert s["label"].dtype == torch.int64 and s["label"].shape == (H, W)
    assert s["label"][3, 6] == 15 and s["label"].sum() == 15
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, H, W)
    assert s["name"] == "a" and s["index"] == 0 and s["labeled"] is True


def test_splits_ignore_and_attributes(voc: Path) -> None:
    ds = VOCSegmentation(voc, "trainval")
    assert ds.num_classes == 21 and ds.class_names == VOC_CLASSES and len(VOC_CLASSES) == 21
    assert VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"
    assert [s["name"] for s in ds] == ["a", "b", "c"]
    s = VOCSegmentation(voc, "val")[0]
    assert s["label"][1, 2] == 3 and (s["label"][-1] == 255).all()
    ds = VOCSegmentation(voc, "train", transform=lambda s: {**s, "label": s["label"] * 0})
    assert ds[1]["label"].sum() == 0


@pytest.mark.parametrize("level", ["VOC2012", "VOCdevkit", "parent"])
def test_root_resolution(voc: Path, level: str) -> None:
    root = {"VOC2012": voc, "VOCdevkit": voc.parent, "parent": voc.parent.parent}[level]
    assert VOCSegmentation(root, "train").root == voc


def test_root_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"JPEGImages.*tried.*VOCdevkit/VOC2012"):
        VOCSegmentation(tmp_path / "nowhere", "train")


def test_trainaug_union_minus_val(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"train": ["v_tr1", "v_tr2", "shared"], "val": ["v_val", "s_in_val"]},
                   labelled=["v_tr1", "v_tr2", "shared", "v_val", "s_in_val"])
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    sbd_ids = {"train.txt": ["s1", "shared", "s_in_val"], "val.txt": ["s2", "s1"]}
    for fname, names in sbd_ids.items():
        (sbd / "cls").mkdir(parents=True, exist_ok=True)
        (sbd / fname).write_text("\n".join(names) + "\n")
    for k, n in enumerate(["s1", "s2", "shared", "s_in_val"]):
        save_jpg(sbd / "img" / f"{n}.jpg")
        save_sbd_mat(sbd / "cls" / f"{n}.mat", np.full((H, W), 10 + k, np.uint8))

    for sbd_root in (sbd, sbd.parent, sbd.parent.parent):
        ds = VOCSegmentation(voc.parent.parent, "trainaug", sbd_root=sbd_root)
        assert ds.ids == ["s1", "s2", "shared", "v_tr1", "v_tr2"]  # sorted, no dups, no VOC val

    by_name = {s["name"]: s for s in ds}
    assert (by_name["s1"]["label"] == 10).all() and (by_name["s2"]["label"] == 11).all()
    assert by_name["s2"]["image"].shape == (3, H, W)  # image from SBD img/
    # 'shared' has a VOC PNG: it wins over the SBD .mat (value 12), void border included.
    shared = by_name["shared"]["label"]
    assert shared[1, 2] == 3 and (shared[-1] == 255).all() and not (shared == 12).any()

    with pytest.raises(ValueError, match="trainaug.*sbd_root"):
        VOCSegmentation(voc, "trainaug")
    with pytest.raises(FileNotFoundError, match=r"SBD.*cls"):
        VOCSegmentation(voc, "trainaug", sbd_root=tmp_path / "nosbd")


def test_sbd_mat_without_struct(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"train": [], "val": []}, labelled=[])
    sbd = tmp_path / "sbd"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("x\n")
    (sbd / "val.txt").write_text("")
    save_jpg(sbd / "img" / "x.jpg")
    scipy.io.savemat(str(sbd / "cls" / "x.mat"), {"Segmentation": np.zeros((H, W), np.uint8)})
    with pytest.raises(ValueError, match=r"x\.mat: expected struct GTcls"):
        VOCSegmentation(voc, "trainaug", sbd_root=sbd)[0]


def test_label_errors(voc: Path) -> None:
    ds = VOCSegmentation(voc, "trainval")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(voc / "SegmentationClass" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: label PNGs must be palette/indexed; got RGB"):
        ds[0]
    bad = np.zeros((H, W), np.uint8)
    bad[0, 0] = 21
    save_label_png(voc / "SegmentationClass" / "b.png", bad)
    with pytest.raises(ValueError, match=r"b\.png: label values \[21\]"):
        ds[1]
    save_label_png(voc / "SegmentationClass" / "c.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ValueError, match=r"index 2: image .*c\.jpg.* label .*c\.png"):
        ds[2]


def test_missing_files(voc: Path) -> None:
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Segmentation/val\.txt"):
        VOCSegmentation(voc, "val")
    with pytest.raises(ValueError, match="split must be"):
        VOCSegmentation(voc, "test")
    ds = VOCSegmentation(voc, "train")
    (voc / "JPEGImages" / "a.jpg").unlink()
    (voc / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/a\.jpg"):
        ds[0]
    with pytest.raises(FileNotFoundError, match=r"SegmentationClass/b\.png"):
        ds[1]
