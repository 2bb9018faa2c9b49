"""Run a study: data, one phase-one autoencoder, then every arm × seed (thesis §5.3–5.4).

Each run is a subprocess ``python -m labelreg.cli train-seg|train-ae …`` with its own log file,
launched by local worker threads (``--jobs N``) or through submitit (``--launcher submitit``).
A run is finished once ``<run>/study_run.json`` exists; a second ``labelreg study`` skips it
(and resumes an interrupted one from its ``last.pt``). A failed run is recorded with its log
and does not stop the others. Scores are the final epoch's, on the protocol's ``score_split``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labelreg.data.synthetic import dataset_exists, write_synthetic_dataset
from labelreg.storage import write_json
from labelreg.study.protocol import Protocol, arm_uses_phase_one, load_protocol
from labelreg.study.report import write_outputs

DONE = "study_run.json"
AUTOENCODER = "autoencoder"


def run_spec(protocol: Protocol, out: Path, arm: str, seed: int) -> dict:
    """The command of one run; ``arm`` ``autoencoder`` is phase one."""
    runs = (out / "runs").resolve()
    if arm == AUTOENCODER:
        name, command, config = AUTOENCODER, "train-ae", protocol.autoencoder_config
        overrides = [*protocol.data_overrides(), *protocol.autoencoder_overrides]
    else:
        name, command, config = protocol.run_name(arm, seed), "train-seg", protocol.base
        overrides = [*protocol.data_overrides(), *protocol.budget_overrides(), f"train.seed={seed}",
                     *protocol.arms[arm]]
        if arm_uses_phase_one(protocol, arm):
            overrides.append(f"regularizer.autoencoder={runs / AUTOENCODER / 'checkpoints' / 'last.pt'}")
    overrides += [f"output_dir={runs}", f"name={name}"]
    return {"arm": arm, "seed": seed, "name": name, "run_dir": str(runs / name),
            "log": str((out / "logs" / f"{name.replace('/', '_')}.log").resolve()),
            "argv": [sys.executable, "-m", "labelreg.cli", command, "--config", str(config), "--resume", *overrides],
            "overrides": overrides, "threads": 1}


def final_metrics(run_dir: Path) -> dict:
    """The last epoch's evaluation (the scoring split), from the run's metrics.json."""
    summary = json.loads((run_dir / "metrics.json").read_text())
    last = summary.get("last") or {}
    if "val/miou" not in last:
        raise ValueError(f"{run_dir}/metrics.json: the last epoch holds no evaluation")
    return {key[len("val/"):]: value for key, value in last.items() if key.startswith("val/")} | {
        "epoch": last.get("epoch")}


def execute(spec: dict) -> dict:
    """Run one training subprocess (module level, so submitit can pickle it); never raises."""
    run_dir, log = Path(spec["run_dir"]), Path(spec["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    started = time.perf_counter()
    with open(log, "a") as stream:
        stream.write(f"$ {' '.join(spec['argv'])}\n")
        stream.flush()
        rc = subprocess.call(spec["argv"], stdout=stream, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - started
    record = {key: spec[key] for key in ("arm", "seed", "name", "run_dir", "log", "overrides")}
    record.update(seconds=seconds, rc=rc)
    if rc != 0:
        print(f"[study] {spec['name']} FAILED after {seconds:.0f}s (exit status {rc}); log {log}", flush=True)
        return record | {"status": "failed", "error": f"exit status {rc}; see {log}"}
    try:
        record |= {"status": "ok", "metrics": final_metrics(run_dir)}
    except (OSError, ValueError, KeyError) as error:
        return record | {"status": "failed", "error": f"{error}; see {log}"}
    write_json(run_dir / DONE, record)
    print(f"[study] {spec['name']} done in {seconds:.0f}s: mIoU {100 * record['metrics']['miou']:.1f}", flush=True)
    return record


def finished(spec: dict) -> dict | None:
    path = Path(spec["run_dir"]) / DONE
    return json.loads(path.read_text()) | {"skipped": True} if path.is_file() else None


class Launcher:
    """Starts runs (``start(spec)`` → a handle whose ``result()`` waits): local worker threads, each
    running one training subprocess, or submitit jobs (Slurm when available, else local processes)."""

    def __init__(self, *, jobs: int, launcher: str, folder: Path, submitit_cluster: str | None = None,
                 submitit_parameters: dict | None = None) -> None:
        self.kind = launcher
        if launcher == "local":
            self.pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        elif launcher == "submitit":
            try:
                import submitit
            except ImportError as error:
                raise RuntimeError("--launcher submitit needs submitit: pip install -e '.[cluster]'") from error
            self.executor = submitit.AutoExecutor(folder=str(folder), cluster=submitit_cluster)
            self.executor.update_parameters(**({"timeout_min": 120} | (submitit_parameters or {})))
        else:
            raise ValueError(f"launcher {launcher!r}; choose 'local' or 'submitit'")

    def start(self, spec: dict):
        return self.pool.submit(execute, spec) if self.kind == "local" else self.executor.submit(execute, spec)

    def close(self) -> None:
        if self.kind == "local":
            self.pool.shutdown()


def outcome(spec: dict, handle) -> dict:
    try:
        return handle.result()
    except Exception as error:  # noqa: BLE001 - a lost job is one failed run, not a failed study
        return {key: spec[key] for key in ("arm", "seed", "name", "run_dir", "log", "overrides")} | {
            "status": "failed", "error": f"{type(error).__name__}: {error} (log {spec['log']})", "seconds": None}


def prepare_data(protocol: Protocol) -> None:
    data = protocol.data
    if not dataset_exists(data["root"]):
        write_synthetic_dataset(data["root"], labeled=int(data["labeled"]), depth_only=int(data.get("depth_only", 0)),
                                size=tuple(data["size"]), seed=int(data.get("seed", 0)), progress=False)


def run_study(protocol: Protocol | str | Path, *, out: str | Path | None = None, jobs: int | None = None,
              launcher: str = "local", submitit_cluster: str | None = None,
              submitit_parameters: dict | None = None) -> dict:
    """Train what is missing and write report.md, results.json and study.png under ``out``."""
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    out = Path(out) if out else Path("runs") / "study" / protocol.name
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs or protocol.jobs
    started = time.perf_counter()
    prepare_data(protocol)
    specs = [run_spec(protocol, out, arm, seed) for seed in protocol.seeds for arm in protocol.arms]
    phase_one = run_spec(protocol, out, AUTOENCODER, 0) if protocol.needs_autoencoder() else None
    todo = [spec for spec in ([phase_one] if phase_one else []) + specs if finished(spec) is None]
    threads = max(1, (os.cpu_count() or 1) // max(1, min(jobs, len(todo) or 1)))
    for spec in todo:
        spec["threads"] = threads
    trained = [spec["name"] for spec in todo]
    print(f"[study {protocol.name}] {len(specs)} runs ({len(protocol.arms)} arms × {len(protocol.seeds)} seeds) "
          f"+ {'one phase-one autoencoder' if phase_one else 'no autoencoder'}: {len(todo)} to train, {jobs} at a "
          f"time ({launcher})", flush=True)
    launcher_ = Launcher(jobs=jobs, launcher=launcher, folder=out / "submitit", submitit_cluster=submitit_cluster,
                         submitit_parameters=submitit_parameters)
    try:
        # phase one first; the arms without it start beside it, the others once it is done
        handles = {spec["name"]: launcher_.start(spec) for spec in todo
                   if spec is phase_one or not arm_uses_phase_one(protocol, spec["arm"])}
        autoencoder = None
        if phase_one is not None:
            autoencoder = outcome(phase_one, handles[AUTOENCODER]) if AUTOENCODER in handles else finished(phase_one)
            if autoencoder["status"] != "ok":
                print(f"[study {protocol.name}] phase one failed ({autoencoder['error']}): its arms will fail")
        handles.update({spec["name"]: launcher_.start(spec) for spec in todo if spec["name"] not in handles})
        results = [outcome(spec, handles[spec["name"]]) if spec["name"] in handles else finished(spec)
                   for spec in specs]
    finally:
        launcher_.close()
    summary = write_outputs(protocol, out, results, autoencoder, wall_seconds=time.perf_counter() - started)
    summary["trained"] = trained
    for result in results:
        if result["status"] != "ok":
            print(f"[study {protocol.name}] FAILED {result['name']}: {result['error']}")
    print(f"[study {protocol.name}] wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'study.png'}")
    return summary
