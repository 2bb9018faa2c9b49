"""Atomic text and JSON writes: a failed or interrupted write leaves the previous file whole."""
import errno
import json
import os
from pathlib import Path

import pytest

from labelreg.config import Config, load_config, save_config
from labelreg.storage import write_json, write_text_atomic

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def fail_halfway(monkeypatch):
    """Every write reaches the temporary file, then the disk is full when it is flushed to disk."""
    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)


def test_a_failed_write_names_the_file_and_keeps_what_it_held(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"miou": float("nan"), "epoch": 3})
    before = path.read_text()
    assert json.loads(before) == {"miou": None, "epoch": 3}  # strict JSON
    fail_halfway(monkeypatch)
    with pytest.raises(OSError, match=rf"no space left on device: '{path}'"):
        write_json(path, {"miou": 0.5, "epoch": 4})
    with pytest.raises(OSError, match="report.md"):
        write_text_atomic(tmp_path / "report.md", "# a report\n")
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no half-written file or temporary


def test_a_run_config_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    cfg = load_config(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml")
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    before = path.read_text()
    fail_halfway(monkeypatch)
    with pytest.raises(OSError, match="config.yaml"):
        save_config(load_config(CONFIGS / "demo" / "ae-128_synth-nyu40.yaml", ["train.epochs=7"]), path)
    assert path.read_text() == before and isinstance(load_config(path), Config)
