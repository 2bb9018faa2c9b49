"""Atomic text, JSON and checkpoint writes: a failed or interrupted write leaves the previous file whole and
names the target."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labelreg import storage
from labelreg.config import Config, load_config, save_config
from labelreg.storage import load_checkpoint, write_json, write_text_atomic

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


SHORT_WRITE = """
import json, resource, signal, sys
import torch
from labelreg.storage import save_checkpoint, write_text_atomic
target, text_target = sys.argv[1], sys.argv[2]
save_checkpoint(target, {"weights": torch.arange(10.0)})  # the previous file, under the limit
write_text_atomic(text_target, "before")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit then fails with EFBIG instead of a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))
errors = {}
for name, write in (("checkpoint", lambda: save_checkpoint(target, {"weights": torch.zeros(100_000)})),
                    ("text", lambda: write_text_atomic(text_target, "x" * 100_000))):
    try:
        write()
    except OSError as error:
        errors[name] = [str(error), error.filename]
print(json.dumps(errors))
"""


def test_a_real_short_write_through_torch_save_names_the_file_and_keeps_the_previous_one(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) makes the writes really stop short, as a full disk does: torch's own
    ``[enforce fail at inline_container.cc] unexpected pos`` error becomes an OSError naming the target."""
    target, text_target = tmp_path / "run" / "best.pt", tmp_path / "run" / "metrics.json"
    done = subprocess.run([sys.executable, "-c", SHORT_WRITE, str(target), str(text_target)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    message, filename = errors["checkpoint"]
    assert filename == str(target) and str(target) in message and "\n" not in message
    assert "could not be written completely" in message and "enforce fail" not in message
    assert errors["text"][1] == str(text_target) and "file too large" in errors["text"][0]
    torch.testing.assert_close(load_checkpoint(target)["weights"], torch.arange(10.0))  # the previous file, whole
    assert text_target.read_text() == "before"
    assert sorted(p.name for p in target.parent.iterdir()) == ["best.pt", "metrics.json"]  # no temporary left


def test_a_failed_clean_up_on_a_read_only_file_system_keeps_the_error_that_names_the_target(tmp_path, monkeypatch):
    """On a read-only file system even removing a temporary that was never created fails (EROFS): that
    second error must not replace the first, which names the target (not ``.eval_test.json.tmp-<pid>``)."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]))

    monkeypatch.setattr(storage, "open", read_only, raising=False)  # the temp file cannot be created ...
    monkeypatch.setattr(Path, "unlink", read_only)  # ... nor removed
    target = tmp_path / "eval_test.json"
    with pytest.raises(OSError) as raised:
        write_json(target, {"miou": 0.5})
    assert raised.value.filename == str(target) and raised.value.errno == errno.EROFS
