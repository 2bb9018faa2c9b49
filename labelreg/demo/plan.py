"""What one ``labelreg demo`` does, decided before it writes anything: its stages, the overrides each stage's
config gets, and the folders it may write.

- **Stages**: ``--stages a,b`` runs only those, ``--skip a,b`` all but those (``select_stages``). A stage that
  needs another (``NEEDS``: the regularized segmenter needs phase one, the queries need both) reads that
  stage's finished output from an earlier demo in the same ``--out`` when it is not run now.
- **Overrides** (``route_overrides``): ``section.key=value`` reaches every selected stage whose config reads
  that section (``regularizer.*`` only the regularized segmenter, ``depth.*`` the two depth stages,
  ``weak.*`` the weak stage); ``train.epochs=N`` also shortens the weak stage (its localization, head and
  dense-baseline epochs become N). ``STAGE:section.key=value`` reaches that stage only. Each override is
  reported with the stages it reaches and those it does not apply to; ``model.*`` names a different model in
  each stage, so it must name its stage.
- **Folders** (``check_folders``): the demo writes only into stage folders that are empty, absent, or its own
  earlier output (``STAGE_MARKER`` inside), and puts its report beside them only where ``--out`` holds no
  such file or is its own (``DEMO_MARKER``). Anything else is refused before the first write, naming the
  folder and the way out; nothing of the user's is ever deleted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from labelreg.config import ConfigError

DEMO_MARKER = ".labelreg-demo"  # in --out: written by the demo, so its report and figures there are its own
STAGE_MARKER = ".labelreg-demo-stage"  # in a stage folder: the demo's record of the stage (config digest, finished)
NEEDS = {"seg_reg": ("ae",), "queries": ("ae", "seg_reg")}  # a stage → the stages whose output it reads
# files the demo writes into --out itself (report, summary, figures): a user's file of that name blocks the demo
REPORT_FILES = ("report.md", "metrics.json", "queries.json", "queries.png", "ae_reconstructions.png",
                "ae_curves.png", "seg_predictions.png", "seg_curves.png",
                "depth_predictions.png", "weak_points.png", "weak_predictions.png")
# the config sections each stage reads (the data stage: the synthetic data's size and seed)
STAGE_SECTIONS = {
    "data": {"data"},
    "ae": {"data", "model", "optim", "train"},
    "seg": {"data", "model", "optim", "train"},
    "seg_reg": {"data", "model", "optim", "train", "regularizer"},
    "twopart": {"data", "model", "optim", "train", "depth"},
    "single": {"data", "model", "optim", "train", "depth"},
    "weak": {"data", "train", "weak"},
}
WEAK_TRAIN_KEYS = {"seed", "device"}  # the weak pipeline's reads of train.* (epochs: see WEAK_EPOCH_KEYS)
WEAK_EPOCH_KEYS = ("loc_epochs", "seg_epochs", "dense_epochs")  # what train.epochs=N sets in the weak stage


def split_names(values: Sequence[str] | None) -> list[str]:
    """``["ae,seg", "weak"]`` → ``["ae", "seg", "weak"]`` (``--stages`` and ``--skip`` take commas or repeats)."""
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def select_stages(available: Sequence[str], stages: Sequence[str] | None = None,
                  skip: Sequence[str] | None = None) -> list[str]:
    """The stages to run, in ``available``'s order: ``stages`` (default: all) minus ``skip``."""
    wanted, skipped = split_names(stages), split_names(skip)
    for flag, names in (("--stages", wanted), ("--skip", skipped)):
        unknown = [name for name in names if name not in available]
        if unknown:
            raise ConfigError(f"{flag}: unknown stage {unknown[0]!r}; the stages are {', '.join(available)}")
    selected = [name for name in available if (not wanted or name in wanted) and name not in skipped]
    if not selected:
        raise ConfigError(f"--stages {','.join(wanted) or 'all'} --skip {','.join(skipped)} leaves no stage to run")
    return selected


@dataclass
class Routing:
    """Each selected stage's overrides, and one line per given override saying where it went."""
    per_stage: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _applies(stage: str, section: str, key: str) -> bool:
    if section not in STAGE_SECTIONS.get(stage, ()):
        return False
    return not (stage == "weak" and section == "train" and key not in WEAK_TRAIN_KEYS | {"epochs"})


