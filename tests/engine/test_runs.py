"""Run directories: no run is clobbered, shared, left inconsistent by a crash or silently changed on resume."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import labelreg.engine.loop as engine_loop
from labelreg.config import ConfigError, config_from_dict
from labelreg.data.loader import make_loader
from labelreg.demo import DEMO_AE_CONFIG, train_stage
from labelreg.engine import RUN_MARKER, RunDirectoryError, claim_run_directory, fit
from labelreg.storage import load_checkpoint
from tests.engine import test_engine
from tests.engine.test_engine import Points, Regressor, make_task, run


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_new_run_refuses_a_folder_with_checkpoints(tmp_path):
    cfg, _, _ = run(tmp_path, "done", epochs=1)
    best = (cfg.run_dir / "checkpoints" / "best.pt").read_bytes()
    metrics = (cfg.run_dir / "metrics.json").read_text()
    with pytest.raises(RunDirectoryError, match=r"already holds checkpoints \(best.pt, last.pt\).*--resume.*--overwrite"):
        run(tmp_path, "done", epochs=2)
    assert (cfg.run_dir / "checkpoints" / "best.pt").read_bytes() == best
    assert (cfg.run_dir / "metrics.json").read_text() == metrics
    assert not (cfg.run_dir / ".lock").exists()  # released after the refusal
    # an explicit overwrite starts afresh: whatever the old run wrote is gone first
    (cfg.run_dir / "class_frequencies.json").write_text("{}")  # a cache computed from the earlier run's data
    with claim_run_directory(cfg.run_dir, overwrite=True):
        assert sorted(p.name for p in cfg.run_dir.iterdir()) == [RUN_MARKER, ".lock"]
        _, _, state = run(tmp_path, "done", epochs=2)
    assert state.epoch == 2 and len(json.loads((cfg.run_dir / "metrics.json").read_text())["history"]) == 2
    assert len((cfg.run_dir / "train.log").read_text().splitlines()) == 2
    # continuing another run's checkpoint here would clobber this run too
    other, _, _ = run(tmp_path, "other", epochs=1)
    with pytest.raises(RunDirectoryError, match="already holds checkpoints"):
        run(tmp_path, "done", epochs=2, resume=other.run_dir / "checkpoints" / "last.pt")


HOLD = textwrap.dedent("""
    import sys, time
    from labelreg.engine.rundir import claim_run_directory
    with claim_run_directory(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def hold_lock(run_dir):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_process_cannot_write_into_a_running_run(tmp_path):
    holder = hold_lock(tmp_path / "busy")
    try:
        with pytest.raises(RunDirectoryError, match=rf"in use by pid {holder.pid} on host {socket.gethostname()}"):
            run(tmp_path, "busy", epochs=1)
        assert not (tmp_path / "busy" / "checkpoints").exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # killed with the lock file still there: the kernel freed the flock, so the next run takes over
    assert json.loads((tmp_path / "busy" / ".lock").read_text())["pid"] == holder.pid
    _, _, state = run(tmp_path, "busy", epochs=1)
    assert state.epoch == 1 and not (tmp_path / "busy" / ".lock").exists()


def test_stale_lock_of_a_dead_process_is_taken_over_and_another_hosts_lock_is_not(tmp_path, capsys):
    folder = tmp_path / "stale"
    folder.mkdir()
    pid = dead_pid()
    (folder / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with claim_run_directory(folder):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    assert f"took over the stale lock of pid {pid}" in capsys.readouterr().out
    (folder / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunDirectoryError, match="locked by pid 1 on host elsewhere.*delete the lock file"):
        with claim_run_directory(folder):
            pass


def test_only_rank_zero_takes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with claim_run_directory(tmp_path / "r"):
        assert not (tmp_path / "r" / ".lock").exists()


def test_crash_between_last_and_best_is_repaired_on_resume(tmp_path, monkeypatch, capsys):
    real_save = engine_loop.save_checkpoint

    def crash_before_best(path, payload):
        if Path(path).name == "best.pt" and payload["epoch"] == 2:
            raise KeyboardInterrupt("killed between last.pt and best.pt")
        real_save(path, payload)

    monkeypatch.setattr(engine_loop, "save_checkpoint", crash_before_best)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "crash", epochs=3)
    monkeypatch.setattr(engine_loop, "save_checkpoint", real_save)
    checkpoints = tmp_path / "crash" / "checkpoints"
    last = load_checkpoint(checkpoints / "last.pt")
    assert last["epoch"] == 2 and last["best_epoch"] == 2 and load_checkpoint(checkpoints / "best.pt")["epoch"] == 1

    _, _, state = run(tmp_path, "crash", epochs=2, resume=checkpoints / "last.pt")  # nothing left to train
    assert state.epoch == 2
    assert "repaired" in capsys.readouterr().out
    best = load_checkpoint(checkpoints / "best.pt")
    assert best["epoch"] == 2 and torch.equal(best["model"]["out.weight"], last["model"]["out.weight"])
    history = json.loads((tmp_path / "crash" / "metrics.json").read_text())["history"]
    assert [entry["epoch"] for entry in history] == [1, 2]


def test_stale_temporary_files_are_removed_on_start(tmp_path):
    """Whoever holds the run's lock is its only writer, so every temp file found then is stale, also one whose
    pid now belongs to a live process (pids are reused: here the test's parent, and the claimant itself)."""
    cfg, _, _ = run(tmp_path, "tmp", epochs=1)
    pid = dead_pid()
    stale = [cfg.run_dir / "checkpoints" / f".last.pt.tmp-{pid}", cfg.run_dir / f".metrics.json.tmp-{pid}",
             cfg.run_dir / "checkpoints" / f".best.pt.tmp-{os.getppid()}", cfg.run_dir / f".train.log.tmp-{os.getpid()}"]
    for path in stale:
        path.write_bytes(b"partial")
    run(tmp_path, "tmp", epochs=2, resume=cfg.run_dir / "checkpoints" / "last.pt")
    assert [path.name for path in stale if path.exists()] == []


def test_resume_refuses_changed_settings_and_logs_allowed_ones(tmp_path):
    cfg, _, _ = run(tmp_path, "res", epochs=1)
    last = cfg.run_dir / "checkpoints" / "last.pt"
    recorded = (cfg.run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"resume cannot change optim\.lr: 0\.05 → 0\.1 .*train\.epochs"):
        changed = config_from_dict({"name": "res", "output_dir": str(tmp_path),
                                    "optim": {"lr": 0.1, "schedule": "step", "milestones": [2], "gamma": 0.5},
                                    "train": {"epochs": 2, "log_every": 1, "best_metric": "mse", "best_mode": "min"}})
        fit(changed, make_task(Regressor()), make_loader(Points(), batch_size=5, shuffle=True, num_workers=0),
            None, device=torch.device("cpu"), resume=last)
    assert (cfg.run_dir / "config.yaml").read_text() == recorded  # nothing recorded that was not used
    assert load_checkpoint(last)["epoch"] == 1
    run(tmp_path, "res", epochs=2, resume=last)
    assert "resumed at epoch 1 with train.epochs changed from 1 to 2" in (cfg.run_dir / "train.log").read_text()
    assert load_checkpoint(last)["config"]["train"]["epochs"] == 2


def test_metrics_json_is_strict_json(tmp_path, monkeypatch):
    plain_task = test_engine.make_task

    def nan_metric_task(model, poison_after=None):
        task = plain_task(model, poison_after)
        task.evaluate = lambda model, loader, device: {"mse": 1.0, "odd": float("nan")}
        return task

    monkeypatch.setattr(test_engine, "make_task", nan_metric_task)
    cfg, _, _ = run(tmp_path, "nan_metric", epochs=1)

    def refuse(constant):
        raise ValueError(f"bare {constant} in metrics.json")

    summary = json.loads((cfg.run_dir / "metrics.json").read_text(), parse_constant=refuse)
    assert summary["last"]["val/odd"] is None and summary["last"]["val/mse"] == 1.0


def test_a_demo_stage_can_be_run_again(tmp_path):
    """The demo overwrites its own stages, so `labelreg demo` can be re-run (scripts pass --resume instead)."""
    def trainer(cfg):
        task = make_task(Regressor())
        task.evaluate = lambda model, loader, device: {"miou": 0.5}
        fit(cfg, task, make_loader(Points(), batch_size=5, shuffle=True, num_workers=0),
            make_loader(Points(), batch_size=8, shuffle=False, num_workers=0), device=torch.device("cpu"))

    for epochs in (2, 1):
        cfg, checkpoint, best, _ = train_stage(DEMO_AE_CONFIG, "ae", tmp_path, tmp_path / "data",
                                                [f"train.epochs={epochs}", "train.loss_weights={}"], trainer)
        assert best == {"miou": 0.5} and len(checkpoint["history"]) == epochs
