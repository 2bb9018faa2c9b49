"""What the engine keeps on disk: checkpoints, RNG state, the resume checks and the repairs on resume.

A run directory (``<output_dir>/<name>``, see :mod:`labelreg.engine.rundir`) holds ``config.yaml``,
``checkpoints/{last,best}.pt``, ``metrics.json``, ``train.log`` and TensorBoard events (``tb/``).
Every epoch is written last.pt first (the commit point), then best.pt, then metrics.json, then its
``train.log`` line; ``repair_run`` brings the other three back in line with last.pt on resume.

A checkpoint (``checkpoint_payload``) holds the model, optimizer, schedule and loss-scaler state,
the ``TrainState`` (epochs and steps done, best value, history), the global RNG states and the
config; ``resume_changes`` names the settings a resume may not change.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelreg.config import Config, ConfigError, to_dict
from labelreg.storage import json_safe, load_checkpoint, save_checkpoint, write_json


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint and restored on resume."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_value: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "history": self.history}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> "TrainState":
        """The state a checkpoint (``checkpoint_payload``) records."""
        return cls(epoch=checkpoint["epoch"], step=checkpoint["step"], best_value=checkpoint.get("best_value"),
                   best_epoch=checkpoint.get("best_epoch"), history=list(checkpoint.get("history", [])))


# ----------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain Python values, so ``weights_only`` loading accepts them."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the states ``capture_rng_state`` took (CUDA's only where there is a GPU)."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- repairs on resume


def repair_run(run_dir: str | Path, last: dict[str, Any]) -> list[str]:
    """Bring best.pt, metrics.json and train.log in line with ``last`` (the loaded last.pt, the commit point).

    last.pt is written first, so after a crash best.pt can only lag when last.pt's own epoch is
    the best one — then best.pt is rewritten from it. metrics.json is rewritten from last.pt's history,
    and train.log gets the lines of the epochs it lacks (``repair_train_log``). Returns what was
    repaired (or found unrepairable).
    """
    notes = []
    run_dir = Path(run_dir)
    best_path = run_dir / "checkpoints" / "best.pt"
    best_epoch = last.get("best_epoch")
    stored = None
    if best_path.is_file():
        try:
            stored = load_checkpoint(best_path).get("epoch")
        except RuntimeError:
            stored = "unreadable"
    if best_epoch is not None and stored != best_epoch:
        if best_epoch == last["epoch"]:
            save_checkpoint(best_path, last)
            notes.append(f"repaired {best_path}: it held epoch {stored}, last.pt records best epoch {best_epoch}")
        else:
            notes.append(f"WARNING: {best_path} holds epoch {stored} but last.pt records best epoch {best_epoch}, "
                         "which cannot be rebuilt from last.pt")
    metrics_path = run_dir / "metrics.json"
    try:
        recorded = json.loads(metrics_path.read_text()).get("history")
    except (OSError, ValueError, AttributeError):
        recorded = None
    history = json_safe(list(last.get("history", [])))
    if recorded != history:
        config = last.get("config", {}).get("train", {})
        state = TrainState.from_checkpoint(last)
        _write_metrics(run_dir, state, config.get("best_metric"), config.get("best_mode"))
        notes.append(f"rewrote {metrics_path} from last.pt ({len(history)} epochs; it held "
                     f"{'none' if recorded is None else len(recorded)})")
    return notes + repair_train_log(run_dir, last)


_LOGGED_EPOCH = re.compile(r"^\[.*\] epoch (\d+)/\d+ \(", re.MULTILINE)


def epoch_log_line(name: str, entry: dict[str, Any], epochs: int) -> str:
    """The ``train.log`` line of one history entry: ``[name] epoch k/epochs (seconds)  train/… val/…``."""
    summary = "  ".join(f"{key}={value:.4f}" for key, value in entry.items()
                        if isinstance(value, float) and key != "seconds" and key.count("/") == 1)
    return f"[{name}] epoch {entry['epoch']}/{epochs} ({entry.get('seconds', 0.0):.1f}s)  {summary}"


def repair_train_log(run_dir: str | Path, last: dict[str, Any]) -> list[str]:
    """Append to ``train.log`` the lines of last.pt's epochs it lacks (a crash after last.pt, before the log line).

    The lines are rebuilt from last.pt's history (with the epoch count of its config); the returned note
    (which ``fit`` logs after them) says so. A log line is appended after last.pt, so only the latest
    epochs can be missing, and appending keeps the log in epoch order.
    """
    log = Path(run_dir) / "train.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    logged = {int(epoch) for epoch in _LOGGED_EPOCH.findall(text)}
    missing = [entry for entry in last.get("history", []) if entry.get("epoch") not in logged]
    if not missing:
        return []
    config = last.get("config", {})
    epochs = config.get("train", {}).get("epochs", last["epoch"])
    note = (f"repaired {log}: epoch {', '.join(str(entry['epoch']) for entry in missing)} "
            "rewritten from last.pt (the run stopped before logging it)")
    with open(log, "a") as handle:
        handle.write("".join(epoch_log_line(config.get("name", "?"), entry, epochs) + "\n" for entry in missing))
    return [note]


# keys a resume may change: they only steer the loop (how long, how often, where), not the state it restores
RESUME_CHANGEABLE = ("train.epochs", "train.max_steps", "train.eval_every", "train.log_every", "train.device",
                     "train.images_to_log", "data.num_workers")
_RUN_IDENTITY = ("name", "output_dir")  # a --resume-from may continue another run's checkpoint in a new folder


def _flatten(values: dict) -> dict[str, Any]:
    """{"train": {"epochs": 3}, "name": "x"} → {"train.epochs": 3, "name": "x"} (sections only; dict fields stay whole)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def resume_changes(stored: dict, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """{key: (checkpoint's value, new value)} for every setting the new config changes.

    Raises ``ConfigError`` naming the keys outside ``RESUME_CHANGEABLE``: the restored optimizer,
    model and schedule state would not follow them, yet config.yaml would record them.
    Keys the checkpoint does not know (added to the code later) are not compared.
    """
    old, new = _flatten(stored), _flatten(to_dict(cfg))
    changes = {key: (old[key], value) for key, value in new.items()
               if key in old and old[key] != value and key not in _RUN_IDENTITY}
    refused = sorted(key for key in changes if key not in RESUME_CHANGEABLE)
    if refused:
        listed = ", ".join(f"{key}: {changes[key][0]!r} → {changes[key][1]!r}" for key in refused)
        raise ConfigError(
            f"resume cannot change {listed} (the checkpoint was trained with the first value and its restored "
            f"state would not follow the new one); drop these overrides, or start a new run (another name= or "
            f"--overwrite). A resume may change only {', '.join(RESUME_CHANGEABLE)}")
    return changes


# ----------------------------------------------------------------------------- checkpoint payload


def checkpoint_payload(model: nn.Module, optimizer, scheduler, scaler, state: TrainState, cfg: Config,
                       metrics: dict[str, float] | None) -> dict[str, Any]:
    """Everything a resume restores (``TrainState.from_checkpoint``, ``restore_rng_state``) and the config."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "best_value": state.best_value,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "metrics": metrics or {},
        "rng": capture_rng_state(),
        "config": to_dict(cfg),
    }


def write_metrics_json(run_dir: Path, state: TrainState, cfg: Config) -> None:
    """``metrics.json``: the best and last epochs and the whole history."""
    _write_metrics(run_dir, state, cfg.train.best_metric, cfg.train.best_mode)


def _write_metrics(run_dir: Path, state: TrainState, best_metric: str | None, best_mode: str | None) -> None:
    """metrics.json: strict JSON (a NaN metric is written as null)."""
    best = next((entry for entry in state.history if entry.get("epoch") == state.best_epoch), None)
    summary = {"best_metric": best_metric, "best_mode": best_mode, "best": best,
               "last": state.history[-1] if state.history else None, "history": state.history}
    write_json(Path(run_dir) / "metrics.json", summary)
