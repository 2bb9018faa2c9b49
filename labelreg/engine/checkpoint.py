"""What the engine keeps on disk: run directories, checkpoints, RNG state and the resume checks.

A run directory (``<output_dir>/<name>``) holds ``config.yaml``, ``checkpoints/{last,best}.pt``,
``metrics.json``, ``train.log`` and TensorBoard events (``tb/``). It belongs to one process at a
time: ``claim_run_directory`` holds ``<run>/.lock`` (an flock, so the kernel frees it when the
process dies, plus the holder's pid and host) for the run's lifetime. It refuses to start a new run
over existing checkpoints unless resuming or asked to overwrite, and removes temp files that killed
writes left behind. Checkpoints are written last.pt first (the commit point), then best.pt, then
metrics.json; ``repair_run`` brings the other two back in line with last.pt on resume.

A checkpoint (``checkpoint_payload``) holds the model, optimizer, schedule and loss-scaler state,
the ``TrainState`` (epochs and steps done, best value, history), the global RNG states and the
config; ``resume_changes`` names the settings a resume may not change.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelreg.config import Config, ConfigError, to_dict
from labelreg.storage import TEMPORARY_PATTERN, json_safe, load_checkpoint, save_checkpoint, write_json


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


# ----------------------------------------------------------------------------- run directories


class RunDirectoryError(RuntimeError):
    """A run directory that cannot be used as asked (it holds a finished run, another process writes it…)."""


def run_directory(checkpoint_path: str | Path) -> Path:
    """``runs/x/checkpoints/best.pt`` → ``runs/x`` (a loose checkpoint: its folder)."""
    folder = Path(checkpoint_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


LOCK_NAME = ".lock"
_HELD: dict[Path, "RunLock"] = {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``<run>/.lock``: an exclusive flock held while the run is alive; the file names its holder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.took_over: dict | None = None  # the stale holder this lock replaced

    @staticmethod
    def _holder(fd_or_path) -> dict:
        try:
            if isinstance(fd_or_path, int):
                text = os.pread(fd_or_path, 4096, 0).decode(errors="replace")
            else:
                text = Path(fd_or_path).read_text(errors="replace")
            holder = json.loads(text) if text.strip() else {}
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._holder(fd)
                os.close(fd)
                raise RunDirectoryError(
                    f"{self.path.parent} is in use by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
                    f"(lock {self.path}); wait for that run to end, or choose another name=/output_dir=") from None
            try:  # the file may have been released (unlinked) between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder, host = self._holder(fd), socket.gethostname()
        if holder and holder.get("host") not in (None, host):
            os.close(fd)
            raise RunDirectoryError(
                f"{self.path.parent} is locked by pid {holder.get('pid', '?')} on host {holder['host']} (lock "
                f"{self.path}); if that run has ended, delete the lock file and start again")
        if holder and holder.get("pid") != os.getpid():
            self.took_over = holder
        record = json.dumps({"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still holding the flock: nobody else owns this file yet
        finally:
            os.close(self.fd)
            self.fd = None


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` files in the run (and its checkpoints) whose writer is no longer running."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for temporary in folder.glob(TEMPORARY_PATTERN) if folder.is_dir() else ():
            pid = temporary.name.rsplit(".tmp-", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid() or not _pid_alive(int(pid)):
                temporary.unlink(missing_ok=True)
                removed.append(temporary)
    return removed


def _is_main_rank() -> bool:
    """Rank 0 (or no torchrun); read from the environment, so it works before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def claim_run_directory(run_dir: str | Path, *, resume: bool = False, overwrite: bool = False):
    """Hold ``run_dir`` for this process (rank 0 only under torchrun) for the ``with`` block.

    Refuses a run directory that already holds checkpoints unless ``resume`` (continue it) or
    ``overwrite`` (first delete everything in it: checkpoints, metrics, logs, TensorBoard events,
    evaluations and caches such as class frequencies). Nested
    claims of the same folder in one process (the CLI, then ``fit``) are free.
    """
    key = Path(run_dir).resolve()
    if key in _HELD or not _is_main_rank():
        yield _HELD.get(key)
        return
    lock = RunLock(run_dir).acquire()
    _HELD[key] = lock
    try:
        if lock.took_over:
            print(f"{run_dir}: took over the stale lock of pid {lock.took_over.get('pid')} (no longer running)")
        for temporary in remove_stale_temporaries(run_dir):
            print(f"removed {temporary}, left by an interrupted write")
        existing = sorted(p.name for p in (Path(run_dir) / "checkpoints").glob("*.pt"))
        if existing and not resume:
            if not overwrite:
                raise RunDirectoryError(
                    f"{run_dir} already holds checkpoints ({', '.join(existing)}); pass --resume to continue that "
                    "run, --overwrite to replace it, or choose another name=/output_dir=")
            for target in Path(run_dir).iterdir():  # everything the earlier run left, e.g. cached class frequencies
                if target.name == LOCK_NAME:
                    continue
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            print(f"--overwrite: removed everything the earlier run left in {run_dir}")
        yield lock
    finally:
        del _HELD[key]
        lock.release()


def repair_run(run_dir: str | Path, last: dict[str, Any]) -> list[str]:
    """Bring best.pt and metrics.json in line with ``last`` (the loaded last.pt, the commit point).

    last.pt is written first, so after a crash best.pt can only lag when last.pt's own epoch is
    the best one — then best.pt is rewritten from it. Returns what was repaired (or found unrepairable).
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
    return notes


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
