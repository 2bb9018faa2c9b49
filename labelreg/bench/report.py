"""The benchmark's results: rows merged over rounds, regularizer overheads and ratios, the printed table,
the machine description, and ``benchmark_models`` (run the cases, return the whole report).

Ratios: the regularizer's training-step overhead (target ≤ ``OVERHEAD_TARGET_PCT`` %) and zoom-out over
dilated time and memory (thesis §3.5.1; target ≤ ``TIME_RATIO_TARGET``), from the separate runs (medians)
and, with paired timing, as the median over steps of the i-th step ratios.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

# Importing anything under labelreg has already run labelreg/__init__, which makes torchvision importable.
from labelreg.bench.cases import AE_VARIANT, OVERHEAD_TARGET_PCT, TIME_RATIO_TARGET, Case
from labelreg.bench.measure import paired_ratio, run_cases, run_paired
from labelreg.config import RegularizerConfig
import torchvision

# ----------------------------------------------------------------------------- summaries


_CASE_KEYS = ("model", "batch", "size", "precision", "channels_last", "compile", "regularizer", "aux_crop", "dropin",
              "device", "num_classes", "options")


def case_key(row: dict[str, Any], without: tuple[str, ...] = ()) -> tuple:
    return tuple(json.dumps(row.get(key)) for key in _CASE_KEYS if key not in without)


def merge_rounds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case: medians over rounds of the per-round medians (and peaks); per-round values kept."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(case_key(row), []).append(row)
    merged = []
    for group in groups.values():
        good = [row for row in group if "error" not in row]
        if not good:
            merged.append({key: value for key, value in group[0].items() if key != "round"})
            continue
        row = {key: value for key, value in good[0].items() if not key.endswith("_all") and key != "round"}
        for metric in ("train_ms", "infer_ms", "peak_mb", "infer_peak_mb"):
            values = [r[metric] for r in good if r.get(metric) is not None]
            if values:
                row[metric] = round(statistics.median(values), 2)
                row[f"{metric}_rounds"] = values
        for metric in ("train_ms_min", "infer_ms_min"):  # the least disturbed step of all rounds
            values = [r[metric] for r in good if r.get(metric) is not None]
            if values:
                row[metric] = min(values)
        for phase in ("train", "infer"):
            if row.get(f"{phase}_ms"):
                row[f"{phase}_img_s"] = round(row["batch"] * 1000 / row[f"{phase}_ms"], 3)
        merged.append(row)
    return merged


def regularizer_overheads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each case measured with and without the regularizer: training step time overhead in %."""
    plain = {case_key(r, ("regularizer",)): r for r in rows if not r["regularizer"] and r.get("train_ms")}
    result = []
    for row in rows:
        base = plain.get(case_key(row, ("regularizer",)))
        if row["regularizer"] and row.get("train_ms") and base is not None:
            result.append({"case": _short(row), "train_ms_without": base["train_ms"], "train_ms_with": row["train_ms"],
                           "overhead_pct": round((row["train_ms"] / base["train_ms"] - 1) * 100, 1),
                           "overhead_pct_min": round((row["train_ms_min"] / base["train_ms_min"] - 1) * 100, 1),
                           "flop_overhead_pct": (round((row["train_gflop"] / base["train_gflop"] - 1) * 100, 1)
                                                 if row.get("train_gflop") and base.get("train_gflop") else None),
                           "peak_mb_without": base.get("peak_mb"), "peak_mb_with": row.get("peak_mb")})
    return result


def _short(row: dict[str, Any]) -> str:
    return (f"{row['model']} b{row['batch']} {row['size']} {row['precision']}"
            f"{' channels_last' if row['channels_last'] else ''}{' compile' if row['compile'] else ''}")


def ratio(rows: list[dict[str, Any]], numerator: str, denominator: str, metric: str) -> float | None:
    """``metric`` of model ``numerator`` over that of ``denominator`` (first matching rows without error)."""
    def value(model: str) -> float | None:
        return next((r[metric] for r in rows if r["model"] == model and r.get(metric)), None)

    top, bottom = value(numerator), value(denominator)
    return round(top / bottom, 3) if top is not None and bottom else None