def _for_stage(stage: str, section: str, key: str, value: str) -> list[str]:
    """The override as the stage's config takes it: ``train.epochs`` becomes the weak stage's epoch counts."""
    if stage == "weak" and (section, key) == ("train", "epochs"):
        return [f"weak.{name}={value}" for name in WEAK_EPOCH_KEYS]
    return [f"{section}.{key}={value}"]


def _not_applied_reason(section: str) -> str:
    return {"regularizer": "only seg_reg has a regularizer", "depth": "only twopart and single read depth.*",
            "weak": "only the weak stage reads weak.*",
            "optim": "the weak stage's rates are weak.loc_lr, weak.seg_lr, weak.pretrain_lr",
            "train": "the weak stage reads train.epochs, train.seed and train.device only",
            "model": "the weak stage's network is weak.backbone"}.get(section, f"it does not read {section}.*")


def route_overrides(overrides: Sequence[str], selected: Sequence[str]) -> Routing:
    """Send each ``[STAGE:]section.key=value`` to the selected stages it applies to (module docstring)."""
    routing = Routing({stage: [] for stage in selected if stage in STAGE_SECTIONS})
    models = [stage for stage in routing.per_stage if "model" in STAGE_SECTIONS[stage]]
    for text in overrides:
        target, sep, value = text.partition("=")
        stage, colon, key_path = target.rpartition(":") if ":" in target else ("", "", target)
        section, dot, key = key_path.partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {text!r}: expected section.key=value, or STAGE:section.key=value")
        if colon:
            if stage not in STAGE_SECTIONS:
                raise ConfigError(f"override {text!r}: {stage!r} is not a stage with a config; choose one of "
                                  f"{', '.join(STAGE_SECTIONS)}")
            if not _applies(stage, section, key):
                raise ConfigError(f"override {text!r} does not apply to {stage}: {_not_applied_reason(section)}")
            if stage in routing.per_stage:
                routing.per_stage[stage] += _for_stage(stage, section, key, value)
                routing.notes.append(f"{text} → {stage}")
            else:
                routing.notes.append(f"{text}: {stage} is not run now, so it does not apply")
            continue
        if section == "model" and len(models) > 1:
            raise ConfigError(f"override {text!r}: each stage has its own model; name the stage, e.g. "
                              f"{models[-1]}:{key_path}={value}")
        reached, skipped, rewritten = [], [], ""
        for stage in routing.per_stage:
            if _applies(stage, section, key):
                routing.per_stage[stage] += _for_stage(stage, section, key, value)
                reached.append(stage)
                if _for_stage(stage, section, key, value) != [key_path + "=" + value]:
                    rewritten = f" ({stage} as {', '.join(_for_stage(stage, section, key, value))})"
            elif stage != "data":
                skipped.append(stage)
        note = f"{text} → {', '.join(s for s in reached if s != 'data') or 'no stage run now'}{rewritten}"
        routing.notes.append(note + (f"; not {', '.join(skipped)}: {_not_applied_reason(section)}" if skipped else ""))
    return routing


def read_stage_marker(folder: Path) -> dict | None:
    """The demo's record in a stage folder, or None where there is none (or it cannot be read)."""
    try:
        record = json.loads((folder / STAGE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def check_folders(out: Path, stages: Sequence[str]) -> None:
    """Refuse (one line, naming the folder and the way out) before anything is written when a stage folder the
    demo would write is not empty and not its own, or ``out`` holds a report file of the user's."""
    foreign = [out / stage for stage in stages if (out / stage).exists() and not (
        (out / stage).is_dir() and (not any((out / stage).iterdir()) or (out / stage / STAGE_MARKER).is_file()))]
    if foreign:
        others = f" (also {', '.join(str(path) for path in foreign[1:])})" if foreign[1:] else ""
        raise DemoFolderError(
            f"{foreign[0]} is not an earlier output of labelreg demo (no {STAGE_MARKER} in it), so the demo will not "
            f"write or delete anything there{others}; choose another --out, or --skip {foreign[0].name}")
    if out.is_dir() and not (out / DEMO_MARKER).is_file():
        taken = [name for name in REPORT_FILES if (out / name).exists()]
        if taken:
            raise DemoFolderError(
                f"{out / taken[0]} was not written by labelreg demo (no {DEMO_MARKER} in {out}), so the demo will "
                "not replace it; choose another --out")


class DemoFolderError(RuntimeError):
    """A folder the demo would write holds something it did not write."""
