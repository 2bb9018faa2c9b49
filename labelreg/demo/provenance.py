"""Where a demo's numbers come from: the code's commit, the machine, the overrides and every stage's resolved
config (``metrics.json``'s ``provenance``, the report's last section), and whether the run was reduced.

A run is **reduced** when anything makes it differ from the recipe in ``configs/demo``: an override, a stage
not run now, or a reported stage whose config differs from its recipe (fewer epochs, say, or an earlier
run's output trained with other settings). The report then opens with a banner saying so,
so that a cut-down run is never mistaken for the real one.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Sequence

import torch
import yaml

import labelreg
from labelreg.config import Config, to_dict
from labelreg.engine.precision import cpu_model, native_bf16_cpu, resolve_amp

REPOSITORY = Path(labelreg.__file__).resolve().parents[1]


def git_commit(repository: Path = REPOSITORY) -> dict:
    """``{"commit": sha or "unknown", "modified": bool or None}``: the checkout's HEAD and whether tracked files
    differ from it; "unknown" outside a git checkout (an installed package) or without git."""
    if not (repository / ".git").exists():
        return {"commit": "unknown", "modified": None}
    try:
        head = subprocess.run(["git", "-C", str(repository), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repository), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "modified": None}
    return {"commit": head or "unknown", "modified": bool(status.strip())}


def machine(device: torch.device) -> dict:
    """The machine the numbers were measured on: CPU model and cores, torch's threads and version, whether the
    CPU has native bf16, the GPU if one is used, and what ``train.amp=auto`` resolves to there."""
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "bf16_native_cpu": native_bf16_cpu(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "amp_auto": resolve_amp("auto", device),
    }


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(cfg: Config, recipe: Config) -> list[str]:
    """The settings where ``cfg`` differs from ``recipe``, as ``key value (recipe value)``."""
    mine, theirs = _flatten(to_dict(cfg)), _flatten(to_dict(recipe))
    return [f"{key} {mine.get(key)!r} (recipe {theirs.get(key)!r})" for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key)]


EPOCH_KEYS = ("train.epochs", "weak.loc_epochs", "weak.seg_epochs", "weak.dense_epochs")


def fewer_epochs(cfg: Config, recipe: Config) -> list[str]:
    """``key trained/recipe`` for each epoch count of ``cfg`` below its recipe's."""
    mine, theirs = _flatten(to_dict(cfg)), _flatten(to_dict(recipe))
    return [f"{key} {mine[key]}/{theirs[key]}" for key in EPOCH_KEYS
            if isinstance(mine.get(key), int) and isinstance(theirs.get(key), int) and mine[key] < theirs[key]]


def reduced_reasons(overrides: Sequence[str], not_run: Sequence[str], differences: dict[str, list[str]],
                    fewer: dict[str, list[str]]) -> list[str]:
    """Why this run is not the recipe (empty: it is): overrides, stages not run now, stages trained for fewer
    epochs than their recipe (``fewer``), and the reported stages whose settings differ from it (``differences``,
    listed in full in the provenance section)."""
    reasons = []
    if overrides:
        reasons.append("overrides " + " ".join(f"`{text}`" for text in overrides))
    if not_run:
        reasons.append("stages not run now: " + ", ".join(not_run))
    if any(fewer.values()):
        reasons.append("fewer epochs than the recipe: " + "; ".join(
            f"{stage} {', '.join(keys)}" for stage, keys in fewer.items() if keys))
    changed = [stage for stage, keys in differences.items() if keys]
    if changed:
        reasons.append(f"settings differ from the recipe in {', '.join(changed)} (listed under Provenance)")
    return reasons


def banner(reasons: Sequence[str]) -> str:
    """The report's opening lines for a reduced run ('' for the recipe)."""
    if not reasons:
        return ""
    return ("> **Reduced run — not the demo's recipe.** " + "; ".join(reasons) + ". Its numbers are not comparable "
            "with a full `labelreg demo`.\n\n")


def provenance_markdown(record: dict) -> str:
    """The report's provenance section from ``metrics.json``'s ``provenance`` record."""
    commit, host = record["code"], record["machine"]
    modified = " (with uncommitted changes)" if commit["modified"] else ""
    lines = [f"- code: labelreg {record['version']}, commit `{commit['commit']}`{modified}",
             f"- machine: {host['cpu']}, {host['cores']} cores ({host['torch_threads']} torch threads), torch "
             f"{host['torch']}, native bf16 on the CPU: {'yes' if host['bf16_native_cpu'] else 'no'}, device "
             f"{host['device']}" + (f" ({host['gpu']})" if host["gpu"] else "") + f"; train.amp=auto runs in "
             f"{host['amp_auto']} here",
             "- command: `" + " ".join(record["command"]) + "`",
             "- overrides: " + (", ".join(f"`{text}`" for text in record["overrides"]) or "none")]
    lines += [f"  - {note}" for note in record["override_notes"]]
    lines.append("- stages: " + ", ".join(f"{name} ({status})" for name, status in record["status"].items()))
    for stage, keys in record["differences"].items():
        if keys:
            lines.append(f"- {stage} differs from its recipe: " + ", ".join(keys))
    lines += ["", "Each stage's resolved config (also `<stage>/config.yaml`):", ""]
    for name, config in record["configs"].items():
        text = yaml.safe_dump(config, sort_keys=False).rstrip()
        lines += [f"<details><summary>{name}</summary>", "", "```yaml", text, "```", "", "</details>", ""]
    return "\n".join(lines)
