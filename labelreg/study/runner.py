"""Run a study: data, its phase-one autoencoders, then every arm × seed (thesis §5.3–5.4).

Each run is a subprocess ``python -m labelreg.cli train-seg|train-ae …`` with its own log file,
launched by local worker threads (``--jobs N``) or through submitit (``--launcher submitit``).
A run is finished once ``<run>/study_run.json`` exists; a second ``labelreg study`` skips it
(and resumes an interrupted one from its ``last.pt``). A failed run is recorded with its log
and does not stop the others. Scores are the final epoch's, on the protocol's ``score_split``.

One study at a time holds its folder (``processes.StudyLock``); runs die with the study, and a run an
earlier study left running is waited for, never started beside it (``labelreg.study.processes``).
Every distinct autoencoder is trained once, first; an arm starts when the autoencoder it reads is done
(or at once when it reads none), and is not started at all when that autoencoder failed.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labelreg.config import ConfigError
from labelreg.data.synthetic import dataset_exists, write_synthetic_dataset
from labelreg.storage import write_json
from labelreg.study import processes
from labelreg.study.protocol import PhaseOne, Protocol, load_protocol
from labelreg.study.report import write_outputs

DONE = "study_run.json"
DIAGNOSTICS = "diagnostics.json"  # labelreg.tasks.diagnostics.DIAGNOSTICS_FILE, when a run measured them
AUTOENCODER = "autoencoder"  # the ``arm`` of a phase-one run
RECORD_KEYS = ("arm", "seed", "name", "run_dir", "log", "overrides", "autoencoder")


def _spec(out: Path, *, arm: str, seed: int, name: str, command: str, config: Path, overrides: list[str],
          autoencoder: str | None) -> dict:
    runs = (out / "runs").resolve()
    overrides = [*overrides, f"output_dir={runs}", f"name={name}"]
    return {"arm": arm, "seed": seed, "name": name, "run_dir": str(runs / name), "autoencoder": autoencoder,
            "log": str((out / "logs" / f"{name.replace('/', '_')}.log").resolve()),
            "argv": [sys.executable, "-m", "labelreg.cli", command, "--config", str(config), "--resume", *overrides],
            "overrides": overrides, "threads": 1}


def autoencoder_spec(protocol: Protocol, out: Path, phase_one: PhaseOne) -> dict:
    """The command of one phase-one run (``runs/autoencoder``, or ``runs/autoencoders/<name>`` when named)."""
    return _spec(out, arm=AUTOENCODER, seed=0, name=phase_one.run_name, command="train-ae", config=phase_one.config,
                 overrides=[*protocol.data_overrides(), *phase_one.all_overrides()], autoencoder=phase_one.name)


def run_spec(protocol: Protocol, out: Path, arm: str, seed: int) -> dict:
    """The command of one arm × seed; a phase-one arm reads its autoencoder's ``last.pt``."""
    overrides = [*protocol.data_overrides(), *protocol.budget_overrides(), f"train.seed={seed}",
                 *protocol.arm_overrides(arm)]
    phase_one = protocol.autoencoder_for(arm)
    if phase_one is not None:
        checkpoint = (out / "runs").resolve() / phase_one.run_name / "checkpoints" / "last.pt"
        overrides.append(f"regularizer.autoencoder={checkpoint}")
    return _spec(out, arm=arm, seed=seed, name=protocol.run_name(arm, seed), command="train-seg",
                 config=protocol.base, overrides=overrides, autoencoder=phase_one.name if phase_one else None)


def final_metrics(run_dir: Path) -> dict:
    """The last epoch's evaluation (the scoring split, and its subsets), from the run's metrics.json."""
    summary = json.loads((run_dir / "metrics.json").read_text())
    last = summary.get("last") or {}
    if "val/miou" not in last:
        raise ValueError(f"{run_dir}/metrics.json: the last epoch holds no evaluation")
    return {key[len("val/"):]: value for key, value in last.items() if key.startswith("val/")} | {
        "epoch": last.get("epoch")}


def read_diagnostics(run_dir: str | Path) -> dict | None:
    """``<run>/diagnostics.json`` (labelreg.tasks.diagnostics) when the run wrote one; None if absent or unreadable."""
    path = Path(run_dir) / DIAGNOSTICS
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        print(f"[study] {path} unreadable ({error}); left out of the report", flush=True)
        return None
    return record if isinstance(record, dict) else None


def _record(spec: dict) -> dict:
    return {key: spec.get(key) for key in RECORD_KEYS}


