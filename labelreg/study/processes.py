"""The processes of a study: one study per folder, runs that die with it, runs an earlier one left behind.

- ``StudyLock``: ``<out>/.study.lock``, an flock held for the study's lifetime (the kernel frees it when
  the study dies, however it dies); a second study on the same folder is refused, naming the holder.
- ``run_to_end``: a run is a subprocess in its own session and process group (so the study can stop it
  and everything it started with one ``killpg``; ``start_new_session``, as Python 3.10 has no
  ``process_group``), started through a tiny Python prologue that asks the
  kernel for SIGTERM when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)`` through ctypes) and then
  ``exec``s the run: a study killed with ``kill -9`` (as the OOM killer does) takes its runs with it.
  The prologue replaces ``preexec_fn``, which is unsafe with the worker threads that start runs. The
  signal is bound to the starting thread, which waits in ``run_to_end`` for as long as the run lives.
  Elsewhere (no ``prctl``) a run outlives a killed study, and the next study waits for it, below.
- ``run_lock_holder``: who holds a run's ``<run>/.lock`` (``labelreg.engine.LOCK_NAME``), the lock every
  training run holds while alive; a run found held was left running by an earlier study and is waited
  for (``wait_for_run``), never started twice or counted as failed.

Standard library only: a test loads this file alone to check it in a subprocess of its own.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, IO

STUDY_LOCK = ".study.lock"
RUN_LOCK = ".lock"  # labelreg.engine.LOCK_NAME (tests/study/test_processes.py checks they agree)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# argv: parent pid, the run's argv. Exits 1 when the parent is already gone (it died before prctl took hold).
DIE_WITH_PARENT = f"""\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGTERM)
except (AttributeError, OSError):  # not Linux: the run may outlive its study
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("labelreg study: the study ended before this run started")
os.execv(sys.argv[2], sys.argv[2:])
"""

_live: set[subprocess.Popen] = set()
_live_guard = threading.Lock()  # guards _live and _stopping: a run starts either before stop_all or not at all
_stopping = False
INTERRUPTED = 130  # the exit status of a run never started because the study is stopping


class StudyBusyError(RuntimeError):
    """Another study holds the output folder."""


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode(errors="replace") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class StudyLock:
    """``<out>/.study.lock`` for the ``with`` block; ``StudyBusyError`` naming the folder and holder if taken."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.path = self.out / STUDY_LOCK
        self.fd: int | None = None

    def __enter__(self) -> "StudyLock":
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StudyBusyError(
                f"{self.out} is in use by another study: pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')} (lock {self.path}); wait for it to end, or give another --out") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *_exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # frees the flock; the file stays (removing it would race a waiting study)
            self.fd = None


def run_to_end(argv: list[str], *, stdout: IO, env: dict[str, str]) -> int:
    """Run ``argv`` (stderr into ``stdout``) in its own process group, dying with this process; its exit status."""
    with _live_guard:
        if _stopping:
            return INTERRUPTED
        process = subprocess.Popen([sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *argv], stdout=stdout,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _live.add(process)
    try:
        return process.wait()
    finally:
        with _live_guard:
            _live.discard(process)


def allow_runs() -> None:
    """Let ``run_to_end`` start runs again (after a ``stop_all``)."""
    global _stopping
    with _live_guard:
        _stopping = False


def stop_all(sig: int = signal.SIGINT) -> int:
    """Start no more runs and send ``sig`` to every live run's process group (SIGINT: a run keeps its last
    checkpoint); how many were live."""
    global _stopping
    with _live_guard:
        _stopping = True
        processes = list(_live)
    for process in processes:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return len(processes)


def run_lock_holder(run_dir: str | Path) -> dict | None:
    """The holder record of ``<run_dir>/.lock`` while a live process holds it, else None (probe only)."""
    try:
        fd = os.open(Path(run_dir) / RUN_LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(fd)
        os.close(fd)
        return holder or {"pid": "?"}
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


def wait_for_run(run_dir: str | Path, name: str, *, say: Callable[[str], None] = print,
                 poll_seconds: float = 0.5) -> dict | None:
    """Wait while ``run_dir``'s lock is held, naming its holder once; returns the holder waited for (or None)."""
    holder = run_lock_holder(run_dir)
    if holder is None:
        return None
    say(f"[study] {name} is still being trained by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"(started {holder.get('started', '?')}; lock {Path(run_dir) / RUN_LOCK}), left running by an earlier "
        f"study: waiting for it to end (or end it: kill {holder.get('pid', '<pid>')})")
    while run_lock_holder(run_dir) is not None:
        time.sleep(poll_seconds)
    say(f"[study] {name}: pid {holder.get('pid', '?')} ended; continuing from what it left")
    return holder
