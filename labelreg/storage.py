"""Files written atomically and torch files read safely: the file I/O that models, data and the engine share.

- ``save_checkpoint``, ``write_json`` and ``write_text_atomic`` write a temp file next to the target, flush
  it to disk and rename it over the target, so a reader (or a crash) never sees half a file; a failed write (full disk, read-only
  folder) raises an ``OSError`` naming the path. Temp files are called ``.<name>.tmp-<pid>``, so a
  later run can remove the ones a killed writer left (``labelreg.engine.checkpoint``).
- ``load_checkpoint`` and ``safe_load`` read with ``torch.load(weights_only=True)``: a file that
  holds code is refused, never executed, and every failure is one line naming the file.
- ``load_run_checkpoint`` is what every entry point that takes a user's checkpoint reads it with (eval,
  export, query, ``--resume-from``, ``model.init_from``, ``regularizer.autoencoder``): a bare state dict, a
  list, a dict without a config or a checkpoint of the wrong task is one line saying what the file is and
  what was wanted, before anything else happens.
"""
from __future__ import annotations

import errno
import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import IO, Any, Callable

import torch

TEMPORARY_PATTERN = ".*.tmp-*"  # what ``temporary_name`` makes: ``.<name>.tmp-<pid>``


def temporary_name(path: Path) -> Path:
    """Where a write of ``path`` goes before it is renamed over ``path``: ``.<name>.tmp-<pid>`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_failed(error: BaseException, path: Path) -> OSError:
    """An OSError naming ``path``, one line.

    torch reports a short write (a full disk, a file-size limit) as a RuntimeError of its zip writer,
    ``[enforce fail at inline_container.cc:…] . unexpected pos …`` or ``… failed writing …``, with no path."""
    code = getattr(error, "errno", None)
    if code is None:
        try:
            if shutil.disk_usage(path.parent).free < 1 << 20:
                code = errno.ENOSPC
        except OSError:
            pass
    if code == errno.ENOSPC:
        return OSError(errno.ENOSPC, "no space left on device", str(path))
    if code == errno.EFBIG:
        return OSError(errno.EFBIG, "file too large (over the file system's or the process's file-size limit)",
                       str(path))
    if isinstance(error, RuntimeError):
        return OSError(errno.EIO, "the file could not be written completely (disk full or over a file-size "
                                  "limit?); the previous file, if any, is unchanged", str(path))
    text = getattr(error, "strerror", None) or str(error)
    return OSError(code or errno.EIO, text.splitlines()[0] if text else "write failed", str(path))


def _short_write(error: RuntimeError) -> bool:
    """Whether torch's RuntimeError is its stream writer failing to write (not a bug in the payload)."""
    text = str(error).lower()
    return "write" in text or "unexpected pos" in text or "inline_container" in text


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temp file in the same folder, fsync, then rename over the target.

    Write failures (full disk, read-only folder) raise an ``OSError`` that names ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_failed(error, path) from error
    _replace_atomically(path, "wb", lambda handle: torch.save(payload, handle))


def _replace_atomically(path: Path, mode: str, write: Callable[[IO], None]) -> None:
    """``write(handle)`` into ``temporary_name(path)``, fsync, rename over ``path``; failures name ``path``."""
    temporary = temporary_name(path)
    try:
        with open(temporary, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise _write_failed(error, path) from error
    except RuntimeError as error:  # torch's stream writer reports a failed write (e.g. a full disk) this way
        if not _short_write(error):
            raise
        raise _write_failed(error, path) from error
    finally:
        try:  # on a read-only file system even removing a missing file fails: keep the error that names path
            temporary.unlink(missing_ok=True)
        except OSError:
            pass


def json_safe(value: Any) -> Any:
    """``value`` with NaN and ±inf replaced by None, so the JSON is strict (no bare NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | Path, value: Any) -> None:
    """Strict JSON (non-finite numbers become null), written atomically."""
    write_text_atomic(path, json.dumps(json_safe(value), indent=2, allow_nan=False))


def write_text_atomic(path: str | Path, text: str) -> None:
    """``path`` holds ``text`` or what it held before, never a part of it: a temp file beside it, then a rename.

    A failed write (full disk, read-only folder) raises an ``OSError`` that names ``path``."""
    _replace_atomically(Path(path), "w", lambda handle: handle.write(text))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by ``save_checkpoint`` (``safe_load``; a missing file is a ``FileNotFoundError``)."""
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


TRAINING_STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "rng")  # what a resume restores
TRAINERS = {"autoencoder": "train-ae", "segmentation": "train-seg", "classification": "train-cls",
            "depth": "train-depth"}  # the command that writes each task's checkpoints (named in errors)


