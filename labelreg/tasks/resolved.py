"""A run's resolved record: the values a trainer derives from its config, kept apart from it.

The config is what the user asked for and is never changed after it is loaded. What a run works out
from it when training starts — the loss weights with each term's default filled in, the phase-one
autoencoder's variant (read from its checkpoint), the regularizer's tap when the config left it to
the model — goes to ``resolved.json`` beside ``config.yaml`` in the run directory, written atomically
by the main process. Evaluation reads it back (``labelreg eval`` passes it to the task).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labelreg.engine import run_directory
from labelreg.runtime import current
from labelreg.storage import write_json

RESOLVED_FILE = "resolved.json"


def write_resolved(run_dir: str | Path, values: dict[str, Any]) -> None:
    """``run_dir/resolved.json`` (main process only; the other ranks derive the same values)."""
    if current().is_main:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(run_dir) / RESOLVED_FILE, values)


def read_resolved(run_dir: str | Path) -> dict[str, Any]:
    """The resolved record of a run directory; empty when the run wrote none (older runs, exported models)."""
    path = Path(run_dir) / RESOLVED_FILE
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RuntimeError(f"cannot read {path}: {type(error).__name__}: {error}") from error
    if not isinstance(values, dict):
        raise RuntimeError(f"{path} holds {type(values).__name__}, not a JSON object")
    return values


def resolved_for_checkpoint(checkpoint_path: str | Path) -> dict[str, Any]:
    """The resolved record of the run a checkpoint file belongs to (``<run>/checkpoints/x.pt``)."""
    return read_resolved(run_directory(checkpoint_path))
