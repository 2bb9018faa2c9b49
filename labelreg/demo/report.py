"""The demo's summary (``metrics.json``), its results table and ``report.md``.

The report's prose lives in ``report_template.md`` next to this file (``$name`` fields, filled by
``string.Template``); this module only formats the numbers, tables and sentences that go into it.
"""
from __future__ import annotations

from pathlib import Path
from string import Template

from labelreg.demo.stages import FREQUENT_SHARE, AutoencoderStage, DepthStage, SegmenterStage
from labelreg.tasks.evaluate import format_metrics

TEMPLATE = Path(__file__).with_name("report_template.md")


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def summary(ae: AutoencoderStage, seg: SegmenterStage, depth: DepthStage, query_records: list[dict], weak: dict,
            seconds: dict[str, float]) -> dict:
    """What ``metrics.json`` holds: each stage's best validation metrics, run directory and time."""
    floor = ae.frequent_floor
    return {
        "autoencoder": {"variant": ae.run.cfg.model.variant, "best_epoch": ae.run.checkpoint["best_epoch"],
                        "epochs": ae.run.cfg.train.epochs, "val": ae.run.best, "run_dir": str(ae.run.cfg.run_dir),
                        "val_class_share": dict(zip(ae.class_names, ae.class_shares)),
                        "frequent_class_min_iou": None if floor is None else
                        {"class": floor[0], "iou": floor[1], "share_at_least": FREQUENT_SHARE}},
        "segmenter": {"model": seg.baseline.cfg.model.name, "train_images": seg.baseline.cfg.data.train_limit,
                      "best_epoch": seg.baseline.checkpoint["best_epoch"], "epochs": seg.baseline.cfg.train.epochs,
                      "val": seg.baseline.best, "run_dir": str(seg.baseline.cfg.run_dir)},
        "regularized": {"model": seg.regularized.cfg.model.name, "regularizer": seg.regularized.cfg.regularizer.kind,
                        "weight": seg.regularized.cfg.regularizer.weight,
                        "train_images": seg.regularized.cfg.data.train_limit,
                        "best_epoch": seg.regularized.checkpoint["best_epoch"],
                        "epochs": seg.regularized.cfg.train.epochs, "val": seg.regularized.best,
                        "run_dir": str(seg.regularized.cfg.run_dir)},
        "depth": {"twopart": {"val": depth.twopart.best, "run_dir": str(depth.twopart.cfg.run_dir)},
                  "single": {"val": depth.single.best, "run_dir": str(depth.single.cfg.run_dir)}},
        "queries": query_records,
        "weak": weak["metrics"],
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
    }


def regularizer_gain(seg: SegmenterStage) -> float:
    """The regularized segmenter's mIoU minus the baseline's, in points."""
    return 100 * (seg.regularized.best["miou"] - seg.baseline.best["miou"])


def results_table(ae: AutoencoderStage, seg: SegmenterStage, depth: DepthStage, weak: dict,
                  seconds: dict[str, float]) -> str:
    """One row per stage: its headline number (also printed at the end of ``labelreg demo``)."""
    ae_cfg, seg_cfg, reg_cfg = ae.run.cfg, seg.baseline.cfg, seg.regularized.cfg
    ae_best, seg_best, reg_best = ae.run.best, seg.baseline.best, seg.regularized.best
    two_best, one_best, weak_metrics = depth.twopart.best, depth.single.best, weak["metrics"]
    return "\n".join([
        "| stage | metric | value |",
        "|---|---|---|",
        f"| phase one: autoencoder-{ae_cfg.model.variant} | reconstruction mIoU (val) | {100 * ae_best['miou']:.1f} |",
        f"| baseline: {seg_cfg.model.name} (tiny, {seg_cfg.data.train_limit} train images) | mIoU (val) | "
        f"{100 * seg_best['miou']:.1f} |",
        f"| phase two: same + decoder regularizer (weight {reg_cfg.regularizer.weight}) | mIoU (val), primary output | "
        f"{100 * reg_best['miou']:.1f} ({regularizer_gain(seg):+.1f}) |",
        f"| | mIoU (val), auxiliary output through the decoder | {100 * reg_best['aux_miou']:.1f} |",
        f"| depth: tiny two-part model (labeled + depth-only) | RMSE (m, pixel-accumulated) / mIoU | "
        f"{two_best['pixel_rmse']:.3f} / {100 * two_best['miou']:.1f} |",
        f"| depth: single-part baseline (supervised at the end) | RMSE (m, pixel-accumulated) / mIoU | "
        f"{one_best['pixel_rmse']:.3f} / {100 * one_best['miou']:.1f} |",
        f"| weak supervision: tags → {weak_metrics['sampler']} points → 1×1 head | mIoU (val), same head on "
        f"dense labels | {100 * weak_metrics['point_miou']:.1f}, dense {percent(weak_metrics['dense_miou'])} |",
        "| time | data / autoencoder / baseline / regularized / two-part / single-part / queries / weak / total (s) | "
        + " / ".join(f"{value:.0f}" for value in seconds.values()) + " |",
    ])


