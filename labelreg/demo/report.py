"""The demo's summary (``metrics.json``), its results table and ``report.md``.

The report's prose lives in ``report_template.md`` next to this file, one part per stage between
``<!-- section: NAME -->`` lines, with ``$name`` fields filled by ``string.Template``; a stage that is not in
this report (not run, and no earlier output) leaves its part out. This module only formats the numbers,
tables and sentences that go into it. A reduced run opens with ``provenance.banner``.
"""
from __future__ import annotations

import re
from pathlib import Path
from string import Template

from labelreg.config import Config
from labelreg.demo.provenance import banner, provenance_markdown
from labelreg.demo.runs import TrainedRun
from labelreg.demo.stages import FREQUENT_SHARE, AutoencoderStage, DepthStage, SegmenterStage
from labelreg.tasks.evaluate import format_metrics

TEMPLATE = Path(__file__).with_name("report_template.md")
SECTION = re.compile(r"^<!-- section: (\w+) -->\n", re.MULTILINE)
TIME_LABELS = {"data": "data", "train_ae": "autoencoder", "train_seg": "baseline", "train_seg_reg": "regularized",
               "train_twopart": "two-part", "train_single": "single-part", "queries": "queries", "weak": "weak",
               "total": "total"}


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _segmenter_record(run: TrainedRun) -> dict:
    record = {"model": run.cfg.model.name, "train_images": run.cfg.data.train_limit,
              "best_epoch": run.checkpoint["best_epoch"], "epochs": run.cfg.train.epochs, "val": run.best,
              "run_dir": str(run.cfg.run_dir)}
    if run.cfg.regularizer.kind != "none":
        record.update(regularizer=run.cfg.regularizer.kind, weight=run.cfg.regularizer.weight)
    return record


def summary(ae: AutoencoderStage | None, seg: SegmenterStage | None, depth: DepthStage | None,
            query_records: list[dict] | None, weak: dict | None, seconds: dict[str, float], provenance: dict) -> dict:
    """What ``metrics.json`` holds: each reported stage's best validation metrics, run directory and time, and
    where the numbers come from (``provenance``)."""
    record = {}
    if ae is not None:
        floor = ae.frequent_floor
        record["autoencoder"] = {
            "variant": ae.run.cfg.model.variant, "best_epoch": ae.run.checkpoint["best_epoch"],
            "epochs": ae.run.cfg.train.epochs, "amp": ae.run.cfg.train.amp, "val": ae.run.best,
            "run_dir": str(ae.run.cfg.run_dir), "val_class_share": dict(zip(ae.class_names, ae.class_shares)),
            "frequent_class_min_iou": None if floor is None else
            {"class": floor[0], "iou": floor[1], "share_at_least": FREQUENT_SHARE}}
    for key, run in (("segmenter", seg and seg.baseline), ("regularized", seg and seg.regularized)):
        if run is not None:
            record[key] = _segmenter_record(run)
    if depth is not None:
        record["depth"] = {key: {"val": run.best, "run_dir": str(run.cfg.run_dir)}
                           for key, run in (("twopart", depth.twopart), ("single", depth.single)) if run is not None}
    if query_records is not None:
        record["queries"] = query_records
    if weak is not None:
        record["weak"] = weak["metrics"]
    record["seconds"] = {name: round(value, 1) for name, value in seconds.items()}
    record["provenance"] = provenance
    return record


def regularizer_gain(seg: SegmenterStage) -> float:
    """The regularized segmenter's mIoU minus the baseline's, in points."""
    return 100 * (seg.regularized.best["miou"] - seg.baseline.best["miou"])


def unseen(best: dict, prefix: str = "") -> str:
    """``, Seq05VD 41.2`` for each unseen part of the split scored on its own (CamVid test), else ''."""
    parts = [key[len(prefix):-len("_miou")] for key in best if key.startswith(prefix) and key.endswith("_miou")]
    return "".join(f", {part} {100 * best[f'{prefix}{part}_miou']:.1f}" for part in parts
                   if part and part != "aux" and "_" not in part)


