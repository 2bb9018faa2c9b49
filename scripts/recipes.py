"""Helpers shared by the experiment recipes in ``scripts/`` (``thesis_tables.py``, ``nyu_tables.py``): run labelreg
commands, skip finished runs, read results. Not part of the ``labelreg`` package: only these scripts use it."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

LABELREG = [sys.executable, "-m", "labelreg.cli"]


def run(command: list[str], dry_run: bool = False) -> None:
    """Print a command (shell-quoted) and run it unless ``dry_run``; a failure stops the recipe."""
    print("$", " ".join(shlex.quote(str(part)) for part in command), flush=True)
    if not dry_run:
        subprocess.run([str(part) for part in command], check=True)


def finished(run_dir: Path, epochs: int | None = None) -> bool:
    """Whether ``run_dir``'s metrics.json reaches ``epochs`` (default: the epochs in its config.yaml)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return False
    last = json.loads(path.read_text()).get("last")
    if epochs is None:
        config = Path(run_dir) / "config.yaml"
        epochs = yaml.safe_load(config.read_text())["train"]["epochs"] if config.is_file() else None
    return last is not None and last["epoch"] == epochs


def best_entry(run_dir: Path) -> dict | None:
    """The best epoch's record (``val/...`` metrics) from ``run_dir``'s metrics.json, if any."""
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()).get("best") if path.is_file() else None
