"""The demo's stage folders: training a stage into ``<out>/<stage>``, the demo's record in it, and reading a
finished stage back instead of training it again.

Each stage folder carries ``plan.STAGE_MARKER``, written before training starts: the stage, a digest of its
resolved config, the finish marks of the stages it read (``needs``), and once done ``finished_at`` and the
training's wall time. A later demo with the same ``--out`` reads a stage back when it finished with the same
config and the same inputs (``ensure_trained``), and trains it again otherwise (``--fresh``: always). Training
again replaces only what a run writes (``claim_run_directory(overwrite=True)``); the demo never trains into a
folder without its marker that holds anything (``plan.check_folders``).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, NamedTuple

from labelreg.config import Config, config_from_dict, load_config, to_dict
from labelreg.demo.plan import STAGE_MARKER, check_folders, read_stage_marker
from labelreg.engine import claim_run_directory
from labelreg.storage import load_checkpoint, write_json


class TrainedRun(NamedTuple):
    """One trained stage: its config, best checkpoint (with every epoch's history), the best epoch's
    validation metrics without the ``val/`` prefix, and the wall time of its training."""
    cfg: Config
    checkpoint: dict
    best: dict
    seconds: float


def stage_config(config_path: Path, name: str, out: Path, data_root: Path, overrides: list[str]) -> Config:
    """A stage's config: the recipe in ``config_path``, ``overrides``, then the demo's folder (``out/name``)
    and data root, which overrides cannot move."""
    return load_config(config_path, [*overrides, f"output_dir={out}", f"name={name}", f"data.root={data_root}"])


def config_digest(cfg: Config) -> str:
    """A fingerprint of the resolved config: equal digests, equal settings."""
    text = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


RUN_FILES = ("checkpoints/best.pt", "checkpoints/last.pt")  # what a finished training stage holds


def finished_mark(folder: Path) -> str | None:
    """The finish mark of the demo stage in ``folder`` (None: no finished demo stage there, or its files are gone)."""
    marker = read_stage_marker(folder)
    if not marker or not marker.get("finished_at"):
        return None
    if not all((folder / name).is_file() for name in marker.get("outputs", RUN_FILES)):
        return None
    return marker["finished_at"]


def load_trained(folder: Path) -> TrainedRun:
    """A finished stage read back: its config as trained, best checkpoint with every epoch's history."""
    checkpoint = load_checkpoint(folder / "checkpoints" / "best.pt")
    checkpoint["history"] = load_checkpoint(folder / "checkpoints" / "last.pt")["history"]  # every epoch
    best = {key[4:]: value for key, value in checkpoint["metrics"].items() if key.startswith("val/")}
    marker = read_stage_marker(folder) or {}
    return TrainedRun(config_from_dict(checkpoint["config"]), checkpoint, best, float(marker.get("seconds", 0.0)))


def start_stage(cfg: Config, needs: dict[str, str] | None = None, outputs: tuple[str, ...] = RUN_FILES) -> dict:
    """Refuse a folder the demo did not write; record the stage as started (unfinished) in it. ``outputs``: the
    files (relative to the folder) a finished stage holds."""
    folder = cfg.run_dir
    check_folders(folder.parent, [folder.name])
    folder.mkdir(parents=True, exist_ok=True)
    record = {"written_by": "labelreg demo", "stage": folder.name, "digest": config_digest(cfg),
              "needs": dict(needs or {}), "outputs": list(outputs), "finished_at": None}
    write_json(folder / STAGE_MARKER, record)
    return record


def finish_stage(folder: Path, record: dict, seconds: float) -> None:
    write_json(folder / STAGE_MARKER, {**record, "finished_at": str(time.time_ns()), "seconds": round(seconds, 1)})


def train_config(cfg: Config, trainer: Callable[[Config], object], needs: dict[str, str] | None = None) -> TrainedRun:
    """Train ``cfg`` into its run directory (a stage folder of the demo's), replacing an earlier run there."""
    record = start_stage(cfg, needs)
    started = time.perf_counter()
    with claim_run_directory(cfg.run_dir, overwrite=True):  # only the files an earlier run wrote go
        trainer(cfg)
    seconds = time.perf_counter() - started
    finish_stage(cfg.run_dir, record, seconds)
    return load_trained(cfg.run_dir)._replace(cfg=cfg)


def train_stage(config_path: Path, name: str, out: Path, data_root: Path, overrides: list[str],
                trainer: Callable[[Config], object]) -> TrainedRun:
    """Train the recipe in ``config_path`` (with ``overrides``) into ``out/name``, afresh."""
    return train_config(stage_config(config_path, name, out, data_root, overrides), trainer)


def can_reuse(cfg: Config, needs: dict[str, str]) -> bool:
    """Whether ``cfg.run_dir`` holds this stage finished with the same config and the same inputs."""
    marker = read_stage_marker(cfg.run_dir)
    return bool(finished_mark(cfg.run_dir) and marker.get("digest") == config_digest(cfg)
                and marker.get("needs", {}) == needs)


def ensure_trained(cfg: Config, trainer: Callable[[Config], object], *, needs: dict[str, str],
                   fresh: bool) -> tuple[TrainedRun, str]:
    """The stage trained, or read back when it finished earlier with the same config and inputs (not ``fresh``);
    with what happened: "trained" or "finished earlier, same config"."""
    if not fresh and can_reuse(cfg, needs):
        print(f"{cfg.run_dir.name}: finished earlier with the same config in {cfg.run_dir}; read back "
              "(--fresh trains it again)")
        return load_trained(cfg.run_dir)._replace(cfg=cfg), "finished earlier, same config"
    return train_config(cfg, trainer, needs), "trained"
