"""Fault injection: kill -9 a tiny CPU training at random instants, resume, and end where an uninterrupted run ends.

After every kill each checkpoint on disk must load and best.pt must agree with what last.pt (the
commit point) records — or be in the one window the engine repairs on resume (killed after last.pt,
before best.pt, when last.pt's own epoch is the best). The kill times come from a fixed seed.
"""
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import labelreg.engine.loop as engine_loop
from labelreg.config import config_from_dict
from labelreg.data.loader import make_loader
from labelreg.engine import fit
from labelreg.storage import load_checkpoint
from tests.engine.test_engine import Points, make_task

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6
CHILD = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
         "from tests.engine.test_faults import child_main; child_main(sys.argv[1])")


class Wide(nn.Module):
    """Big enough (≈1 MB of weights, 3 MB with Adam's state) that a checkpoint write takes a moment."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(3, 512)
        self.middle = nn.Linear(512, 512)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(512, 1)

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.middle(torch.relu(self.hidden(x)))))).squeeze(-1)


def child_main(out: str) -> None:
    """Train (or resume) the run in ``out``/faults to EPOCHS epochs."""
    torch.set_num_threads(1)
    save = engine_loop.save_checkpoint  # widen the gaps between the writes, so the kills land in them more often
    engine_loop.save_checkpoint = lambda path, payload: (save(path, payload), time.sleep(0.05))[0]
    cfg = config_from_dict({"name": "faults", "output_dir": out,
                            "optim": {"lr": 0.01, "schedule": "step", "milestones": [3], "gamma": 0.5},
                            "train": {"epochs": EPOCHS, "log_every": 1, "best_metric": "mse", "best_mode": "min"}})
    torch.manual_seed(0)
    task = make_task(Wide())
    augment = task.augment
    task.augment = lambda batch: (time.sleep(0.01), augment(batch))[1]  # stretch the epochs, not the maths
    task.before_epoch = lambda epoch: print(f"epoch {epoch}", flush=True)
    data = Points(48)
    loader = make_loader(data, batch_size=4, shuffle=True, num_workers=0, seed=0)
    val = make_loader(data, batch_size=16, shuffle=False, num_workers=0)
    last = cfg.run_dir / "checkpoints" / "last.pt"
    fit(cfg, task, loader, val, device=torch.device("cpu"), resume=last if last.is_file() else None)


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def check_consistent(run_dir: Path) -> str:
    """Every checkpoint loads; best.pt agrees with last.pt (or is in the repairable window). Returns the state."""
    checkpoints = run_dir / "checkpoints"
    loaded = {path.name: load_checkpoint(path) for path in checkpoints.glob("*.pt")} if checkpoints.is_dir() else {}
    if "last.pt" not in loaded:
        return "no checkpoint yet"
    last = loaded["last.pt"]
    best_epoch = loaded["best.pt"]["epoch"] if "best.pt" in loaded else None
    if best_epoch == last["best_epoch"]:
        return f"consistent at epoch {last['epoch']}"
    # killed between the last.pt and best.pt writes: last.pt's own epoch is the new best, best.pt lags
    assert last["best_epoch"] == last["epoch"] and (best_epoch is None or best_epoch < last["epoch"]), (
        f"best.pt holds epoch {best_epoch}, last.pt records best epoch {last['best_epoch']} at epoch {last['epoch']}")
    return "repairable window"


def test_kill_9_at_random_points_then_resume_matches_the_uninterrupted_run(tmp_path):
    reference = start(tmp_path / "reference")
    assert reference.wait(timeout=120) == 0, reference.stderr.read()

    rng = random.Random(20261201)
    run_dir = tmp_path / "killed" / "faults"
    states = []
    for _ in range(4):
        child = start(tmp_path / "killed")
        line = child.stdout.readline()
        while line and not line.startswith("epoch"):  # e.g. "took over the stale lock …", "removed …"
            line = child.stdout.readline()
        assert line, child.stderr.read()
        time.sleep(rng.uniform(0.1, 1.0))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        states.append(check_consistent(run_dir))
        child.stdout.close()
        child.stderr.close()
    final = start(tmp_path / "killed")
    assert final.wait(timeout=120) == 0, final.stderr.read()
    print("states after each kill:", states)
    assert check_consistent(run_dir) == f"consistent at epoch {EPOCHS}", states
    assert not list(run_dir.rglob(".*.tmp-*")), "stale temp files survived a restart"
    assert not (run_dir / ".lock").exists()

    expected = load_checkpoint(tmp_path / "reference" / "faults" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), (name, states)
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["epoch"] == expected["best_epoch"]
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    reference_history = json.loads((tmp_path / "reference" / "faults" / "metrics.json").read_text())["history"]
    assert [{k: v for k, v in entry.items() if k != "seconds"} for entry in history] == \
        [{k: v for k, v in entry.items() if k != "seconds"} for entry in reference_history]
    # TensorBoard shows every committed epoch's validation exactly once: flushed before its commit, kept on resume
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("val/mse")] == \
        [(entry["step"], pytest.approx(entry["val/mse"])) for entry in history], states
    train_log = (run_dir / "train.log").read_text()
    logged = [int(epoch) for epoch in re.findall(r"^\[faults\] epoch (\d+)/", train_log, re.M)]
    assert logged == list(range(1, EPOCHS + 1)), train_log
