#!/usr/bin/env python
"""Reproduce the NYUv2 depth tables of the thesis: Table 5.5 (depth from segmentation, RGB, both)
and Table 5.6 (two-part model against its single-part baselines), collected next to the thesis' numbers.

    python scripts/check_nyu.py --mat /data/nyuv2/nyu_depth_v2_labeled.mat --depth-only /data/nyuv2/depth_only
    python scripts/nyu_tables.py --table 5.5 --nyu-root /data/nyuv2
    python scripts/nyu_tables.py --table 5.6 --nyu-root /data/nyuv2 --depth-only /data/nyuv2/depth_only
    python scripts/nyu_tables.py --table 5.6 --demo       # CPU-sized, synthetic scenes

Depth numbers are pixel-accumulated over the test split (the thesis' 1/N over all pixels), metres,
relative errors divided by the ground truth, from the *last* epoch of each run: the evaluation split
is NYUv2's test split, so picking the best epoch there would select the model on the test set (the
thesis trains every row for a fixed schedule). Finished runs are skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from labelreg.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipes.py beside this script, however it is loaded
from recipes import LABELREG, finished, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEPTH_KEYS = ("rmse", "rmse_log", "abs_rel", "sq_rel", "delta1", "delta2", "delta3")

# (row label, config, thesis numbers)
TABLE_5_5 = [
    ("RGB", "seg2depth-resnet50-rgb_nyu40.yaml", (0.628, 0.227, 0.1967, 0.1749, 0.718, 0.918, 0.976)),
    ("Seg", "seg2depth-resnet50-seg_nyu40.yaml", (0.548, 0.192, 0.1557, 0.1191, 0.785, 0.953, 0.989)),
    ("Seg+RGB", "seg2depth-resnet50-segrgb_nyu40.yaml", (0.524, 0.182, 0.1446, 0.1052, 0.807, 0.959, 0.991)),
]
TABLE_5_6 = [  # thesis: (depth RMSE, seg mIoU)
    ("Baseline", "twopart-densenet121-single_nyu40.yaml", (0.45, 38)),
    ("Baseline no seg loss", "twopart-densenet121-single-noseg_nyu40.yaml", (0.49, None)),
    ("Baseline no depth loss", "twopart-densenet121-single-nodepth_nyu40.yaml", (None, 36)),
    ("2x seg loss", "twopart-densenet121-single-2xseg_nyu40.yaml", (0.46, 38)),
    ("two-part model", "twopart-densenet121_nyu40.yaml", (0.44, 41)),
]
DEMO = ["data.root=data/synthetic", "data.synthesize_if_missing=true", "data.crop_size=[64,80]",
        "data.crop_area=null", "data.batch_size=6", "data.eval_batch_size=12", "data.train_limit=24",
        "data.val_limit=24", "data.num_workers=0", "model.pretrained_backbone=null", "model.freeze_bn=false",
        "train.epochs=2", "train.eval_every=1", "depth.depth_only_limit=24", "depth.mixed_epochs=1",
        "optim.milestones=[1]"]
DEMO_MODELS = {
    "twopart_densenet121": "model.options={backbone: densenet67, hidden: 32, backbone_options: {growth_rate: 8, "
                           "block_config: [1, 1, 1, 1], stem_channels: [8, 8, 8]}}",
}


def last_entry(run_dir: Path) -> dict | None:
    """The last epoch's record (``val/...`` metrics) from ``run_dir``'s metrics.json, if any."""
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()).get("last") if path.is_file() else None


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", choices=["5.5", "5.6"], required=True)
    parser.add_argument("--nyu-root", default="data/nyuv2", help="folder with the labeled .mat, splits and mapping")
    parser.add_argument("--depth-only", default=None, help="depth-only frames (HDF5 folder or PNG-pair list)")
    parser.add_argument("--out", default="runs/tables")
    parser.add_argument("--demo", action="store_true", help="CPU-sized version on the synthetic scenes")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("extra", nargs="*", help="section.key=value overrides for every run")
    args = parser.parse_args(argv)

    out = Path(args.out) / (f"table{args.table}-demo" if args.demo else f"table{args.table}")
    data = DEMO if args.demo else [f"data.root={args.nyu_root}"]
    if args.table == "5.6":
        depth_only = args.depth_only or ("data/synthetic/nyu/depth_only" if args.demo else None)
        data = data + ([f"depth.depth_only={depth_only}"] if depth_only else ["depth.mixed_epochs=0"])
        if not depth_only:
            print("no --depth-only frames: every row trains on the labeled images alone, which differs from the "
                  "thesis (40 epochs on raw + labeled frames first, §5.5.2.1)")
    rows = TABLE_5_5 if args.table == "5.5" else TABLE_5_6
    results = []
    for label, config, thesis in rows:
        name = Path(config).stem
        overrides = [f"output_dir={out}", f"name={name}", *data]
        if args.demo:
            model = load_config(CONFIGS / config).model.name
            overrides += [DEMO_MODELS[model]] if model in DEMO_MODELS else []
        if not finished(out / name, 2 if args.demo else None):
            run([*LABELREG, "train-depth", "--config", CONFIGS / config, "--resume", *overrides, *args.extra],
                args.dry_run)
        results.append((label, last_entry(out / name), thesis))

    if args.table == "5.5":
        lines = ["| input | " + " | ".join(DEPTH_KEYS) + " |", "|---" * (len(DEPTH_KEYS) + 1) + "|"]
        for label, entry, thesis in results:
            ours = [None if entry is None else entry.get(f"val/pixel_{key}") for key in DEPTH_KEYS]
            lines.append(f"| {label} (ours) | " + " | ".join(fmt(v) for v in ours) + " |")
            lines.append(f"| {label} (thesis) | " + " | ".join(fmt(v) for v in thesis) + " |")
    else:
        lines = ["| model | depth RMSE (ours) | depth RMSE (thesis) | seg mIoU (ours) | seg mIoU (thesis) |",
                 "|---|---|---|---|---|"]
        for label, entry, (rmse, miou) in results:
            ours_rmse = None if entry is None else entry.get("val/pixel_rmse")
            ours_miou = None if entry is None or "val/miou" not in entry else 100 * entry["val/miou"]
            lines.append(f"| {label} | {fmt(ours_rmse, 2)} | {fmt(rmse, 2)} | {fmt(ours_miou, 1)} | "
                         f"{fmt(miou, 0)} |")
    title = (f"Thesis Table {args.table}{' (demo-sized, synthetic data: not comparable)' if args.demo else ''}"
             " — ours: last epoch, NYUv2 test split")
    table = "\n".join([title, "", *lines])
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"table{args.table}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