def training_images(cfg: Config) -> str:
    return "all" if cfg.data.train_limit is None else str(cfg.data.train_limit)


def results_table(ae: AutoencoderStage | None, seg: SegmenterStage | None, depth: DepthStage | None,
                  weak: dict | None, seconds: dict[str, float], split: str = "val") -> str:
    """One row per reported stage: its headline number on ``split`` (and on its unseen parts), also printed at the
    end of ``labelreg demo``."""
    rows = ["| stage | metric | value |", "|---|---|---|"]
    if ae is not None:
        rows.append(f"| phase one: autoencoder-{ae.run.cfg.model.variant} | reconstruction mIoU ({split}) | "
                    f"{100 * ae.run.best['miou']:.1f}{unseen(ae.run.best)} |")
    if seg is not None and seg.baseline is not None:
        cfg = seg.baseline.cfg
        rows.append(f"| baseline: {cfg.model.name} (tiny, {training_images(cfg)} train images) | mIoU ({split}) | "
                    f"{100 * seg.baseline.best['miou']:.1f}{unseen(seg.baseline.best)} |")
    if seg is not None and seg.regularized is not None:
        reg = seg.regularized
        gain = f" ({regularizer_gain(seg):+.1f})" if seg.baseline is not None else ""
        rows += [f"| phase two: same + decoder regularizer (weight {reg.cfg.regularizer.weight}) | mIoU ({split}), "
                 f"primary output | {100 * reg.best['miou']:.1f}{gain}{unseen(reg.best)} |",
                 f"| | mIoU ({split}), auxiliary output through the decoder | {100 * reg.best['aux_miou']:.1f}"
                 f"{unseen(reg.best, 'aux_')} |"]
    for title, run in (("depth: tiny two-part model (labeled + depth-only)", depth and depth.twopart),
                       ("depth: single-part baseline (supervised at the end)", depth and depth.single)):
        if run is not None:
            rows.append(f"| {title} | RMSE (m, pixel-accumulated) / mIoU | {run.best['pixel_rmse']:.3f} / "
                        f"{100 * run.best['miou']:.1f} |")
    if weak is not None:
        metrics = weak["metrics"]
        rows.append(f"| weak supervision: tags → {metrics['sampler']} points → 1×1 head | mIoU (val), same head "
                    f"on dense labels | {100 * metrics['point_miou']:.1f}, dense {percent(metrics['dense_miou'])} |")
    rows.append("| time | " + " / ".join(TIME_LABELS.get(name, name) for name in seconds) + " (s) | "
                + " / ".join(f"{value:.0f}" for value in seconds.values()) + " |")
    return "\n".join(rows)


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


def _ae_fields(ae: AutoencoderStage, seg: SegmenterStage | None) -> dict:
    floor = ae.frequent_floor
    runs = [("autoencoder", ae.run.best)] + [(title, run.best) for title, run in (
        ("baseline", seg and seg.baseline), ("regularized", seg and seg.regularized)) if run is not None]
    return {
        "ae_figure": ae.figure.name, "ae_curves": ae.curves.name, "frequent_percent": f"{100 * FREQUENT_SHARE:.0f}",
        "frequent_floor": "." if floor is None else
        f" (the autoencoder's lowest among them: {floor[0]}, {100 * floor[1]:.1f}).",
        "per_class_table": "\n".join(per_class_table(ae.class_names, ae.class_shares, runs)),
        "ae_metrics": format_metrics({k: v for k, v in ae.run.best.items() if not k.startswith("iou/")},
                                     title="autoencoder reconstruction, validation split")}