def per_class_table(names: list[str], shares: list[float], runs: list[tuple[str, dict]]) -> list[str]:
    """Markdown rows: every class present in the validation split, its pixel share and each run's IoU (%);
    frequent classes (≥ ``FREQUENT_SHARE``) in bold."""
    def iou(metrics: dict, name: str) -> str:
        value = metrics.get(f"iou/{name}")
        return "n/a" if value is None or value != value else f"{100 * value:.1f}"

    rows = ["| class | pixels (%) | " + " | ".join(title for title, _ in runs) + " |",
            "|---|---:|" + "---:|" * len(runs)]
    for name, share in sorted(zip(names, shares), key=lambda item: -item[1]):
        if share > 0:
            shown = f"**{name}**" if share >= FREQUENT_SHARE else name
            rows.append(f"| {shown} | {100 * share:.1f} | " + " | ".join(iou(m, name) for _, m in runs) + " |")
    return rows


def verdict(gain: float) -> str:
    return ("helped" if gain > 0.5 else "hurt" if gain < -0.5 else "made no clear difference") + \
        f" ({gain:+.1f} mIoU, one seed: differences of a point or two are within run-to-run noise)"


def render_report(*, data_root: Path, device: str, table: str, ae: AutoencoderStage, seg: SegmenterStage,
                  depth: DepthStage, query_figure: Path, query_records: list[dict], weak: dict) -> str:
    """``report.md``: the template filled with this run's numbers, tables and figure names."""
    two_cfg, weak_metrics = depth.twopart.cfg, weak["metrics"]
    ae_best, seg_best, reg_best = ae.run.best, seg.baseline.best, seg.regularized.best
    floor = ae.frequent_floor
    query = query_records[0]
    fields = {
        "data_root": data_root, "device": device, "table": table,
        "ae_figure": ae.figure.name, "ae_curves": ae.curves.name,
        "frequent_percent": f"{100 * FREQUENT_SHARE:.0f}",
        "frequent_floor": "." if floor is None else
        f" (the autoencoder's lowest among them: {floor[0]}, {100 * floor[1]:.1f}).",
        "per_class_table": "\n".join(per_class_table(ae.class_names, ae.class_shares, [
            ("autoencoder", ae_best), ("baseline", seg_best), ("regularized", reg_best)])),
        "ae_metrics": format_metrics({k: v for k, v in ae_best.items() if not k.startswith("iou/")},
                                     title="autoencoder reconstruction, validation split"),
        "seg_model": seg.baseline.cfg.model.name, "train_images": seg.baseline.cfg.data.train_limit,
        "verdict": verdict(regularizer_gain(seg)),
        "seg_figure": seg.figure.name, "seg_curves": seg.baseline_curves.name,
        "reg_curves": seg.regularized_curves.name,
        "seg_metrics": format_metrics(seg_best, title="baseline, validation split"),
        "reg_metrics": format_metrics({k: v for k, v in reg_best.items() if not k.startswith("aux_")},
                                      title="regularized (primary output), validation split"),
        "mixed_epochs": two_cfg.depth.mixed_epochs, "depth_only_limit": two_cfg.depth.depth_only_limit,
        "labeled_per_batch": two_cfg.depth.labeled_per_batch,
        "depth_rows": "\n".join(
            f"| {title} | {m['pixel_rmse']:.3f} | {m['image_rmse']:.3f} | {m['pixel_abs_rel']:.3f} | "
            f"{m['pixel_delta1']:.3f} | {100 * m['miou']:.1f} |"
            for title, m in (("two-part", depth.twopart.best), ("single-part", depth.single.best))),
        "depth_figure": depth.figure["path"].name,
        "query_class": query["class"], "query_id": query["query_id"], "query_box": ",".join(map(str, query["box"])),
        "query_rows": "\n".join(
            f"| {kind} | " + " | ".join(f"{m['image_id']} ({m['distance']:.3f})" for m in record["matches"]) + " |"
            for kind, record in zip(("labels", "image"), query_records)),
        "query_figure": query_figure.name,
        "loc_loss": weak_metrics["loc_loss"].replace("_", " "), "k": weak_metrics["k"],
        "weak_rows": "\n".join(
            f"| {name} | {m['points_per_image']:.1f} | {percent(m['foreground_point_accuracy'])} % | "
            f"{percent(m['miou'])} |" for name, m in weak_metrics["samplers"].items()),
        "dense_miou": percent(weak_metrics["dense_miou"]),
        "weak_figure": weak["figure"].name, "weak_prediction_figure": weak["prediction_figure"].name,
    }
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(fields)