def checkpoint_kind(checkpoint: Any) -> str:
    """What a loaded file holds, in words: ``a segmentation checkpoint (task=segmentation, regularizer.kind=decoder)``,
    ``a bare state dict (no config)``, ``a list``…"""
    if not isinstance(checkpoint, dict):
        return f"a {type(checkpoint).__name__}, not a checkpoint dict"
    config = checkpoint.get("config")
    if not isinstance(config, dict):
        if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
            return "a bare state dict (no config), as torch.save(model.state_dict()) writes"
        shown = ", ".join(map(str, list(checkpoint)[:5])) + (", …" if len(checkpoint) > 5 else "")
        return f"a dict without a config (keys: {shown or 'none'})"
    task = config.get("task")
    if not isinstance(task, str):
        return "a checkpoint whose config names no task"
    regularizer = config.get("regularizer")
    kind = regularizer.get("kind", "none") if isinstance(regularizer, dict) else "none"
    return f"{_article(task)} {task} checkpoint (task={task}" + (f", regularizer.kind={kind})" if kind != "none" else ")")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def check_checkpoint(checkpoint: Any, path: str | Path, *, purpose: str, tasks: tuple[str, ...] | None = None,
                     keys: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """``checkpoint`` (loaded from ``path``) if it is a labelreg checkpoint of one of ``tasks`` (None: any)
    holding ``keys``; else a ``ValueError``, one line: what the file is and what ``purpose`` wants."""
    wanted = " or ".join(tasks) if tasks else "labelreg"
    wanted = f"{_article(wanted)} {wanted}"
    kind = checkpoint_kind(checkpoint)
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(task, str):
        raise ValueError(f"{path} holds {kind}; {purpose} wants {wanted} checkpoint written by labelreg "
                         "(a run's checkpoints/best.pt or last.pt): save it with a labelreg trainer")
    if tasks and task not in tasks:
        writers = " or ".join(f"labelreg {TRAINERS[name]}" for name in tasks if name in TRAINERS)
        raise ValueError(f"{path} is {kind}; {purpose} wants {wanted} checkpoint" + (f" ({writers} writes them)"
                                                                                      if writers else ""))
    missing = [key for key in keys if key not in checkpoint]
    if missing:
        wants = ("a training checkpoint (a run's checkpoints/last.pt or best.pt)" if "optimizer" in missing
                 else f"{wanted} checkpoint with its model weights")
        raise ValueError(f"{path} is {kind} without {', '.join(missing)}; {purpose} wants {wants}")
    if "model" in keys and not isinstance(checkpoint["model"], dict):
        raise ValueError(f"{path} is {kind} whose 'model' is not a state dict; {purpose} wants model weights")
    return checkpoint


def load_run_checkpoint(path: str | Path, *, purpose: str, tasks: tuple[str, ...] | None = None,
                        keys: tuple[str, ...] = ("model",),
                        map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``load_checkpoint`` then ``check_checkpoint``: the one way an entry point reads a user's checkpoint."""
    return check_checkpoint(load_checkpoint(path, map_location), path, purpose=purpose, tasks=tasks, keys=keys)
