"""Study outputs: ``results.json`` (every run), ``report.md`` (tables) and ``study.png`` (thesis §5.4).

mIoU is shown in percent. Per arm: mean ± 95% t-interval over seeds of the primary mIoU and, for
decoder arms, of the auxiliary output's (the decoder's view, thesis Fig. 5.6); per arm against the
baseline: the paired mean difference, its 95% interval and the paired t-test p-value, and the
per-class IoU differences; the wall time per run. Each phase-one autoencoder with its reconstruction
mIoU and the arms that read it; per scored subset (``score_subsets``: metrics ``<subset>_miou`` and
``aux_<subset>_miou``, as ``labelreg.tasks.evaluate`` names them) the same means and paired difference;
per regularized arm the mechanism diagnostics its runs measured (``<run>/diagnostics.json``,
labelreg.tasks.diagnostics), means over seeds, when there are any.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure  # pyplot-free: writes a file, sets no backend for the importer

from labelreg.storage import json_safe, write_text_atomic
from labelreg.study.protocol import SINGLE_AUTOENCODER, Protocol, arm_has_aux_output
from labelreg.study.stats import mean_interval, paired_comparison

SCORING_NOTE = ("Scored: the FINAL epoch's model (last.pt; no checkpoint selection) on the held-out "
                "split '{split}', which no training or model choice looks at.")


def _per_seed(results: list[dict], arm: str, key: str) -> dict[int, float]:
    return {r["seed"]: 100 * r["metrics"][key] for r in results
            if r["arm"] == arm and r["status"] == "ok" and r["metrics"].get(key) is not None}


# (section, entry) of diagnostics.json → the report's column; measured, never used for a choice
DIAGNOSTICS = [("grad_ratio", "step0"), ("grad_ratio", "frac10"), ("grad_ratio", "end"),
               ("grad_cosine", "step0"), ("grad_cosine", "frac10"), ("grad_cosine", "end"),
               ("code_cosine", None), ("code_negative_fraction", None)]
DIAGNOSTIC_KEYS = [section if entry is None else f"{section}/{entry}" for section, entry in DIAGNOSTICS]
DIAGNOSTIC_TITLES = {"grad_ratio": "aux/main grad norm", "grad_cosine": "grad cosine", "step0": "step 0",
                     "frac10": "10%", "end": "end", "code_cosine": "code cosine",
                     "code_negative_fraction": "negative code entries"}


def diagnostic_values(record: dict | None) -> dict[str, float]:
    """``diagnostics.json`` → {"grad_ratio/step0": x, …, "code_cosine": x, …}: what it holds of ``DIAGNOSTICS``."""
    values = {}
    for section, entry in DIAGNOSTICS:
        value = (record or {}).get(section)
        if entry is not None:
            value = value.get(entry) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[section if entry is None else f"{section}/{entry}"] = float(value)
    return values


def _diagnostics(results: list[dict], arm: str) -> dict[str, dict]:
    per_run = [diagnostic_values(r.get("diagnostics")) for r in results if r["arm"] == arm and r["status"] == "ok"]
    keys = [key for key in DIAGNOSTIC_KEYS if any(key in values for values in per_run)]
    return {key: mean_interval([values[key] for values in per_run if key in values]).as_dict() for key in keys}


def _subsets(protocol: Protocol, results: list[dict], arm: str) -> dict[str, dict]:
    entry = {}
    for subset in protocol.score_subsets:
        key = f"{subset}_miou"
        entry[subset] = {"miou": mean_interval(_per_seed(results, arm, key).values()).as_dict()}
        if arm_has_aux_output(protocol, arm):  # the decoder's view of the subset (evaluation: aux_<subset>_miou)
            entry[subset]["aux_miou"] = mean_interval(_per_seed(results, arm, f"aux_{key}").values()).as_dict()
        if arm != protocol.baseline:
            entry[subset]["vs_baseline"] = paired_comparison(_per_seed(results, arm, key),
                                                             _per_seed(results, protocol.baseline, key)).as_dict()
    return entry


def summarize(protocol: Protocol, results: list[dict]) -> dict:
    baseline = protocol.baseline
    arms = {}
    for arm in protocol.arms:
        runs = [r for r in results if r["arm"] == arm]
        phase_one = protocol.autoencoder_for(arm)
        entry = {"overrides": protocol.arms[arm], "autoencoder": phase_one.name if phase_one else None,
                 "runs": len(runs),
                 "failed": [{"seed": r["seed"], "log": r["log"], "error": r.get("error")} for r in runs
                            if r["status"] != "ok"],
                 "miou": mean_interval(_per_seed(results, arm, "miou").values()).as_dict(),
                 "seconds_per_run": mean_interval([r["seconds"] for r in runs
                                                   if r["status"] == "ok" and r.get("seconds")]).as_dict()}
        if arm_has_aux_output(protocol, arm):
            entry["aux_miou"] = mean_interval(_per_seed(results, arm, "aux_miou").values()).as_dict()
        if protocol.score_subsets:
            entry["subsets"] = _subsets(protocol, results, arm)
        if diagnostics := _diagnostics(results, arm):
            entry["diagnostics"] = diagnostics
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


def _autoencoder_lines(protocol: Protocol, autoencoders: dict[str, dict]) -> list[str]:
    """Phase one: each autoencoder, its reconstruction mIoU on the scored split and the arms that read it."""
    if not autoencoders:
        return []
    lines = [f"Phase one (each autoencoder trained once, shared by the arms that read it; reconstruction mIoU on "
             f"'{protocol.score_split}', final epoch):", "",
             "| autoencoder | config | variant / overrides | arms | reconstruction mIoU | s |",
             "|---|---|---|---|---|---|"]
    for name, record in autoencoders.items():
        phase_one = protocol.autoencoders[name]
        readers = [arm for arm in protocol.arms if (p := protocol.autoencoder_for(arm)) and p.name == name]
        score = (f"{100 * record['metrics']['miou']:.1f}" if record["status"] == "ok"
                 else f"FAILED: {record.get('error')} (log `{record['log']}`)")
        seconds = f"{record['seconds']:.0f}" if record.get("seconds") else "–"
        lines.append(f"| {name} | `{phase_one.config}` | {' '.join(phase_one.all_overrides()) or '–'} | "
                     f"{', '.join(readers)} | {score} | {seconds} |")
    return [*lines, ""]


def _subset_lines(protocol: Protocol, arms: dict) -> list[str]:
    lines = []
    for subset in protocol.score_subsets:
        lines += [f"Subset `{subset}` of '{protocol.score_split}' (metric `{subset}_miou`, same final-epoch models):",
                  "", "| arm | mIoU (mean ± 95% CI) | aux mIoU | Δ mIoU vs baseline (paired, 95% CI) "
                  "| p (paired t) |", "|---|---|---|---|---|"]
        for arm, entry in arms.items():
            part = entry["subsets"][subset]
            comparison = part.get("vs_baseline")
            aux = _fmt(part["aux_miou"]) if "aux_miou" in part else "–"
            lines.append(f"| {arm} | {_fmt(part['miou'])} | {aux} | "
                         f"{_fmt(comparison['difference'], 2) if comparison else '(baseline)'} | "
                         f"{_p(comparison['p_value']) if comparison else '–'} |")
        lines.append("")
    return lines


def _diagnostic_lines(arms: dict) -> list[str]:
    measured = {arm: entry["diagnostics"] for arm, entry in arms.items() if entry.get("diagnostics")}
    if not measured:
        return []
    keys = [key for key in DIAGNOSTIC_KEYS if any(key in values for values in measured.values())]
    titles = [" ".join(DIAGNOSTIC_TITLES[part] for part in key.split("/")) for key in keys]
    lines = ["Mechanism diagnostics (mean ± 95% CI over seeds; measured on a fixed batch and the scored split, "
             "never used for a choice): gradients at the backbone, auxiliary term over the primary terms, at the "
             "first step, 10% of training and the end; predicted code vs the phase-one encoder's code of the "
             "ground truth.", "", f"| arm | {' | '.join(titles)} |", "|---|" + "---|" * len(keys)]
    for arm, values in measured.items():
        cells = [_fmt(values[key], 2) if key in values else "–" for key in keys]
        lines.append(f"| {arm} | {' | '.join(cells)} |")
    return [*lines, ""]


def markdown(protocol: Protocol, arms: dict, autoencoders: dict[str, dict], wall_seconds: float,
             results: list[dict]) -> str:
    lines = [f"# Study `{protocol.name}`: does the label-structure regularizer help?", ""]
    if protocol.description:
        lines += [protocol.description.strip(), ""]
    lines += [f"Protocol: `{protocol.source}`; base config `{protocol.base}`; seeds {protocol.seeds} (paired "
              "across arms: same training subset, data order, augmentation and initial segmenter).",
              SCORING_NOTE.format(split=protocol.score_split),
              f"Wall time of this invocation: {wall_seconds:.0f} s (runs finished earlier are not retrained); "
              f"sum of the run times, phase one included: "
              f"{sum(r.get('seconds') or 0 for r in [*results, *autoencoders.values()]):.0f} s.", ""]
    lines += _autoencoder_lines(protocol, autoencoders)
    lines += ["| arm | overrides | runs ok | mIoU (mean ± 95% CI) | aux mIoU | Δ mIoU vs baseline (paired, 95% CI) "
              "| p (paired t) | s / run |", "|---|---|---|---|---|---|---|---|"]
    for arm, entry in arms.items():
        comparison = entry.get("vs_baseline")
        delta = _fmt(comparison["difference"], 2) if comparison else "(baseline)"
        several = len(protocol.autoencoders) > 1
        reads = f" (phase one: {entry['autoencoder']})" if entry["autoencoder"] and several else ""
        lines.append(f"| {arm} | {' '.join(entry['overrides']) or '–'}{reads} | {entry['miou']['n']}/{entry['runs']} | "
                     f"{_fmt(entry['miou'])} | {_fmt(entry['aux_miou']) if 'aux_miou' in entry else '–'} | {delta} | "
                     f"{_p(comparison['p_value']) if comparison else '–'} | {_fmt(entry['seconds_per_run'], 0)} |")
    lines += ["", "Intervals: t-intervals over seeds (n − 1 degrees of freedom); Δ: mean of the per-seed "
              "differences arm − baseline over the seeds both finished; p: two-sided paired t-test.", ""]
    lines += _subset_lines(protocol, arms) + _diagnostic_lines(arms)
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


def write_outputs(protocol: Protocol, out: Path, results: list[dict], autoencoders: dict[str, dict], *,
                  wall_seconds: float) -> dict:
    """``autoencoders``: name → the record of its phase-one run (those some arm reads)."""
    arms = summarize(protocol, results)
    summary = {"protocol": str(protocol.source), "name": protocol.name, "score_split": protocol.score_split,
               "score_subsets": protocol.score_subsets, "scoring": SCORING_NOTE.format(split=protocol.score_split),
               "seeds": protocol.seeds, "autoencoders": autoencoders, "arms": arms, "runs": results,
               "wall_seconds": wall_seconds}
    if list(protocol.autoencoders) == [SINGLE_AUTOENCODER]:  # the single form's key, as before
        summary["autoencoder"] = autoencoders.get(SINGLE_AUTOENCODER)
    write_text_atomic(out / "results.json", json.dumps(json_safe(summary), indent=1, allow_nan=False))
    write_text_atomic(out / "report.md", markdown(protocol, arms, autoencoders, wall_seconds, results))
    plot(protocol, arms, out / "study.png", results)
    return summary
