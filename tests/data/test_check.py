"""labelreg data check: the real CamVid and NYUv2 metadata in ../shared, and tiny written incomplete layouts."""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from labelreg.cli import main as cli_main
from labelreg.data.download.check import check_root, tree_sha256
from labelreg.data.download.sources import CAMVID_LIST_SHA256, SOURCES
from labelreg.cli_args import DATA_SETS

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CAMVID = SHARED / "camvid"
NYU_META = SHARED / "nyuv2-meta"
needs_shared = pytest.mark.skipif(not (CAMVID / "CamVid").is_dir() or not NYU_META.is_dir(),
                                  reason="../shared/data (CamVid, NYUv2 metadata) is not beside the checkout")


def by_name(statuses):
    return {status.name: status for status in statuses}


@needs_shared
def test_real_camvid_is_complete_and_the_others_absent(capsys):
    statuses = by_name(check_root(CAMVID))
    out = capsys.readouterr().out
    assert statuses["camvid"].state == "complete" and statuses["camvid"].folder == CAMVID / "CamVid"
    assert statuses["camvid"].advice == f"use it with: data.dataset=camvid data.root={CAMVID}"
    assert {name: s.state for name, s in statuses.items() if name != "camvid"} == dict.fromkeys(
        ("voc", "sbd", "nyu"), "absent")
    assert statuses["voc"].advice == f"get it with: labelreg data fetch voc --root {CAMVID}"
    for line in ("train: 367 images", "val: 101 images", "test: 233 images", "SHA-256 of SegNet's lists",
                 "all 701 listed labels present", "sizes (H×W) match: 360×480"):
        assert line in out
    assert "✗" not in out and "!" not in out


@needs_shared
def test_real_nyu_metadata_is_the_published_files_and_the_mat_is_missing(capsys):
    statuses = by_name(check_root(NYU_META, datasets=("nyu",)))
    out = capsys.readouterr().out
    assert statuses["nyu"].state == "incomplete"
    assert statuses["nyu"].advice == (f"missing {NYU_META / 'nyu_depth_v2_labeled.mat'}; complete it with: "
                                      f"labelreg data fetch nyu --root {NYU_META}")
    assert "splits.mat: MD5 of the published file" in out and "classMapping40.mat: MD5 of the published file" in out
    for remote in SOURCES["nyu"].remotes[1:]:  # the table's sizes are those of the real files
        assert (NYU_META / remote.filename).stat().st_size == remote.size


@needs_shared
def test_the_camvid_checksums_are_those_of_the_manifest():
    lines = (CAMVID / "MANIFEST.sha256").read_text().splitlines()
    ordered = sorted(lines, key=lambda line: line.split("  ", 1)[1])
    assert hashlib.sha256("".join(line + "\n" for line in ordered).encode()).hexdigest() == \
        SOURCES["camvid"].tree_sha256
    listed = dict(reversed(line.split("  ", 1)) for line in lines)
    assert {split: listed[f"CamVid/{split}.txt"] for split in CAMVID_LIST_SHA256} == CAMVID_LIST_SHA256


@pytest.mark.slow
@needs_shared
def test_the_real_camvid_files_hash_to_the_published_tree_digest():
    assert tree_sha256(CAMVID / "CamVid") == SOURCES["camvid"].tree_sha256


def test_tree_digest_is_that_of_a_sorted_sha256sum_listing(tmp_path):
    folder = tmp_path / "x"
    (folder / "test").mkdir(parents=True)
    (folder / "test.txt").write_bytes(b"list\n")
    (folder / "test" / "a.png").write_bytes(b"\x89PNG")
    first, second = hashlib.sha256(b"list\n").hexdigest(), hashlib.sha256(b"\x89PNG").hexdigest()
    listing = f"{first}  CamVid/test.txt\n{second}  CamVid/test/a.png\n"  # '.' sorts before '/'
    assert tree_sha256(folder) == hashlib.sha256(listing.encode()).hexdigest()


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_camvid(root: Path) -> Path:
    """Two 4×6 pairs per split, SegNet's list format."""
    folder = root / "CamVid"
    for split in ("train", "val", "test"):
        lines = []
        for i in range(2):
            name = f"0001TP_{split}{i}.png"
            save_png(folder / split / name, np.full((4, 6, 3), 40 * i, np.uint8))
            save_png(folder / f"{split}annot" / name, np.full((4, 6), i, np.uint8))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n")
        (folder / f"{split}.txt").write_text("".join(lines))
    return folder


def test_a_tiny_camvid_is_complete_with_warnings_for_its_sizes(tmp_path, capsys):
    write_camvid(tmp_path)
    assert by_name(check_root(tmp_path, datasets=("camvid",)))["camvid"].state == "complete"
    out = capsys.readouterr().out
    assert "train: 2 images in train.txt, not the standard 367" in out and "not SegNet's list(s)" in out
    assert "sizes (H×W) match: 4×6" in out