def _seg_fields(seg: SegmenterStage) -> dict:
    run = seg.baseline or seg.regularized
    if seg.baseline is not None and seg.regularized is not None:
        trained = ("twice: alone (baseline), and with an auxiliary 1×1 conv predicting the decoder's input from the "
                   "1/16 feature map, through the frozen phase-one decoder. On this run the regularizer "
                   f"{verdict(regularizer_gain(seg))}. The auxiliary column shows what the segmenter tells the "
                   "decoder.")
    elif seg.baseline is not None:
        trained = "alone (the baseline; the regularized run is not in this report)."
    else:
        trained = ("with an auxiliary 1×1 conv predicting the decoder's input from the 1/16 feature map, through the "
                   "frozen phase-one decoder (the baseline is not in this report).")
    metrics = []
    if seg.baseline is not None:
        metrics.append(format_metrics(seg.baseline.best, title="baseline, validation split"))
    if seg.regularized is not None:
        metrics.append(format_metrics({k: v for k, v in seg.regularized.best.items() if not k.startswith("aux_")},
                                      title="regularized (primary output), validation split"))
    images = "all" if run.cfg.data.train_limit is None else f"the first {run.cfg.data.train_limit}"
    return {"seg_model": run.cfg.model.name, "train_images": images, "seg_trained": trained,
            "seg_figure": seg.figure.name, "seg_curves": seg.curves.name,
            "seg_metrics": "\n\n".join(f"```\n{block}\n```" for block in metrics)}


def _depth_fields(depth: DepthStage) -> dict:
    cfg = (depth.twopart or depth.single).cfg
    return {"mixed_epochs": cfg.depth.mixed_epochs, "depth_only_limit": cfg.depth.depth_only_limit,
            "labeled_per_batch": cfg.depth.labeled_per_batch, "depth_figure": depth.figure["path"].name,
            "depth_rows": "\n".join(
                f"| {title} | {run.best['pixel_rmse']:.3f} | {run.best['image_rmse']:.3f} | "
                f"{run.best['pixel_abs_rel']:.3f} | {run.best['pixel_delta1']:.3f} | {100 * run.best['miou']:.1f} |"
                for title, run in (("two-part", depth.twopart), ("single-part", depth.single)) if run is not None)}


def _query_fields(query_figure: Path, query_records: list[dict]) -> dict:
    query = query_records[0]
    return {"query_class": query["class"], "query_id": query["query_id"], "query_box": ",".join(map(str, query["box"])),
            "query_rows": "\n".join(
                f"| {kind} | " + " | ".join(f"{m['image_id']} ({m['distance']:.3f})" for m in record["matches"]) + " |"
                for kind, record in zip(("labels", "image"), query_records)),
            "query_figure": query_figure.name}


def _weak_fields(weak: dict) -> dict:
    metrics = weak["metrics"]
    return {"loc_loss": metrics["loc_loss"].replace("_", " "), "k": metrics["k"],
            "weak_rows": "\n".join(
                f"| {name} | {m['points_per_image']:.1f} | {percent(m['foreground_point_accuracy'])} % | "
                f"{percent(m['miou'])} |" for name, m in metrics["samplers"].items()),
            "dense_miou": percent(metrics["dense_miou"]),
            "weak_figure": weak["figure"].name, "weak_prediction_figure": weak["prediction_figure"].name}


def render_report(*, intro: str, device: str, table: str, ae: AutoencoderStage | None,
                  seg: SegmenterStage | None, depth: DepthStage | None, query_figure: Path | None,
                  query_records: list[dict] | None, weak: dict | None, provenance: dict,
                  template: Path = TEMPLATE) -> str:
    """``report.md``: the template's parts for the stages in this report, filled with their numbers."""
    fields = {"head": {"banner": banner(provenance["reduced"]), "intro": intro, "device": device,
                       "table": table},
              "ae": ae and _ae_fields(ae, seg), "seg": seg and _seg_fields(seg),
              "depth": depth and _depth_fields(depth),
              "queries": query_records and _query_fields(query_figure, query_records),
              "weak": weak and _weak_fields(weak), "provenance": {"provenance": provenance_markdown(provenance)}}
    parts = SECTION.split(template.read_text(encoding="utf-8"))
    sections = [("head", parts[0])] + list(zip(parts[1::2], parts[2::2]))
    return "".join(Template(text).substitute(fields[name]) for name, text in sections if fields.get(name))
