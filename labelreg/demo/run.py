"""``run_demo``: the stages in order, then ``metrics.json`` and ``report.md``."""
from __future__ import annotations

import time
from pathlib import Path

from labelreg.demo.report import render_report, results_table, summary
from labelreg.demo.stages import autoencoder_stage, data_stage, depth_stage, query_stage, segmenter_stage
from labelreg.runtime import resolve_device
from labelreg.storage import write_json, write_text_atomic
from labelreg.weak.demo import run_weak_demo


def run_demo(out: Path = Path("runs/demo"), data_root: Path = Path("data/synthetic"),
             overrides: list[str] | None = None) -> dict:
    """Run every stage; ``overrides`` apply to every stage's config (e.g. ``train.epochs=1``).
    Returns the summary that ``out/metrics.json`` holds."""
    overrides = list(overrides or [])
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data_stage(data_root, overrides)
    data_seconds = time.perf_counter() - started
    ae = autoencoder_stage(out, data_root, overrides)
    seg = segmenter_stage(out, data_root, overrides, ae.run)
    depth = depth_stage(out, data_root, overrides)
    query_started = time.perf_counter()
    query_figure, query_records = query_stage(ae.run.cfg, seg.regularized.cfg, out)
    query_seconds = time.perf_counter() - query_started
    weak = run_weak_demo(out, data_root, overrides)
    seconds = {"data": data_seconds, "train_ae": ae.run.seconds, "train_seg": seg.baseline.seconds,
               "train_seg_reg": seg.regularized.seconds, "train_twopart": depth.twopart.seconds,
               "train_single": depth.single.seconds, "queries": query_seconds, "weak": weak["seconds"],
               "total": time.perf_counter() - started}

    record = summary(ae, seg, depth, query_records, weak, seconds)
    write_json(out / "metrics.json", record)
    table = results_table(ae, seg, depth, weak, seconds)
    write_text_atomic(out / "report.md", render_report(
        data_root=data_root, device=resolve_device(ae.run.cfg.train.device), table=table, ae=ae, seg=seg,
        depth=depth, query_figure=query_figure, query_records=query_records, weak=weak))
    print()
    print(table)
    print(f"\nreport: {out / 'report.md'}")
    return record
