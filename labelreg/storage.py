"""Files written atomically and torch files read safely: the file I/O that models, data and the engine share.

- ``save_checkpoint``, ``write_json`` and ``write_text_atomic`` write a temp file next to the target, flush
  it to disk and rename it over the target, so a reader (or a crash) never sees half a file; a failed write (full disk, read-only
  folder) raises an ``OSError`` naming the path. Temp files are called ``.<name>.tmp-<pid>``, so a
  later run can remove the ones a killed writer left (``labelreg.engine.checkpoint``).
- ``load_checkpoint`` and ``safe_load`` read with ``torch.load(weights_only=True)``: a file that
  holds code is refused, never executed, and every failure is one line naming the file.
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
        if "write" not in str(error).lower():
            raise
        raise _write_failed(error, path) from error
    finally:
        temporary.unlink(missing_ok=True)


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
