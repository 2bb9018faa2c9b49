"""Study outputs: ``results.json`` (every run), ``report.md`` (tables) and ``study.png`` (thesis §5.4).

mIoU is shown in percent. Per arm: mean ± 95% t-interval over seeds of the primary mIoU and, for
decoder arms, of the auxiliary output's (the decoder's view, thesis Fig. 5.6); per arm against the
baseline: the paired mean difference, its 95% interval and the paired t-test p-value, and the
per-class IoU differences; the wall time per run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure  # pyplot-free: writes a file, sets no backend for the importer

from labelreg.storage import json_safe, write_text_atomic
from labelreg.study.protocol import Protocol, arm_has_aux_output
from labelreg.study.stats import mean_interval, paired_comparison

SCORING_NOTE = ("Scored: the FINAL epoch's model (last.pt; no checkpoint selection) on the held-out "
                "split '{split}', which no training or model choice looks at.")


def _per_seed(results: list[dict], arm: str, key: str) -> dict[int, float]:
    return {r["seed"]: 100 * r["metrics"][key] for r in results
            if r["arm"] == arm and r["status"] == "ok" and r["metrics"].get(key) is not None}


def summarize(protocol: Protocol, results: list[dict]) -> dict:
    baseline = protocol.baseline
    arms = {}
    for arm in protocol.arms:
        runs = [r for r in results if r["arm"] == arm]
        entry = {"overrides": protocol.arms[arm], "runs": len(runs),
                 "failed": [{"seed": r["seed"], "log": r["log"], "error": r.get("error")} for r in runs
                            if r["status"] != "ok"],
                 "miou": mean_interval(_per_seed(results, arm, "miou").values()).as_dict(),
                 "seconds_per_run": mean_interval([r["seconds"] for r in runs
                                                   if r["status"] == "ok" and r.get("seconds")]).as_dict()}
        if arm_has_aux_output(protocol, arm):
            entry["aux_miou"] = mean_interval(_per_seed(results, arm, "aux_miou").values()).as_dict()
        if arm != baseline:
            entry["vs_baseline"] = paired_comparison(_per_seed(results, arm, "miou"),
                                                     _per_seed(results, baseline, "miou")).as_dict()
            classes = sorted({key for r in results if r["status"] == "ok" for key in r["metrics"]
                              if key.startswith("iou/")})
            entry["class_iou_difference"] = {
                key[4:]: paired_comparison(_per_seed(results, arm, key), _per_seed(results, baseline, key)
                                           ).difference.mean for key in classes}
        arms[arm] = entry
    return arms


def _fmt(interval: dict, digits: int = 1) -> str:
    if interval["n"] == 0 or math.isnan(interval["mean"]):
        return "–"
    if math.isnan(interval["low"]):
        return f"{interval['mean']:.{digits}f} (n=1)"
    return f"{interval['mean']:.{digits}f} ± {interval['half_width']:.{digits}f}"


def _p(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3g}"


def markdown(protocol: Protocol, arms: dict, autoencoder: dict | None, wall_seconds: float, results: list[dict]) -> str:
    lines = [f"# Study `{protocol.name}`: does the label-structure regularizer help?", ""]
    if protocol.description:
        lines += [protocol.description.strip(), ""]
    lines += [f"Protocol: `{protocol.source}`; base config `{protocol.base}`; seeds {protocol.seeds} (paired "
              "across arms: same training subset, data order, augmentation and initial segmenter).",
              SCORING_NOTE.format(split=protocol.score_split),
              f"Wall time of this invocation: {wall_seconds:.0f} s (runs finished earlier are not retrained); "
              f"sum of the run times, phase one included: "
              f"{sum(r.get('seconds') or 0 for r in [*results, *([autoencoder] if autoencoder else [])]):.0f} s.", ""]
    if autoencoder is not None:
        if autoencoder["status"] == "ok":
            lines += [f"Phase one (`{protocol.autoencoder_config}`, trained once, used by every phase-one arm): "
                      f"reconstruction mIoU {100 * autoencoder['metrics']['miou']:.1f} on "
                      f"'{protocol.score_split}', final epoch.", ""]
        else:
            lines += [f"Phase one FAILED: {autoencoder.get('error')} (log {autoencoder['log']}).", ""]
    lines += ["| arm | overrides | runs ok | mIoU (mean ± 95% CI) | aux mIoU | Δ mIoU vs baseline (paired, 95% CI) "
              "| p (paired t) | s / run |", "|---|---|---|---|---|---|---|---|"]
    for arm, entry in arms.items():
        comparison = entry.get("vs_baseline")
        delta = _fmt(comparison["difference"], 2) if comparison else "(baseline)"
        lines.append(f"| {arm} | {' '.join(entry['overrides']) or '–'} | {entry['miou']['n']}/{entry['runs']} | "
                     f"{_fmt(entry['miou'])} | {_fmt(entry['aux_miou']) if 'aux_miou' in entry else '–'} | {delta} | "
                     f"{_p(comparison['p_value']) if comparison else '–'} | {_fmt(entry['seconds_per_run'], 0)} |")
    lines += ["", "Intervals: t-intervals over seeds (n − 1 degrees of freedom); Δ: mean of the per-seed "
              "differences arm − baseline over the seeds both finished; p: two-sided paired t-test.", ""]
    for arm, entry in arms.items():
        differences = {name: value for name, value in entry.get("class_iou_difference", {}).items()
                       if value is not None and not math.isnan(value)}
        if not differences:
            continue
        ranked = sorted(differences.items(), key=lambda item: item[1])
        shown = ranked[:5] + [item for item in ranked[-5:] if item not in ranked[:5]]
        lines += [f"Per-class IoU difference, {arm} − baseline (mean over paired seeds, points; 5 lowest and 5 "
                  f"highest of {len(ranked)}): " + ", ".join(f"{name} {value:+.1f}" for name, value in shown), ""]
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        lines += ["## Failed runs", ""] + [f"- {r['name']}: {r.get('error')} (log: `{r['log']}`)" for r in failed] + [""]
    return "\n".join(lines)


def plot(protocol: Protocol, arms: dict, path: Path, results: list[dict]) -> None:
    """Left: per-arm mIoU (dots: seeds; bar: mean with its 95% interval). Right: per-seed differences
    to the baseline with their mean and 95% interval."""
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    names = list(arms)

    def draw(axis, intervals, points, labels, title):
        for index, (interval, values) in enumerate(zip(intervals, points)):
            axis.plot([index + 0.15] * len(values), values, ".", color="grey", alpha=0.7)
            error = 0 if math.isnan(interval["low"]) else interval["half_width"]
            axis.errorbar(index, interval["mean"], yerr=error, fmt="o", capsize=4)
        axis.set_xticks(range(len(labels)), labels, rotation=20)
        axis.set_xlim(-0.6, len(labels) - 0.4)
        axis.set_title(title)

    baseline = _per_seed(results, protocol.baseline, "miou")
    draw(left, [arms[name]["miou"] for name in names], [list(_per_seed(results, name, "miou").values())
                                                         for name in names],
         names, f"mIoU on '{protocol.score_split}' (95% CI; dots: seeds)")
    left.set_ylabel("mIoU (%)")
    others = [name for name in names if "vs_baseline" in arms[name]]
    draw(right, [arms[name]["vs_baseline"]["difference"] for name in others],
         [[value - baseline[seed] for seed, value in _per_seed(results, name, "miou").items() if seed in baseline]
          for name in others], others, f"paired difference to {protocol.baseline} (95% CI)")
    right.axhline(0, color="grey", linewidth=1)
    right.set_ylabel("Δ mIoU (points)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_outputs(protocol: Protocol, out: Path, results: list[dict], autoencoder: dict | None, *,
                  wall_seconds: float) -> dict:
    arms = summarize(protocol, results)
    summary = {"protocol": str(protocol.source), "name": protocol.name, "score_split": protocol.score_split,
               "scoring": SCORING_NOTE.format(split=protocol.score_split), "seeds": protocol.seeds,
               "autoencoder": autoencoder, "arms": arms, "runs": results, "wall_seconds": wall_seconds}
    write_text_atomic(out / "results.json", json.dumps(json_safe(summary), indent=1, allow_nan=False))
    write_text_atomic(out / "report.md", markdown(protocol, arms, autoencoder, wall_seconds, results))
    plot(protocol, arms, out / "study.png", results)
    return summary
