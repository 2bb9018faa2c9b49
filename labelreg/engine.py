"""One training engine for every trainer: plain functions, no hooks.

A trainer hands ``fit`` a :class:`Task` — the model plus four plain functions
(augment a batch, run the model, name the loss terms, evaluate) — and the data
loaders. The engine owns everything else: optimizer and schedule, AMP, gradient
clipping, TensorBoard and tqdm, evaluation every N epochs, best/last
checkpoints written atomically, exact resume at epoch boundaries, and stopping
with a clear message when the loss goes non-finite (the last good checkpoint on
disk is never overwritten by a bad one).

Under torchrun the model is wrapped in DistributedDataParallel, every rank trains on
its share of each global batch and only rank 0 writes (see :mod:`labelreg.distributed`).

Exact resume: the shuffling order draws from generators reseeded from ``(seed, epoch)``
and the device augmentation from ``(seed, epoch, rank)`` at the start of every epoch (each
rank its own augmentation, rank 0 the single-process stream), and the
global RNG states (torch, CUDA, numpy, random) are stored in the checkpoint, so
stopping after epoch k and resuming reproduces the uninterrupted run.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import pickle
import random
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from labelreg.config import Config, ConfigError, OptimConfig, save_config, to_dict

Batch = dict[str, Any]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Task:
    """What a trainer gives the engine.

    - ``augment(batch) -> batch``: device-side training augmentation (and normalisation).
    - ``eval_augment(batch) -> batch``: device-side evaluation preprocessing.
    - ``forward(model, batch) -> outputs``: a dict of named outputs.
    - ``losses(outputs, batch) -> terms``: a dict of named scalar loss terms; the
      engine multiplies each by ``train.loss_weights.get(name, 1)`` and sums them.
    - ``evaluate(model, loader, device) -> metrics``: flat dict of floats (the
      engine prefixes them with ``val/`` in logs).
    - ``visualize(model, batch) -> 3×H×W float image in [0, 1]`` (optional, for TensorBoard).
    - ``before_epoch(epoch)`` (optional): runs before each epoch, also after a resume, so
      epoch-dependent state (like a backbone frozen for the first epochs) is a function of the epoch.
    - ``dynamic_loss_weights(history)`` (optional): per-epoch loss weights computed from the
      history of earlier epochs (e.g. balancing terms by their running averages); recorded as
      ``weight/<term>`` in the history.
    """

    model: nn.Module
    augment: Callable[[Batch], Batch]
    eval_augment: Callable[[Batch], Batch]
    forward: Callable[[nn.Module, Batch], dict[str, torch.Tensor]]
    losses: Callable[[dict[str, torch.Tensor], Batch], dict[str, torch.Tensor]]
    evaluate: Callable[[nn.Module, Iterable[Batch], torch.device], dict[str, float]]
    visualize: Callable[[nn.Module, Batch], torch.Tensor] | None = None
    generators: list[torch.Generator] = field(default_factory=list)  # reseeded every epoch, the same on every rank
    rank_generators: list[torch.Generator] = field(default_factory=list)  # reseeded every epoch, per rank (augment)
    before_epoch: Callable[[int], None] | None = None  # called with the 0-based epoch (e.g. staged freezing)
    dynamic_loss_weights: Callable[[list[dict]], dict[str, float]] | None = None  # from the history (balancing)


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_value: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "history": self.history}


# ----------------------------------------------------------------------------- device, seeds, RNG


def training_device(cfg: Config) -> torch.device:
    """This process's device for ``cfg.train.device``; joins the process group under torchrun."""
    from labelreg.distributed import setup

    return setup(cfg.train.device)[1]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's generators; ``rank`` gives each process its own augmentation stream
    (rank 0's is the single-process stream, so single-process runs do not depend on it)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729 + 17) % 2**63


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
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints


class RunDirectoryError(RuntimeError):
    """A run directory that cannot be used as asked (it holds a finished run, another process writes it…)."""


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_failed(error: BaseException, path: Path) -> OSError:
    """An OSError naming ``path`` (torch reports a full disk as a RuntimeError of its stream writer)."""
    code = getattr(error, "errno", None)
    if code is None:
        try:
            if shutil.disk_usage(path.parent).free < 1 << 20:
                code = errno.ENOSPC
        except OSError:
            pass
    if code == errno.ENOSPC:
        return OSError(errno.ENOSPC, "no space left on device", str(path))
    return OSError(code or errno.EIO, getattr(error, "strerror", None) or str(error), str(path))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temp file in the same folder, fsync, then rename over the target.

    Write failures (full disk, read-only folder) raise an ``OSError`` that names ``path``."""
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise _write_failed(error, path) from error
    except RuntimeError as error:  # torch's stream writer reports a failed write (e.g. a full disk) this way
        if "write" not in str(error).lower():
            raise
        raise _write_failed(error, path) from error
    finally:
        temporary.unlink(missing_ok=True)


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and ±inf replaced by None, so the JSON is strict (no bare NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: str | Path, value: Any) -> None:
    """Strict JSON (non-finite numbers become null), written atomically."""
    path = Path(path)
    text = json.dumps(_json_safe(value), indent=2, allow_nan=False)
    temporary = _temporary_name(path)
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        raise _write_failed(error, path) from error
    finally:
        temporary.unlink(missing_ok=True)


def run_directory(checkpoint_path: str | Path) -> Path:
    """``runs/x/checkpoints/best.pt`` → ``runs/x`` (a loose checkpoint: its folder)."""
    folder = Path(checkpoint_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


# ----------------------------------------------------------------------------- run directories
#
# A run directory belongs to one process at a time: ``claim_run_directory`` holds ``<run>/.lock``
# (an flock, so the kernel frees it when the process dies, plus the holder's pid and host) for the
# run's lifetime. It refuses to start a new run over existing checkpoints unless resuming or asked
# to overwrite, and removes temp files that killed writes left behind. Checkpoints are written
# last.pt first (the commit point), then best.pt, then metrics.json; ``repair_run`` brings the
# other two back in line with last.pt on resume.

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
        for temporary in folder.glob(".*.tmp-*") if folder.is_dir() else ():
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
    history = _json_safe(list(last.get("history", [])))
    if recorded != history:
        config = last.get("config", {}).get("train", {})
        state = TrainState(epoch=last["epoch"], step=last["step"], best_value=last.get("best_value"),
                           best_epoch=best_epoch, history=list(last.get("history", [])))
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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return safe_load(path, "checkpoint", map_location)


def safe_load(path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming the file.

    A file that holds code or non-tensor objects (anything beyond tensors, numbers, strings and
    containers of them) is refused, never executed: torch's own advice to retry with
    ``weights_only=False`` would run whatever the file holds.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" not in str(error).lower():  # no foreign object named: a corrupt file
            raise RuntimeError(f"cannot read {what} {path}: truncated, corrupt or not a torch file") from None
        raise RuntimeError(
            f"{what} {path} was refused: it holds code or non-tensor objects, which are never loaded (loading "
            "them could run arbitrary code). If you trust the file, re-save only its tensors, e.g. "
            "torch.save(state_dict, 'clean.pt') with plain tensors/numbers/strings, and use that file"
        ) from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise RuntimeError(f"cannot read {what} {path} (truncated or not a torch file? "
                           f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error


# ----------------------------------------------------------------------------- optimizer and schedule


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Named trainable parameter groups: the model's own ``param_groups()`` if it has one, else one group."""
    if hasattr(model, "param_groups"):
        groups = {name: [p for p in params if p.requires_grad] for name, params in model.param_groups().items()}
    else:
        groups = {"all": [p for p in model.parameters() if p.requires_grad]}
    return {name: params for name, params in groups.items() if params}


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(model)
    known = set(model.param_groups()) if hasattr(model, "param_groups") else set(groups)
    unknown = sorted(set(cfg.group_lr) - known)  # a frozen (empty) group is known but has nothing to train
    if unknown:
        raise ConfigError(f"optim.group_lr names unknown group(s) {unknown}; this model's groups: {sorted(groups)}")
    param_groups = [{"params": params, "lr": cfg.group_lr.get(name, cfg.lr), "name": name} for name, params in groups.items()]
    if not param_groups:
        raise ConfigError("the model has no trainable parameters")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.optimizer={cfg.optimizer!r}; choose 'adam' or 'sgd'")


def lr_factor(cfg: OptimConfig, step: int, epoch: int, total_steps: int) -> float:
    """Multiplier of every group's base learning rate for optimizer step ``step`` in epoch ``epoch`` (0-based).

    The step schedule follows epochs (so epochs of different lengths, e.g. a mixed phase then a
    labeled-only phase, keep their milestones); poly follows steps.
    """
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(1 for milestone in cfg.milestones if epoch >= milestone)
    if cfg.schedule == "poly":
        return max(0.0, 1.0 - step / max(total_steps, 1)) ** cfg.poly_power
    raise ConfigError(f"optim.schedule={cfg.schedule!r}; choose 'step', 'poly' or 'constant'")


class EpochAwareLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR over ``lr_factor`` that also knows the current epoch (set by ``fit`` via ``set_epoch``)."""

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        lr_factor(cfg, 0, 0, total_steps)  # validate the schedule name now, not mid-training
        self.epoch = 0
        super().__init__(optimizer, lambda step: lr_factor(cfg, step, self.epoch, total_steps))

    def set_epoch(self, epoch: int) -> None:
        """Enter ``epoch`` and apply its rate at once (LambdaLR would only update after the next step)."""
        self.epoch = epoch
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * factor(self.last_epoch)


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> EpochAwareLR:
    return EpochAwareLR(cfg, optimizer, total_steps)


# ----------------------------------------------------------------------------- data


PAD_VALUES = {"image": 0, "label": 255, "depth": 0.0}


def pad_collate(samples: list[Batch]) -> Batch:
    """Collate sample dicts, padding images of different sizes to the largest at bottom/right.

    Padding: image 0, label 255 (ignored by losses and metrics), depth 0 (invalid).
    Every batch gets ``size``: B×2 int64 original (H, W), so predictions can be cropped back.
    """
    from torch.utils.data import default_collate

    if "image" not in samples[0]:
        return default_collate(samples)
    sizes = [tuple(sample["image"].shape[-2:]) for sample in samples]
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    if any(size != (height, width) for size in sizes):
        padded = []
        for sample in samples:
            sample = dict(sample)
            for key, value in PAD_VALUES.items():
                if key in sample:
                    tensor = sample[key]
                    pad = (0, width - tensor.shape[-1], 0, height - tensor.shape[-2])
                    sample[key] = torch.nn.functional.pad(tensor, pad, value=value)
            padded.append(sample)
        samples = padded
    batch = default_collate(samples)
    batch["size"] = torch.tensor(sizes, dtype=torch.int64)
    return batch


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, num_workers: int, drop_last: bool = False,
                seed: int = 0, device: torch.device | None = None) -> DataLoader:
    """A DataLoader with ``pad_collate``, pinned memory on CUDA and persistent workers.

    Shuffled loaders draw a permutation from ``(seed, epoch)`` (``fit`` calls ``set_epoch``) and,
    under torchrun, each rank takes every ``world_size``-th sample of it, so the global batches
    do not depend on the number of processes. Unshuffled loaders are sharded without padding
    when distributed (see :mod:`labelreg.distributed`).
    """
    from torch.utils.data import DistributedSampler

    from labelreg.distributed import ShardSampler, current

    if len(dataset) == 0:
        raise ValueError(f"{type(dataset).__name__} is empty: nothing to load")
    info = current()
    if shuffle:
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                                     drop_last=drop_last and len(dataset) >= info.world_size)
    else:
        sampler = ShardSampler(len(dataset), info.rank, info.world_size) if info.enabled else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last and len(sampler if sampler is not None else dataset) >= batch_size,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # worker seeds
        collate_fn=pad_collate,
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler (or batch sampler) which epoch starts, for its shuffling order."""
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()}