@pytest.mark.parametrize("damage, problem", [
    (lambda f: (f / "valannot" / "0001TP_val1.png").unlink(), "1 of 6 listed labels missing, e.g. "),
    (lambda f: save_png(f / "testannot" / "0001TP_test0.png", np.zeros((4, 5), np.uint8)),
     "1 pair(s) whose label is not a one-channel map of the image's size, e.g. 0001TP_test0: image (4, 6), "
     "label (4, 5)"),
    (lambda f: save_png(f / "trainannot" / "0001TP_train1.png", np.full((4, 6), 12, np.uint8)),
     "label values [12] outside 0..11"),
    (lambda f: (f / "test.txt").unlink(), "missing split list"),
    (lambda f: (f / "trainannot" / "0001TP_train0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated"),
     "0001TP_train0: cannot read"),
])
def test_an_incomplete_camvid_says_what_is_wrong(tmp_path, capsys, damage, problem):
    damage(write_camvid(tmp_path))
    status = by_name(check_root(tmp_path, datasets=("camvid",)))["camvid"]
    assert status.state == "incomplete" and problem in status.advice, status.advice
    assert status.advice.endswith(f"fix or move away {tmp_path / 'CamVid'} (fetch never changes files it did not "
                                  f"write), then: labelreg data fetch camvid --root {tmp_path}")


def write_voc_and_sbd(root: Path) -> tuple[Path, Path]:
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    for name in ("a", "b"):
        save_png(voc / "JPEGImages" / f"{name}.jpg", np.zeros((5, 7, 3), np.uint8))
        label = Image.frombytes("P", (7, 5), np.full((5, 7), 3, np.uint8).tobytes())
        (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        label.save(voc / "SegmentationClass" / f"{name}.png")
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, ids in (("train", "a"), ("val", "b"), ("trainval", "a\nb")):
        (lists / f"{split}.txt").write_text(ids + "\n")
    for name in ("c", "d", "b"):
        save_png(sbd / "img" / f"{name}.jpg", np.zeros((6, 8, 3), np.uint8))
        (sbd / "cls").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(sbd / "cls" / f"{name}.mat",
                         {"GTcls": {"Segmentation": np.full((6, 8), 2, np.uint8), "Boundaries": np.zeros(1)}})
    (sbd / "train.txt").write_text("c\nb\n")
    (sbd / "val.txt").write_text("d\n")
    return voc, sbd


def test_voc_and_sbd_layouts_with_trainaug(tmp_path, capsys):
    voc, sbd = write_voc_and_sbd(tmp_path)
    statuses = by_name(check_root(tmp_path, datasets=("voc", "sbd")))
    out = capsys.readouterr().out
    assert statuses["voc"].state == statuses["sbd"].state == "complete", out
    assert statuses["sbd"].advice == (f"use it with: data.dataset=voc data.root={tmp_path} data.sbd_root={tmp_path} "
                                      "data.train_split=trainaug")
    # trainaug = SBD train ∪ SBD val ∪ VOC train − VOC val = {a, c, d}
    assert "trainaug: 3 images in SBD train ∪ val ∪ VOC train − VOC val, not the standard 10582" in out

    (voc / "SegmentationClass" / "b.png").unlink()
    scipy.io.savemat(sbd / "cls" / "c.mat", {"GTcls": {"Segmentation": np.zeros((6, 9), np.uint8)}})
    statuses = by_name(check_root(tmp_path, datasets=("voc", "sbd")))
    assert statuses["voc"].state == "incomplete" and "1 of 2 listed labels (SegmentationClass/<id>.png) missing" \
        in statuses["voc"].advice
    assert statuses["sbd"].state == "incomplete" and "is 6×8 (H×W) but label" in statuses["sbd"].advice


def test_a_synthetic_data_set_reads_as_voc_and_nyu_with_warnings(tiny_synthetic, capsys):
    statuses = by_name(check_root(tiny_synthetic.root, datasets=("voc", "nyu"), sample=2))
    out = capsys.readouterr().out
    assert statuses["voc"].state == statuses["nyu"].state == "complete", out
    assert statuses["nyu"].folder == tiny_synthetic.root / "nyu"
    assert "splits.mat: not the published file" in out and "12 labeled images" in out


@needs_shared
def test_the_cli_exit_status_and_one_line_errors(tmp_path, capsys):
    assert cli_main(["data", "check", str(CAMVID), "--dataset", "camvid", "--sample", "2"]) == 0
    capsys.readouterr()
    assert cli_main(["data", "check", str(CAMVID), "--dataset", "camvid", "--dataset", "voc"]) == 2
    assert capsys.readouterr().err.strip() == (f"labelreg data: error: voc: not complete under {CAMVID} (details "
                                               "and what to do above)")
    assert cli_main(["data", "check", str(tmp_path)]) == 2
    assert "no data set under" in capsys.readouterr().err
    assert cli_main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().endswith("nowhere: no such folder (give the folder you fetched into, "
                                                    "e.g. data/real)")


def test_the_parser_lists_every_source_and_loads_without_torch():
    assert DATA_SETS == tuple(SOURCES)
    code = ("import sys, argparse; from labelreg.cli_args import add_data_parser; "
            "p = argparse.ArgumentParser(); add_data_parser(p.add_subparsers()); "
            "p.parse_args(['data', 'fetch', 'camvid', '--root', 'x']); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_copy_of_the_nyu_metadata_with_an_edited_split_warns(tmp_path, capsys):
    if not NYU_META.is_dir():
        pytest.skip("../shared/data/nyuv2-meta is not beside the checkout")
    shutil.copy(NYU_META / "classMapping40.mat", tmp_path / "classMapping40.mat")
    splits = scipy.io.loadmat(NYU_META / "splits.mat")
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": splits["trainNdxs"][:-1], "testNdxs": splits["testNdxs"]})
    check_root(tmp_path, datasets=("nyu",))
    out = capsys.readouterr().out
    assert "splits.mat: not the published file (MD5 differs)" in out and "classMapping40.mat: MD5 of the published" in out