def paired_overheads(cases: list[Case], rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regularizer overhead (%) from paired timing: median over steps of with/without, per round."""
    result = []
    for case in cases:
        base = replace(case, regularizer=False).label()
        good = [times for times in rounds if "error" not in times and base in times]
        if case.regularizer and good:
            per_round = [round((paired_ratio(times, case.label(), base) - 1) * 100, 1) for times in good]
            fastest = [round((min(times[case.label()]) / min(times[base]) - 1) * 100, 1) for times in good]
            result.append({"case": base, "overhead_pct": round(statistics.median(per_round), 1), "per_round": per_round,
                           "overhead_pct_min_per_round": fastest})
    return result


def zoomout_vs_dilated_summary(report: dict[str, Any], cases: list[Case], zoomout: str = "zoomout_resnet101",
                               dilated: str = "tv:deeplabv3_resnet101") -> dict[str, Any]:
    """Time and memory ratios zoom-out / dilated: from the separate runs (medians, per round) and, when
    measured, from paired timing (median over steps of the i-th step ratio, per round)."""
    rounds = sorted({r["round"] for r in report["rounds"]})
    by_round = [[r for r in report["rounds"] if r["round"] == k] for k in rounds]
    summary = {"zoomout": zoomout, "dilated": dilated, "time_ratio_target": TIME_RATIO_TARGET,
               "time_ratio": ratio(report["results"], zoomout, dilated, "train_ms"),
               "time_ratio_per_round": [ratio(rows, zoomout, dilated, "train_ms") for rows in by_round],
               "memory_ratio": ratio(report["results"], zoomout, dilated, "peak_mb"),
               "memory_ratio_per_round": [ratio(rows, zoomout, dilated, "peak_mb") for rows in by_round],
               "time_ratio_fastest": ratio(report["results"], zoomout, dilated, "train_ms_min"),
               "flop_ratio": ratio(report["results"], zoomout, dilated, "train_gflop"),
               "infer_time_ratio": ratio(report["results"], zoomout, dilated, "infer_ms")}
    labels = [next((c.label() for c in cases if c.model == name), None) for name in (zoomout, dilated)]
    good = [times for times in report.get("paired", {}).get("rounds", []) if "error" not in times]
    if good and None not in labels:
        summary["paired_time_ratio_per_round"] = [paired_ratio(times, *labels) for times in good]
        summary["paired_fastest_ratio_per_round"] = [round(min(times[labels[0]]) / min(times[labels[1]]), 3)
                                                     for times in good]
        summary["paired_time_ratio"] = round(statistics.median(summary["paired_time_ratio_per_round"]), 3)
    headline = summary.get("paired_time_ratio", summary["time_ratio"])
    summary["time_target_met"] = headline is not None and headline <= TIME_RATIO_TARGET
    summary["lighter_in_memory"] = summary["memory_ratio"] is not None and summary["memory_ratio"] < 1
    return summary


# ----------------------------------------------------------------------------- the whole model benchmark


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "memory_gb": memory_gb,
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def benchmark_models(cases: list[Case], *, repeat: int = 1, isolate: bool = True, paired: bool = False,
                     progress: bool = True, timeout: float | None = None) -> dict[str, Any]:
    """Run ``cases``; return ``{"machine", "settings", "results" (merged over rounds), "rounds" (raw rows),
    "regularizer_overhead", …, "paired" (with ``paired``: step times of the cases stepped in turn)}``."""
    rows = run_cases(cases, repeat=repeat, isolate=isolate, progress=progress, timeout=timeout)
    merged = merge_rounds(rows)
    per_round = [regularizer_overheads([r for r in rows if r["round"] == k]) for k in range(1, repeat + 1)]
    report = {"machine": machine_info(),
              "settings": {"iters": cases[0].iters, "warmup": cases[0].warmup, "repeat": repeat, "isolated": isolate,
                           "optimizer": cases[0].optimizer, "aux_weight": RegularizerConfig().weight,
                           "autoencoder_variant": AE_VARIANT},
              "results": merged, "rounds": rows, "regularizer_overhead": regularizer_overheads(merged),
              "regularizer_overhead_per_round": per_round}
    if paired:
        rounds = run_paired(cases, repeat=repeat, isolate=isolate, progress=progress, timeout=timeout)
        good = [times for times in rounds if "error" not in times]
        medians = {case.label(): [round(statistics.median(times[case.label()]), 2) for times in good] for case in cases}
        report["paired"] = {"train_ms_per_round": medians, "rounds": rounds,
                            "regularizer_overhead": paired_overheads(cases, rounds)}
    return report


# ----------------------------------------------------------------------------- printed output


TABLE_COLUMNS = ("model", "batch", "HxW", "precision", "channels_last", "regularizer", "train img/s", "infer img/s",
                 "ms/step", "fastest ms", "peak MB")


def _regularizer_cell(row: dict[str, Any]) -> str:
    if row["regularizer"] and row.get("aux_crop"):
        return f"crop {row['aux_crop']}"
    if row["regularizer"] and row.get("dropin"):
        return "dropin"
    return cell(row["regularizer"])


def cell(value: Any, digits: int = 2) -> str:
    """A table cell: ``—`` for None, yes/no for booleans, floats with ``digits`` decimals."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    cells = []
    for row in rows:
        model = row["model"] + (" (compiled)" if row.get("compile") else "")
        if "error" in row:
            tail = ["error: " + row["error"][:60], "", "", "", ""]
        else:
            infer = "=plain" if row["regularizer"] else cell(row.get("infer_img_s"))
            tail = [cell(row.get("train_img_s")), infer, cell(row.get("train_ms"), 1),
                    cell(row.get("train_ms_min"), 1), cell(row.get("peak_mb"), 0)]
        cells.append([model, str(row["batch"]), row["size"], row["precision"], cell(row["channels_last"]),
                      _regularizer_cell(row), *tail])
    return cells


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = TABLE_COLUMNS,
                 cells: list[list[str]] | None = None) -> str:
    """A Markdown table (aligned, so it also reads as plain text)."""
    cells = table_rows(rows) if cells is None else cells
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def print_report(report: dict[str, Any], preset: str | None = None) -> None:
    print(format_table(report["results"]))
    target = f" (target ≤ {OVERHEAD_TARGET_PCT:g}%)" if preset == "regularizer-overhead" else ""
    for item in report["regularizer_overhead"]:
        rounds = [o["overhead_pct"] for per in report["regularizer_overhead_per_round"] for o in per
                  if o["case"] == item["case"]]
        print(f"regularizer overhead{target}, {item['case']}: {item['overhead_pct']:+.1f}% of the training step "
              f"(median {item['train_ms_without']:.1f} → {item['train_ms_with']:.1f} ms; per round {rounds}; "
              f"fastest steps {item['overhead_pct_min']:+.1f}%; FLOPs {cell(item['flop_overhead_pct'], 1)}%); peak "
              f"{cell(item['peak_mb_without'], 0)} → {cell(item['peak_mb_with'], 0)} MB")
    for label, medians in report.get("paired", {}).get("train_ms_per_round", {}).items():
        print(f"paired timing, {label}: median ms/step per round {medians}")
    for item in report.get("paired", {}).get("regularizer_overhead", []):
        print(f"regularizer overhead{target}, paired timing, {item['case']}: {item['overhead_pct']:+.1f}% "
              f"(median of step ratios, per round {item['per_round']}; "
              f"fastest steps {item['overhead_pct_min_per_round']})")
    for times in report.get("paired", {}).get("rounds", []):
        if "error" in times:
            print(f"paired timing failed: {times['error']}")
    if "zoomout_vs_dilated" in report:
        s = report["zoomout_vs_dilated"]
        paired = (f"; paired timing {s['paired_time_ratio']:.3f} (median of step ratios, per round "
                  f"{s['paired_time_ratio_per_round']}; fastest steps {s['paired_fastest_ratio_per_round']})"
                  if "paired_time_ratio" in s else "")
        print(f"{s['zoomout']} / {s['dilated']}: training step time ratio {cell(s['time_ratio'], 3)} "
              f"(per round {s['time_ratio_per_round']}; fastest steps {cell(s['time_ratio_fastest'], 3)}{paired}; "
              f"target ≤ {TIME_RATIO_TARGET}: "
              f"{'met' if s['time_target_met'] else 'missed'}); peak memory ratio {cell(s['memory_ratio'], 3)} "
              f"(per round {s['memory_ratio_per_round']}: {'lighter' if s['lighter_in_memory'] else 'not lighter'}); "
              f"inference time ratio {cell(s['infer_time_ratio'], 3)}; "
              f"training FLOP ratio {cell(s['flop_ratio'], 3)}")