def execute(spec: dict) -> dict:
    """Run one training subprocess (module level, so submitit can pickle it); never raises."""
    run_dir, log = Path(spec["run_dir"]), Path(spec["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    processes.wait_for_run(run_dir, spec["name"], say=lambda text: print(text, flush=True))
    started = time.perf_counter()
    with open(log, "a") as stream:
        stream.write(f"$ {' '.join(spec['argv'])}\n")
        stream.flush()
        rc = processes.run_to_end(spec["argv"], stdout=stream, env=env)
    seconds = time.perf_counter() - started
    record = _record(spec) | {"seconds": seconds, "rc": rc}
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
            processes.allow_runs()
        elif launcher == "submitit":
            try:
                import submitit
            except ImportError as error:
                raise RuntimeError("--launcher submitit needs submitit: pip install -e '.[cluster]'") from error
            self.executor = submitit.AutoExecutor(folder=str(folder), cluster=submitit_cluster)
            self.executor.update_parameters(**({"timeout_min": 120} | (submitit_parameters or {})))
            self.jobs: list = []
        else:
            raise ValueError(f"launcher {launcher!r}; choose 'local' or 'submitit'")

    def start(self, spec: dict):
        if self.kind == "local":
            return self.pool.submit(execute, spec)
        job = self.executor.submit(execute, spec)
        self.jobs.append(job)
        return job

    def stop(self) -> None:
        """Start nothing more and interrupt the runs (each keeps its last checkpoint): the local ones, or the
        submitit jobs not yet done (a Ctrl-C of the study would otherwise leave them queued or running)."""
        if self.kind == "local":
            self.pool.shutdown(wait=False, cancel_futures=True)
            processes.stop_all()
            return
        for job in self.jobs:
            if not job.done():
                job.cancel(check=False)

    def close(self) -> None:
        if self.kind == "local":
            self.pool.shutdown()


def outcome(spec: dict, handle) -> dict:
    try:
        return handle.result()
    except Exception as error:  # noqa: BLE001 - a lost job is one failed run, not a failed study
        return _record(spec) | {"status": "failed", "error": f"{type(error).__name__}: {error} (log {spec['log']})",
                                "seconds": None}


def prepare_data(protocol: Protocol) -> None:
    """Synthesize the study's scenes when missing; a real data set must already be at ``data.root``."""
    data = protocol.data
    if not protocol.synthetic:
        if not Path(data["root"]).exists():
            raise ConfigError(f"{protocol.source}: data.root {data['root']} does not exist "
                              f"(data.dataset={protocol.dataset}; real data sets are never synthesized)")
        return
    if not dataset_exists(data["root"]):
        write_synthetic_dataset(data["root"], labeled=int(data["labeled"]), depth_only=int(data.get("depth_only", 0)),
                                size=tuple(data["size"]), seed=int(data.get("seed", 0)), progress=False)


def launch_runs(protocol: Protocol, launcher: Launcher, phase_ones: dict[str, dict], specs: list[dict],
           todo: list[dict]) -> tuple[dict[str, dict], list[dict], list[str]]:
    """Phase one first, the arms without it beside it, each other arm once its autoencoder is done.
    Returns the autoencoders' records, the arms' records and the names of the runs started."""
    waiting = {id(spec) for spec in todo}
    handles = {spec["name"]: launcher.start(spec) for spec in todo
               if spec["arm"] == AUTOENCODER or spec["autoencoder"] is None}
    autoencoders, skipped = {}, {}
    for name, spec in phase_ones.items():
        result = outcome(spec, handles[spec["name"]]) if spec["name"] in handles else finished(spec)
        autoencoders[name] = result
        dependants = [arm for arm in specs if arm["autoencoder"] == name and id(arm) in waiting]
        if result["status"] != "ok":
            print(f"[study {protocol.name}] phase one {name} failed ({result['error']}): its "
                  f"{len(dependants)} run(s) are not started", flush=True)
            skipped |= {arm["name"]: _record(arm) | {"status": "failed", "seconds": None, "error": (
                f"not run: its autoencoder {name!r} failed ({result['log']})")} for arm in dependants}
            continue
        handles |= {arm["name"]: launcher.start(arm) for arm in dependants}
    results = [outcome(spec, handles[spec["name"]]) if spec["name"] in handles
               else skipped.get(spec["name"]) or finished(spec) for spec in specs]
    return autoencoders, results, list(handles)


def run_study(protocol: Protocol | str | Path, *, out: str | Path | None = None, jobs: int | None = None,
              launcher: str = "local", submitit_cluster: str | None = None,
              submitit_parameters: dict | None = None) -> dict:
    """Train what is missing and write report.md, results.json and study.png under ``out``.

    Refused (``processes.StudyBusyError``) while another study holds ``out``, before anything is written.
    """
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    out = Path(out) if out else Path("runs") / "study" / protocol.name
    jobs = jobs or protocol.jobs
    with processes.StudyLock(out):
        started = time.perf_counter()
        prepare_data(protocol)
        specs = [run_spec(protocol, out, arm, seed) for seed in protocol.seeds for arm in protocol.arms]
        phase_ones = {phase_one.name: autoencoder_spec(protocol, out, phase_one)
                      for phase_one in protocol.autoencoders_needed()}
        todo = [spec for spec in [*phase_ones.values(), *specs] if finished(spec) is None]
        threads = max(1, (os.cpu_count() or 1) // max(1, min(jobs, len(todo) or 1)))
        for spec in todo:
            spec["threads"] = threads
        print(f"[study {protocol.name}] {len(specs)} runs ({len(protocol.arms)} arms × {len(protocol.seeds)} seeds) "
              f"+ {len(phase_ones)} phase-one autoencoder(s): {len(todo)} to train, {jobs} at a time ({launcher})",
              flush=True)
        launcher_ = Launcher(jobs=jobs, launcher=launcher, folder=out / "submitit", submitit_cluster=submitit_cluster,
                             submitit_parameters=submitit_parameters)
        try:
            autoencoders, results, started_runs = launch_runs(protocol, launcher_, phase_ones, specs, todo)
        except BaseException:  # Ctrl-C reaches only the study (its runs have their own process groups)
            launcher_.stop()
            raise
        finally:
            launcher_.close()
        for result in results:
            if result["status"] == "ok":
                result["diagnostics"] = read_diagnostics(result["run_dir"])
        summary = write_outputs(protocol, out, results, autoencoders, wall_seconds=time.perf_counter() - started)
    summary["trained"] = started_runs
    for result in results:
        if result["status"] != "ok":
            print(f"[study {protocol.name}] FAILED {result['name']}: {result['error']}")
    print(f"[study {protocol.name}] wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'study.png'}")
    return summary