# ----------------------------------------------------------------------------- loops


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    if amp not in ("bf16", "fp16"):
        raise ConfigError(f"train.amp={amp!r}; choose 'none', 'bf16' or 'fp16'")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    unknown = sorted(set(weights) - set(terms))
    if unknown:
        raise ConfigError(f"train.loss_weights names {unknown}, but this task's loss terms are {sorted(terms)}")
    return sum(weights.get(name, 1.0) * value.float() for name, value in terms.items())


def _check_finite(finite: torch.Tensor, state: TrainState, last_terms: dict[str, torch.Tensor]) -> None:
    if not bool(finite):
        values = ", ".join(f"{name}={value.item():.4g}" for name, value in last_terms.items())
        raise NonFiniteLossError(
            f"non-finite training loss at epoch {state.epoch + 1}, step {state.step} ({values}); stopping. "
            "The last good checkpoint on disk is unchanged; lower the learning rate or enable grad clipping.")


def train_one_epoch(task: Task, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                    state: TrainState, cfg: Config, device: torch.device, writer=None,
                    weights: dict[str, float] | None = None, model: nn.Module | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of every (unweighted) loss term (over all ranks).

    ``weights`` multiply the terms (default ``train.loss_weights``; 1 for unnamed terms).
    ``model``: what runs the steps (``task.model`` wrapped in DDP / ``torch.compile``; default
    ``task.model``). Host syncs only at log intervals.
    """
    from labelreg.distributed import all_ranks_true, all_reduce_mean, current

    weights = cfg.train.loss_weights if weights is None else weights
    model = task.model if model is None else model
    model.train()
    sums: dict[str, torch.Tensor] = {}
    finite = torch.ones((), dtype=torch.bool, device=device)
    steps = 0
    terms: dict[str, torch.Tensor] = {}
    progress = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True,
                    disable=None if current().is_main else True)
    for batch in progress:
        batch = task.augment(to_device(batch, device))
        if cfg.train.channels_last:  # the model's weights are channels_last too (the trainers convert them)
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.train.amp):
            outputs = task.forward(model, batch)
            terms = task.losses(outputs, batch)
        total = weighted_total(terms, weights)
        terms = {**{name: value.detach().float() for name, value in terms.items()}, "total": total.detach()}
        finite &= torch.isfinite(total.detach())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if cfg.optim.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        state.step += 1
        steps += 1
        for name, value in terms.items():
            sums[name] = sums.get(name, torch.zeros((), device=device)) + value
        if state.step % cfg.train.log_every == 0:
            finite = all_ranks_true(finite)  # a NaN on any rank stops every rank at the same step
            _check_finite(finite, state, terms)
            scalars = {name: value.item() for name, value in terms.items()}
            progress.set_postfix({name: f"{value:.4f}" for name, value in scalars.items()})
            if writer is not None:
                for name, value in scalars.items():
                    writer.add_scalar(f"train/{name}", value, state.step)
                for group in optimizer.param_groups:
                    writer.add_scalar(f"lr/{group.get('name', 'all')}", group["lr"], state.step)
        if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
            break
    _check_finite(all_ranks_true(finite), state, terms)
    return all_reduce_mean({name: (value / max(steps, 1)).item() for name, value in sums.items()}, device)


@torch.inference_mode()
def predict_batches(model: nn.Module, loader: Iterable[Batch], device: torch.device,
                    preprocess: Callable[[Batch], Batch], forward: Callable[[nn.Module, Batch], dict],
                    amp: str = "none", desc: str = "eval") -> Iterable[tuple[Batch, dict[str, torch.Tensor]]]:
    """Yield ``(batch, outputs)`` over ``loader`` with the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None):
            batch = preprocess(to_device(batch, device))
            with autocast(device, amp):
                outputs = forward(model, batch)
            yield batch, outputs
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- fit


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def checkpoint_payload(task: Task, optimizer, scheduler, scaler, state: TrainState, cfg: Config,
                       metrics: dict[str, float] | None) -> dict[str, Any]:
    return {
        "model": task.model.state_dict(),
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
    _write_metrics(run_dir, state, cfg.train.best_metric, cfg.train.best_mode)


def _write_metrics(run_dir: Path, state: TrainState, best_metric: str | None, best_mode: str | None) -> None:
    """metrics.json: strict JSON (a NaN metric is written as null)."""
    best = next((entry for entry in state.history if entry.get("epoch") == state.best_epoch), None)
    summary = {"best_metric": best_metric, "best_mode": best_mode, "best": best,
               "last": state.history[-1] if state.history else None, "history": state.history}
    write_json(Path(run_dir) / "metrics.json", summary)


def fit(cfg: Config, task: Task, train_loader: DataLoader, val_loader: DataLoader | None, *,
        device: torch.device, resume: str | Path | None = None) -> TrainState:
    """Train ``task.model`` for ``cfg.train.epochs`` epochs in ``cfg.run_dir``; see the module docstring.

    The run directory is claimed for the whole run (``claim_run_directory``): a fresh run refuses a
    folder that holds checkpoints (the CLI's ``--overwrite`` claims it first to replace them).
    """
    # continuing this run's own checkpoint may write over its files; a checkpoint from elsewhere starts a new run
    resume_here = resume is not None and run_directory(resume) == Path(cfg.run_dir).resolve()
    with claim_run_directory(cfg.run_dir, resume=resume_here):
        return _fit(cfg, task, train_loader, val_loader, device=device, resume=resume)


def _fit(cfg: Config, task: Task, train_loader: DataLoader, val_loader: DataLoader | None, *,
         device: torch.device, resume: str | Path | None = None) -> TrainState:
    from torch.utils.tensorboard import SummaryWriter

    from labelreg.distributed import barrier, current, wrap_model

    main_process = current().is_main  # only rank 0 writes; every rank trains and evaluates
    run_dir = cfg.run_dir
    if cfg.train.best_mode not in ("max", "min"):
        raise ConfigError(f"train.best_mode={cfg.train.best_mode!r}; choose 'max' or 'min'")
    checkpoint, changes = None, {}
    if resume is not None:  # checked before anything is written: a refused resume leaves the run as it was
        checkpoint = load_checkpoint(resume, map_location=device)
        changes = resume_changes(checkpoint["config"], cfg)
    if main_process:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    optimizer = build_optimizer(cfg.optim, task.model)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16" and device.type == "cuda")
    state = TrainState()

    if checkpoint is not None:
        task.model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = TrainState(epoch=checkpoint["epoch"], step=checkpoint["step"], best_value=checkpoint["best_value"],
                           best_epoch=checkpoint["best_epoch"], history=list(checkpoint["history"]))
        restore_rng_state(checkpoint["rng"])
        print(f"resumed from {resume}: epoch {state.epoch}, step {state.step}")
        if main_process:
            notes = []
            if Path(resume).resolve() == (run_dir / "checkpoints" / "last.pt").resolve():
                notes = repair_run(run_dir, checkpoint)
            notes += [f"resumed at epoch {state.epoch} with {key} changed from {old!r} to {new!r}"
                      for key, (old, new) in changes.items()]
            for note in notes:
                print(note)
            if notes:
                with open(run_dir / "train.log", "a") as log:
                    log.write("".join(f"{note}\n" for note in notes))
        del checkpoint

    if device.type == "cuda":  # fixed training shapes: let cuDNN pick its fastest kernels; TF32 matmuls
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    # the optimizer holds task.model's parameters, which DDP and torch.compile share
    train_model = wrap_model(task.model, device, sync_bn=cfg.train.sync_bn,
                             find_unused_parameters=cfg.train.find_unused_parameters)
    if cfg.train.compile:
        train_model = torch.compile(train_model)
    writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=state.step or None) if main_process else None
    try:
        while state.epoch < cfg.train.epochs:
            if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
                break
            for generator in [train_loader.generator, *task.generators]:  # batch order: the same on every rank
                if generator is not None:
                    generator.manual_seed(epoch_seed(cfg.train.seed, state.epoch))
            for generator in task.rank_generators:  # augmentation: each rank its own reproducible stream
                generator.manual_seed(epoch_seed(cfg.train.seed, state.epoch, current().rank))
            if task.before_epoch is not None:
                task.before_epoch(state.epoch)
            scheduler.set_epoch(state.epoch)
            set_loader_epoch(train_loader, state.epoch)
            weights = dict(cfg.train.loss_weights)
            if task.dynamic_loss_weights is not None:
                weights.update(task.dynamic_loss_weights(state.history))
            started = time.perf_counter()
            train_means = train_one_epoch(task, train_loader, optimizer, scheduler, scaler, state, cfg, device, writer,
                                          weights, model=train_model)
            state.epoch += 1
            entry: dict[str, float] = {"epoch": state.epoch, "step": state.step,
                                       "seconds": round(time.perf_counter() - started, 2),
                                       **{f"train/{name}": value for name, value in train_means.items()}}
            if task.dynamic_loss_weights is not None:  # the balancing is part of the record
                entry.update({f"weight/{name}": value for name, value in weights.items()})
            last_epoch = state.epoch == cfg.train.epochs or (
                cfg.train.max_steps is not None and state.step >= cfg.train.max_steps)
            improved = False
            if val_loader is not None and (state.epoch % cfg.train.eval_every == 0 or last_epoch):
                metrics = task.evaluate(task.model, val_loader, device)
                entry.update({f"val/{name}": value for name, value in metrics.items() if isinstance(value, (int, float))})
                for name, value in metrics.items():
                    if isinstance(value, (int, float)) and writer is not None:
                        writer.add_scalar(f"val/{name}", value, state.step)
                if cfg.train.best_metric not in metrics:
                    raise ConfigError(f"train.best_metric={cfg.train.best_metric!r} is not among the evaluation "
                                      f"metrics {sorted(metrics)}")
                if _is_better(metrics[cfg.train.best_metric], state.best_value, cfg.train.best_mode):
                    state.best_value, state.best_epoch, improved = metrics[cfg.train.best_metric], state.epoch, True
                if task.visualize is not None and writer is not None:
                    sample = next(iter(val_loader))
                    with torch.inference_mode():
                        task.model.eval()
                        image = task.visualize(task.model, task.eval_augment(to_device(sample, device)))
                        task.model.train()
                    writer.add_image("val/examples", image, state.step)
            state.history.append(entry)
            if not main_process:
                continue
            payload = checkpoint_payload(task, optimizer, scheduler, scaler, state, cfg, entry)
            # last.pt is the commit point; best.pt and metrics.json follow it (repair_run fixes a crash in between)
            save_checkpoint(run_dir / "checkpoints" / "last.pt", payload)
            if improved:
                save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)
            write_metrics_json(run_dir, state, cfg)
            summary = "  ".join(f"{k}={v:.4f}" for k, v in entry.items()
                                if isinstance(v, float) and k != "seconds" and k.count("/") == 1)
            line = f"[{cfg.name}] epoch {state.epoch}/{cfg.train.epochs} ({entry['seconds']:.1f}s)  {summary}"
            tqdm.write(line)
            with open(run_dir / "train.log", "a") as log:
                log.write(line + "\n")
    finally:
        if writer is not None:
            writer.close()
    barrier()  # nobody reads the checkpoints before rank 0 has written them
    return state
