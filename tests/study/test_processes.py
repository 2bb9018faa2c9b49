"""A study's runs die with it, and a run an earlier study left running is waited for, not failed (processes.py).

Fake runs are small ``python -c`` programs: they start in milliseconds, unlike a training run.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labelreg.engine import LOCK_NAME
from labelreg.study import processes
from labelreg.study.runner import DONE, Launcher, execute

PROCESSES = Path(processes.__file__)
SLEEPER = "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
# a stand-in for the study: loads processes.py alone (no torch) and starts one run, as execute does, or plainly
STUDY = """\
import importlib.util, os, subprocess, sys
spec = importlib.util.spec_from_file_location("processes", sys.argv[1])
processes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(processes)
run = [sys.executable, "-c", sys.argv[3], sys.argv[2]]
if sys.argv[4] == "study":
    processes.run_to_end(run, stdout=subprocess.DEVNULL, env=dict(os.environ))
else:
    subprocess.call(run)  # how runs were started before
"""
# holds a run's lock as a live training run does (labelreg.engine's RunLock: flock + holder record), then ends
ORPHAN = """\
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": "here", "started": "earlier"}).encode())
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""
# a training run in miniature: refused while another process holds the run's lock, else scores its final epoch
FAKE_RUN = """\
import fcntl, json, os, sys
run = sys.argv[1]
fd = os.open(os.path.join(run, ".lock"), os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(run + " is in use")
json.dump({"last": {"epoch": 1, "val/miou": 0.25}}, open(os.path.join(run, "metrics.json"), "w"))
"""


def fake_spec(folder: Path, name: str, argv: list[str]) -> dict:
    """A run spec (labelreg.study.runner.run_spec's keys) whose command is ``argv``."""
    return {"arm": name.split("/")[0], "seed": 0, "name": name, "run_dir": str(folder / "runs" / name),
            "autoencoder": None, "log": str(folder / "logs" / f"{name.replace('/', '_')}.log"), "overrides": [],
            "threads": 1, "argv": argv}


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("launch", ["study", "plain"])
def test_a_run_dies_with_its_study_killed_by_sigkill(tmp_path, launch):
    """``kill -9`` of the study (the OOM killer's way) ends its run; a plain subprocess (the control) lives on."""
    pid_file = tmp_path / "run.pid"
    study = subprocess.Popen([sys.executable, "-c", STUDY, str(PROCESSES), str(pid_file), SLEEPER, launch])
    try:
        assert wait_for(lambda: pid_file.is_file() and pid_file.read_text().isdigit(), 20)
        run = int(pid_file.read_text())
        if launch == "study":
            assert os.getpgid(run) == run  # its own process group
        study.kill()
        study.wait()
        if launch == "study":
            assert wait_for(lambda: not alive(run), 5)
        else:
            time.sleep(0.5)
            assert alive(run)
    finally:
        study.kill()
        if pid_file.is_file() and pid_file.read_text().isdigit() and alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_rerun_waits_for_a_run_an_earlier_study_left_running(tmp_path, capsys):
    """The run's lock is held by a live process (an orphan of a killed study): execute names it, waits for it to
    end, then runs; before, the run started beside it, was refused by the lock and was recorded FAILED."""
    run_dir = tmp_path / "runs" / "baseline" / "seed0"
    run_dir.mkdir(parents=True)
    orphan = subprocess.Popen([sys.executable, "-c", ORPHAN, str(run_dir / LOCK_NAME), "0.6"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert orphan.stdout.readline() == "held\n"
        record = execute(fake_spec(tmp_path, "baseline/seed0", [sys.executable, "-c", FAKE_RUN, str(run_dir)]))
        assert orphan.poll() is not None  # it had ended before the run started
    finally:
        orphan.kill()
        orphan.wait()
    assert record["status"] == "ok" and record["metrics"] == {"miou": 0.25, "epoch": 1}, record
    assert (run_dir / DONE).is_file()
    said = capsys.readouterr().out
    assert f"baseline/seed0 is still being trained by pid {orphan.pid} on host here" in said and "waiting" in said


def test_run_lock_holder_reads_the_engines_lock():
    assert processes.RUN_LOCK == LOCK_NAME


def test_stop_all_interrupts_live_runs_and_starts_no_more(tmp_path):
    pid_file = tmp_path / "run.pid"
    status = []
    thread = threading.Thread(target=lambda: status.append(processes.run_to_end(
        [sys.executable, "-c", SLEEPER, str(pid_file)], stdout=subprocess.DEVNULL, env=dict(os.environ))))
    thread.start()
    try:
        assert wait_for(lambda: pid_file.is_file() and pid_file.read_text().isdigit(), 20)
        assert processes.stop_all(signal.SIGTERM) == 1
        thread.join(10)
        assert status == [-signal.SIGTERM]
        started = time.monotonic()
        assert processes.run_to_end([sys.executable, "-c", SLEEPER, str(pid_file)], stdout=subprocess.DEVNULL,
                                    env=dict(os.environ)) == processes.INTERRUPTED
        assert time.monotonic() - started < 0.5  # refused, not started
    finally:
        processes.allow_runs()
        if pid_file.is_file() and alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_stopping_the_launcher_interrupts_its_runs_and_starts_no_queued_one(tmp_path):
    """What Ctrl-C does to a study (its runs, in their own process groups, do not get the terminal's SIGINT)."""
    launcher = Launcher(jobs=1, launcher="local", folder=tmp_path)
    pid_files = [tmp_path / f"{index}.pid" for index in range(2)]
    handles = [launcher.start(fake_spec(tmp_path, f"arm{index}/seed0", [sys.executable, "-c", SLEEPER, str(path)]))
               for index, path in enumerate(pid_files)]
    try:
        assert wait_for(lambda: pid_files[0].is_file() and pid_files[0].read_text().isdigit(), 20)
        launcher.stop()
        launcher.close()
        assert handles[0].result()["status"] == "failed" and not alive(int(pid_files[0].read_text()))
        assert handles[1].cancelled() and not pid_files[1].exists()
    finally:
        processes.allow_runs()
        for path in pid_files:
            if path.is_file() and path.read_text().isdigit() and alive(int(path.read_text())):
                os.kill(int(path.read_text()), signal.SIGKILL)
