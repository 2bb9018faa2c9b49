"""Run directories: who may write one, what a run writes into it, and what ``--overwrite`` may delete.

A run directory (``<output_dir>/<name>``) belongs to one process at a time: ``claim_run_directory``
holds ``<run>/.lock`` (an flock, so the kernel frees it when the process dies, plus the holder's pid
and host) for the run's lifetime. It refuses to start a new run over existing checkpoints unless
resuming or asked to overwrite, refuses a resume that has no ``last.pt`` to continue, and removes the
temp files that killed writes left behind.

Nothing is ever deleted that the project did not write. The first claim of a folder writes the run
marker ``.labelreg-run`` into it; ``--overwrite`` (``remove_run_outputs``) works only in a folder that
carries the marker, and there removes only the files and folders a run writes (``RUN_OUTPUTS``): a
user's ``NOTES.txt`` or own subfolder in a run directory survives, and so does a file of theirs
inside ``checkpoints/``. A folder without the marker that holds run outputs (a run made before the
marker existed, or a copy of one without it) is refused, naming it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from labelreg.storage import TEMPORARY_PATTERN, write_text_atomic


class RunDirectoryError(RuntimeError):
    """A run directory that cannot be used as asked (it holds a finished run, another process writes it…)."""


def run_directory(checkpoint_path: str | Path) -> Path:
    """``runs/x/checkpoints/best.pt`` → ``runs/x`` (a loose checkpoint: its folder)."""
    folder = Path(checkpoint_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


LOCK_NAME = ".lock"
RUN_MARKER = ".labelreg-run"
_MARKER_TEXT = ("labelreg run directory. `--overwrite` deletes only the files a run writes here (config.yaml, "
                "checkpoints/, tb/, metrics.json, train.log, ...) and only in a folder holding this file.\n")
# What a run writes, by folder (relative to the run directory; "index/*": each retrieval index folder):
# the engine (config.yaml, checkpoints, metrics.json, train.log, tb/), the tasks (resolved.json,
# class_frequencies.json, classes.json, diagnostics.json), `labelreg eval` (eval_<split>[_aux].json), `labelreg query`
# (queries/, index/), `labelreg study` (study_run.json), and the temp files of atomic writes.
RUN_OUTPUTS: dict[str, tuple[str, ...]] = {
    ".": ("config.yaml", "resolved.json", "class_frequencies.json", "classes.json", "diagnostics.json",
          "metrics.json", "train.log", "study_run.json", "eval_*.json", TEMPORARY_PATTERN),
    "checkpoints": ("last.pt", "best.pt", TEMPORARY_PATTERN),
    "tb": ("events.out.tfevents.*",),
    "queries": ("*.json", "*.png", TEMPORARY_PATTERN),
    "index/*": ("features.bin", "index.json", "index.json.tmp"),
}
_HELD: dict[Path, "RunLock"] = {}


def is_run_directory(path: str | Path) -> bool:
    """Whether ``path`` carries the run marker: a folder ``claim_run_directory`` made into a run directory."""
    return (Path(path) / RUN_MARKER).is_file()


def mark_run_directory(run_dir: str | Path) -> None:
    """Write the run marker into ``run_dir`` unless it is there already (the first claim, or the first write of
    a resumed run made before markers existed)."""
    if not is_run_directory(run_dir):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(run_dir) / RUN_MARKER, _MARKER_TEXT)


def run_outputs(run_dir: str | Path) -> list[Path]:
    """The files in ``run_dir`` that a run writes (``RUN_OUTPUTS``); symlinked folders are not followed."""
    run_dir = Path(run_dir)
    found = []
    for where, patterns in RUN_OUTPUTS.items():
        folders = [run_dir] if where == "." else sorted(run_dir.glob(where))
        for folder in folders:  # a folder reached through a link (checkpoints/ on another disk) is the user's
            if not folder.is_dir() or folder.resolve() != run_dir.resolve() / folder.relative_to(run_dir):
                continue
            for pattern in patterns:
                found += [path for path in sorted(folder.glob(pattern)) if path.is_file() or path.is_symlink()]
    return found


def remove_run_outputs(run_dir: str | Path) -> list[Path]:
    """Delete what a run wrote in ``run_dir`` (``run_outputs``), then its emptied folders; return what was deleted.

    Everything else stays: the marker, the lock, and any file or folder of the user's. Refuses
    (``RunDirectoryError``, naming the folder) a folder that holds run outputs but no run marker. Call it
    while holding the run (inside ``claim_run_directory``), so no training writes there meanwhile.
    """
    run_dir = Path(run_dir)
    outputs = run_outputs(run_dir)
    if outputs and not is_run_directory(run_dir):
        raise RunDirectoryError(
            f"{run_dir} holds run files ({', '.join(sorted({p.relative_to(run_dir).parts[0] for p in outputs}))}) "
            f"but no run marker {RUN_MARKER}, so labelreg did not make it a run directory and deletes nothing in "
            f"it; choose another name=/output_dir=, or remove the files yourself (if it is a run made before "
            f"markers existed, `touch {run_dir / RUN_MARKER}` lets --overwrite replace it)")
    for path in outputs:
        path.unlink(missing_ok=True)
    emptied = {folder for path in outputs for folder in path.relative_to(run_dir).parents if folder != Path(".")}
    for folder in sorted(emptied, key=lambda folder: -len(folder.parts)):  # index/<name> before index/
        if not any((run_dir / folder).iterdir()):
            (run_dir / folder).rmdir()
    return outputs


class RunLock:
    """``<run>/.lock``: an exclusive flock held while the run is alive; the file names its holder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.took_over: dict | None = None  # the stale holder this lock replaced

    @staticmethod
    def _holder(fd_or_path) -> dict:
        try:
            if isinstance(fd_or_path, int):
                text = os.pread(fd_or_path, 4096, 0).decode(errors="replace")
            else:
                text = Path(fd_or_path).read_text(errors="replace")
            holder = json.loads(text) if text.strip() else {}
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._holder(fd)
                os.close(fd)
                raise RunDirectoryError(
                    f"{self.path.parent} is in use by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
                    f"(lock {self.path}); wait for that run to end, or choose another name=/output_dir=") from None
            try:  # the file may have been released (unlinked) between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder, host = self._holder(fd), socket.gethostname()
        if holder and holder.get("host") not in (None, host):
            os.close(fd)
            raise RunDirectoryError(
                f"{self.path.parent} is locked by pid {holder.get('pid', '?')} on host {holder['host']} (lock "
                f"{self.path}); if that run has ended, delete the lock file and start again")
        if holder and holder.get("pid") != os.getpid():
            self.took_over = holder
        record = json.dumps({"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still holding the flock: nobody else owns this file yet
        finally:
            os.close(self.fd)
            self.fd = None


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete every ``.<name>.tmp-<pid>`` file in the run and its checkpoints; call it only while holding the run's
    lock. The lock's holder is the only writer of a run, so while it is held no such file belongs to a write
    in progress, whatever process now has the pid in its name (pids are reused)."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for temporary in sorted(folder.glob(TEMPORARY_PATTERN)) if folder.is_dir() else ():
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def _is_main_rank() -> bool:
    """Rank 0 (or no torchrun); read from the environment, so it works before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def claim_run_directory(run_dir: str | Path, *, resume: bool = False, overwrite: bool = False):
    """Hold ``run_dir`` for this process (rank 0 only under torchrun) for the ``with`` block.

    Refuses a run directory that already holds checkpoints unless ``resume`` (continue it: it must hold
    ``last.pt``, the commit point) or ``overwrite`` (first ``remove_run_outputs``: checkpoints, metrics,
    logs, TensorBoard events, evaluations and caches such as class frequencies — in a folder with the
    run marker only). A fresh claim marks the folder (``RUN_MARKER``). Nested claims of the same folder
    in one process (the CLI, then ``fit``) are free.
    """
    key = Path(run_dir).resolve()
    if key in _HELD or not _is_main_rank():
        yield _HELD.get(key)
        return
    lock = RunLock(run_dir).acquire()
    _HELD[key] = lock
    try:
        if lock.took_over:
            print(f"{run_dir}: took over the stale lock of pid {lock.took_over.get('pid')} (no longer running)")
        for temporary in remove_stale_temporaries(run_dir):
            print(f"removed {temporary}, left by an interrupted write")
        existing = [name for name in ("best.pt", "last.pt") if (Path(run_dir) / "checkpoints" / name).is_file()]
        if existing and resume and "last.pt" not in existing:
            raise RunDirectoryError(
                f"{run_dir} holds {', '.join(existing)} but no checkpoints/last.pt, so there is no run to resume "
                "(starting afresh would overwrite them); pass --overwrite to replace the run, or continue from a "
                "checkpoint in a new run: --resume-from <checkpoint> with another name=")
        if existing and not resume and not overwrite:
            raise RunDirectoryError(
                f"{run_dir} already holds checkpoints ({', '.join(existing)}); pass --resume to continue that "
                "run, --overwrite to replace it, or choose another name=/output_dir=")
        if overwrite and not resume and (removed := remove_run_outputs(run_dir)):
            print(f"--overwrite: removed the {len(removed)} files the earlier run wrote in {run_dir}")
        if not (resume and existing):  # a resumed run made before markers gets its marker at its first write
            mark_run_directory(run_dir)
        yield lock
    finally:
        del _HELD[key]
        lock.release()
