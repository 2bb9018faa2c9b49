"""NYUv2 checks: the labeled .mat's layout, the splits, the class mapping's coverage, depth, depth-only frames.

Used by ``labelreg data check`` and by ``scripts/check_nyu.py`` (``main`` below), which checks files given
one by one:

    python scripts/check_nyu.py --mat nyu_depth_v2_labeled.mat
    python scripts/check_nyu.py --mat nyu_depth_v2_labeled.mat --splits splits.mat \\
        --mapping classMapping40.mat --depth-only depth_frames/ --sample 20

``--splits``/``--mapping`` default to the files beside the .mat (as ``NYUv2Labeled`` looks for them). One
✓ (ok), ! (warning) or ✗ (error) line per check; exit status 1 on any error, 0 otherwise. Only a sample of
``--sample`` images (evenly spaced) is read, so the check takes seconds even on the full data.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from labelreg.data.download.report import Report, sample_positions
from labelreg.data.nyu import NYUv2DepthOnly, NYUv2Labeled, load_class_mapping, load_splits

STANDARD_SPLITS = {"train": 795, "test": 654}
# MATLAB's column-major H×W×3×N arrays appear reversed in HDF5 (see labelreg.data.nyu).
LAYOUT = {"images": (4, np.uint8, "N×3×W×H"), "depths": (3, np.float32, "N×W×H"),
          "labels": (3, np.uint16, "N×W×H")}
MAX_PLAUSIBLE_DEPTH = 100.0  # metres; larger values mean the depth is not in metres (e.g. mm)


def depth_summary(depths: list[np.ndarray]) -> tuple[str, np.ndarray, float]:
    """(text, valid values, invalid fraction) of depth maps where invalid = non-finite or ≤ 0."""
    flat = np.concatenate([d.ravel() for d in depths]).astype(np.float64)
    valid = flat[np.isfinite(flat) & (flat > 0)]
    invalid = 1.0 - valid.size / max(flat.size, 1)
    if not valid.size:
        return f"no valid pixel ({flat.size} pixels)", valid, invalid
    text = (f"valid depth min {valid.min():.3f} / median {np.median(valid):.3f} / max {valid.max():.3f} m, "
            f"{100 * invalid:.1f}% invalid")
    return text, valid, invalid


def check_depth(report: Report, what: str, depths: list[np.ndarray]) -> None:
    text, valid, invalid = depth_summary(depths)
    if not valid.size:
        report.error(f"{what}: {text}")
    elif valid.max() > MAX_PLAUSIBLE_DEPTH:
        report.error(f"{what}: {text} — values above {MAX_PLAUSIBLE_DEPTH:g} m: not metres (millimetres?)")
    else:
        report.ok(f"{what}: {text}")
        median = float(np.median(valid))
        if not 0.3 <= median <= 20.0:
            report.warn(f"{what}: median depth {median:.3f} m is unusual for indoor scenes")
        if invalid > 0.5:
            report.warn(f"{what}: {100 * invalid:.1f}% of pixels have no valid depth")


def check_mat(report: Report, mat: Path) -> tuple[int, int, int] | None:
    """Layout of the labeled .mat → (N, W, H), or None when it cannot be used."""
    report.section(f"Labeled file {mat}")
    if not mat.is_file():
        report.error(f"not found: {mat}")
        return None
    if not h5py.is_hdf5(str(mat)):
        report.error(f"{mat.name} is not a MATLAB v7.3/HDF5 file (expected nyu_depth_v2_labeled.mat)")
        return None
    shapes = {}
    with h5py.File(mat, "r") as f:
        for key, (ndim, dtype, layout) in LAYOUT.items():
            if key not in f:
                report.error(f"dataset {key!r} missing")
                continue
            shape, got = tuple(f[key].shape), f[key].dtype
            if len(shape) != ndim or (key == "images" and shape[1] != 3) or got != dtype:
                report.error(f"{key}: {shape} {got}, expected {layout} {np.dtype(dtype)}")
            else:
                report.ok(f"{key}: {shape} {got} ({layout})")
                shapes[key] = shape
    if len(shapes) != len(LAYOUT):
        return None
    n, _, w, h = shapes["images"]
    bad = [k for k in ("depths", "labels") if shapes[k] != (n, w, h)]
    if bad:
        report.error(f"{bad} do not match images: expected {(n, w, h)}")
        return None
    report.ok(f"{n} labeled images of H×W = {h}×{w}")
    if (h, w) != (480, 640):
        report.warn(f"frames are {h}×{w}, not NYUv2's 480×640")
    return n, w, h


def check_splits(report: Report, path: Path, n: int) -> None:
    report.section(f"Splits {path}")
    try:
        splits = load_splits(path)  # also rejects indices < 1 (not 1-based)
    except (OSError, ValueError) as err:
        report.error(str(err))
        return
    report.ok("indices are 1-based")
    errors_before = report.errors
    for split, idx in splits.items():
        out = idx[(idx < 0) | (idx >= n)]
        if out.size:
            report.error(f"{split}: {out.size} index(es) outside 1..{n}, e.g. {int(out[0]) + 1} (1-based)")
        duplicates = idx.size - np.unique(idx).size
        if duplicates:
            report.error(f"{split}: {duplicates} repeated index(es)")
    overlap = np.intersect1d(splits["train"], splits["test"])
    if overlap.size:
        report.error(f"train and test share {overlap.size} image(s), e.g. {int(overlap[0]) + 1} (1-based)")
    counts = {split: int(idx.size) for split, idx in splits.items()}
    text = f"train {counts['train']}, test {counts['test']} images"
    if report.errors == errors_before:
        report.ok(f"{text}, disjoint, within 1..{n}")
    else:
        report.note(f"({text})")
    if counts != STANDARD_SPLITS:
        report.warn(f"{text}: not the standard 795/654 split")
    unused = n - np.union1d(splits["train"], splits["test"]).size
    if unused > 0:
        report.warn(f"{unused} of {n} images are in neither split")


def check_labels_and_depth(report: Report, mat: Path, mapping: Path | None, n: int, k: int) -> None:
    positions = sample_positions(n, k)
    report.section(f"Labels and depth ({len(positions)} sampled images)")
    with h5py.File(mat, "r") as f:
        raw = {i: f["labels"][i] for i in positions}
        depths = [f["depths"][i] for i in positions]
    ids = np.unique(np.concatenate([np.unique(r) for r in raw.values()]))
    report.ok(f"{ids.size} distinct raw label ids, {int(ids.min())}..{int(ids.max())}")
    check_depth(report, "labeled depth", depths)
    if mapping is None:
        report.warn("no class mapping: label coverage not checked")
        return
    try:
        lut, _ = load_class_mapping(mapping)
    except (OSError, ValueError) as err:
        report.error(f"class mapping: {err}")
        return
    missing = ids[ids >= len(lut)]
    if missing.size:
        images = [i + 1 for i, r in raw.items() if (r >= len(lut)).any()]
        report.error(f"raw label id(s) {missing[:10].tolist()} beyond the {len(lut) - 1} ids of "
                      f"{mapping.name} (images {images[:10]}, 1-based)")
        return
    report.ok(f"{mapping.name} maps all {len(lut) - 1} raw ids; covers every id found")
    try:  # end to end through the reader the training uses
        sample = NYUv2Labeled(mat, "all", mapping_path=mapping, indices=positions[:1])[0]
        report.ok(f"labelreg reader: image {tuple(sample['image'].shape)}, "
                  f"{int((sample['label'] != 255).sum())} labeled pixels in {sample['name']}")
    except (OSError, ValueError) as err:
        report.error(f"labelreg reader: {err}")


def check_depth_only(report: Report, source: Path, size: tuple[int, int] | None, k: int) -> None:
    report.section(f"Depth-only frames {source}")
    try:
        frames = NYUv2DepthOnly(source)
    except (OSError, ValueError) as err:
        report.error(str(err))
        return
    positions = sample_positions(len(frames), k)
    report.ok(f"{len(frames)} depth-only frames; reading {len(positions)}")
    depths, failed, sizes = [], 0, set()
    for i in positions:
        try:
            sample = frames[i]
        except (OSError, ValueError) as err:
            failed += 1
            report.error(f"frame {i}: {err}")
            continue
        depths.append(sample["depth"].numpy())
        sizes.add(tuple(sample["depth"].shape))
    if not depths:
        return
    if failed == 0:
        report.ok(f"all {len(positions)} sampled frames readable")
    wrong = sorted(s for s in sizes if size is not None and s != size)
    if wrong:
        report.error(f"frame size(s) {wrong} (H×W) differ from the labeled images' {size}")
    elif len(sizes) > 1:
        report.warn(f"frames have different sizes: {sorted(sizes)}")
    else:
        report.ok(f"frame size {next(iter(sizes))} (H×W)" + (" matches the labeled images" if size else ""))
    # the reader already zeroed non-finite depth, so invalid = 0 here
    check_depth(report, "depth-only depth", depths)


def check_nyu_files(report: Report, mat: Path, *, splits: Path | None = None, mapping: Path | None = None,
                    depth_only: Path | None = None, sample: int = 20) -> None:
    """Every check on one set of NYUv2 files. ``splits``/``mapping`` None: the files beside ``mat``, as
    ``NYUv2Labeled`` finds them (an absent splits.mat is a warning: the split is then not checked)."""
    layout = check_mat(report, mat)
    splits_path = splits or mat.parent / "splits.mat"
    mapping_path = mapping or mat.parent / "classMapping40.mat"
    if mapping is None and not mapping_path.is_file():
        mapping_path = None
    if layout is not None:
        n, w, h = layout
        if splits is None and not splits_path.is_file():
            report.section("Splits")
            report.warn(f"no splits file given and no splits.mat beside {mat.name}: splits not checked")
        else:
            check_splits(report, splits_path, n)
        check_labels_and_depth(report, mat, mapping_path, n, sample)
    if depth_only is not None:
        check_depth_only(report, depth_only, (layout[2], layout[1]) if layout else None, sample)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``scripts/check_nyu.py``: check the NYUv2 files named on the command line; 0 when no check failed."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mat", required=True, type=Path, help="nyu_depth_v2_labeled.mat")
    parser.add_argument("--splits", type=Path, help="splits.mat (default: beside --mat)")
    parser.add_argument("--mapping", type=Path, help="classMapping40.mat (default: beside --mat)")
    parser.add_argument("--depth-only", type=Path, help="folder of .h5 frames or list of RGB/depth PNG pairs")
    parser.add_argument("--sample", type=int, default=20, help="images/frames to read (default 20)")
    args = parser.parse_args(argv)
    if args.sample < 1:
        parser.error("--sample must be ≥ 1")
    report = Report()
    check_nyu_files(report, args.mat, splits=args.splits, mapping=args.mapping, depth_only=args.depth_only,
                    sample=args.sample)
    status = "FAILED" if report.errors else "OK"
    print(f"\n{status}: {report.errors} error(s), {report.warnings} warning(s)")
    return 1 if report.errors else 0
