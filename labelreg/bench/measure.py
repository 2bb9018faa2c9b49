"""How the benchmark measures one case: step timing, FLOPs, peak memory, and the subprocess that isolates a case.

- **training step**: forward + loss + backward + optimizer step on a fixed random batch that already
  sits on the device (no data loading), ``warmup`` untimed steps, then ``iters`` steps timed one by one
  with ``time.perf_counter`` (``torch.cuda.synchronize`` before and after each on CUDA); ms/step is the
  median, img/s = batch / median, and the fastest step is kept too (the least disturbed one on a shared
  machine);
- **inference**: the same with ``model.eval()`` and ``torch.inference_mode()``;
- **FLOPs** of one step and one inference (``torch.utils.flop_counter``): machine-independent;
- **peak memory** over what was in use before the model was built, per phase (``MemoryMeter``: CUDA
  ``max_memory_allocated``; on Linux the peak RSS ``VmHWM``, reset per phase; elsewhere ``ru_maxrss``);
  by default every case runs in a fresh subprocess (``run_isolated``), so no case sees memory cached
  by an earlier one;
- **paired timing**: all cases built side by side in one process and stepped in turn
  (``paired_train_times``), so load from other users hits them alike.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from labelreg.bench.cases import Case, build_model, loss_fn, random_batch, train_config
from labelreg.engine import autocast, build_optimizer, optimizer_step
from labelreg.runtime import resolve_device

_RESULT_MARKER = "@@labelreg-bench@@ "

# ----------------------------------------------------------------------------- memory


def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class MemoryMeter:
    """Peak memory of a phase over a baseline taken at construction (before the model is built), in MB.

    ``kind`` picks the source: "cuda" (``torch.cuda.max_memory_allocated``, statistics reset before each
    phase); "vmhwm" (Linux: the peak resident set ``VmHWM``, reset before each phase through
    ``/proc/self/clear_refs``, minus the RSS before the model was built); "maxrss" elsewhere
    (``resource.getrusage`` maxrss, which cannot be reset). ``method`` describes it for the results.
    """

    METHODS = {"cuda": "cuda max_memory_allocated",
               "vmhwm": "peak RSS (VmHWM, reset per phase) - RSS before the model",
               "maxrss": "ru_maxrss - RSS before the model (not reset per phase)"}

    def __init__(self, device: torch.device, kind: str | None = None) -> None:
        """``kind``: the source to use (default: "cuda" on CUDA, else "vmhwm" where it can be reset, else "maxrss")."""
        self.device = device
        if kind is None:
            kind = "cuda" if device.type == "cuda" else "vmhwm" if self._resettable() else "maxrss"
        elif kind == "vmhwm" and not self._resettable():
            raise RuntimeError("no resettable peak RSS here (/proc/self/status VmHWM, /proc/self/clear_refs)")
        if kind == "cuda":
            torch.cuda.synchronize(device)
            self.baseline = torch.cuda.memory_allocated(device)
        elif kind == "vmhwm":
            self.baseline = _proc_status_kb("VmRSS") * 1024
        else:  # no resettable peak: maxrss over the whole process (KB on Linux, bytes on macOS)
            self.baseline = self._maxrss()
        self.kind = kind
        self.method = self.METHODS[kind]

    @classmethod
    def _resettable(cls) -> bool:
        """Linux' peak RSS exists and was just reset to the current RSS."""
        return _proc_status_kb("VmHWM") is not None and cls._clear_peak()

    @staticmethod
    def _clear_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
            return True
        except OSError:
            return False

    @staticmethod
    def _maxrss() -> int:
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return value if sys.platform == "darwin" else value * 1024

    def start_phase(self) -> None:
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "vmhwm":
            self._clear_peak()

    def peak_mb(self) -> float:
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.kind == "vmhwm":
            peak = _proc_status_kb("VmHWM") * 1024
        else:
            peak = self._maxrss()
        # In one process the allocator may hand memory back to the OS after the baseline was taken,
        # so the phase's peak RSS can sit below it: that phase grew nothing, not a negative amount.
        return max(0.0, round((peak - self.baseline) / 2**20, 1))


# ----------------------------------------------------------------------------- timing and FLOPs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, *, iters: int, warmup: int, device: torch.device) -> tuple[list[float], float]:
    """Run ``fn`` ``warmup`` times untimed, then ``iters`` times timed; (ms per call, seconds of the first call)."""
    first = None
    for _ in range(warmup):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        first = first if first is not None else time.perf_counter() - started
    times = []
    for _ in range(iters):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - started) * 1000)
    return times, (first if first is not None else times[0] / 1000)


def count_gflop(fn) -> float:
    """Floating-point operations (GFLOP, a multiply-add = 2) of one call of ``fn``, by torch's FlopCounterMode
    (convolutions, matmuls and their backward; element-wise ops, pooling and resizing are not counted)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return round(counter.get_total_flops() / 1e9, 3)


def _amp(precision: str) -> str:
    return "none" if precision == "fp32" else precision


def train_step_fn(model: nn.Module, case: Case, image: torch.Tensor, label: torch.Tensor, device: torch.device,
                  forward: Callable[[torch.Tensor], dict] | None = None) -> Callable[[], None]:
    """A closure running one training step of ``model`` (called through ``forward``, e.g. its compiled
    form): forward + the trainer's weighted loss + the engine's ``optimizer_step`` (backward, step; a GradScaler
    for fp16)."""
    forward = forward or model
    cfg = train_config(case)
    optimizer = build_optimizer(cfg.optim, model)
    loss_of = loss_fn(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=case.precision == "fp16")

    def step() -> None:
        with autocast(device, _amp(case.precision)):
            loss = loss_of(forward(image), label)
        optimizer_step(loss, optimizer, scaler=scaler)

    return step


def infer_fn(model, case: Case, image: torch.Tensor, device: torch.device):
    def forward() -> None:
        with torch.inference_mode(), autocast(device, _amp(case.precision)):
            model(image)["seg"]

    return forward


def _summary(prefix: str, times: list[float], batch: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {f"{prefix}_ms": round(median, 2), f"{prefix}_ms_min": round(min(times), 2),
            f"{prefix}_ms_all": [round(t, 2) for t in times], f"{prefix}_img_s": round(batch * 1000 / median, 3)}


# ----------------------------------------------------------------------------- one case in this process


def prime(case: Case, device: torch.device) -> None:
    """One tiny training step and inference with the case's precision, channels_last and optimizer (not
    compiled, no regularizer), before the memory baseline.

    Kernel code paged in and thread pools otherwise count as ~100 MB of "peak memory" of whatever model
    runs first in a process (torchvision and every model module are imported with this module already).
    """
    tiny = Case(model="tiny", batch=2, size=(32, 32), precision=case.precision, channels_last=case.channels_last,
                num_classes=2, optimizer=case.optimizer)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1)).to(device)
    image, label = random_batch(tiny, device)
    wrapped = lambda x: {"seg": F.interpolate(model(x), size=x.shape[-2:], mode="bilinear")}  # noqa: E731
    train_step_fn(model, tiny, image, label, device, forward=wrapped)()
    model.eval()
    infer_fn(wrapped, tiny, image, device)()


def setup(case: Case) -> torch.device:
    """The case's device (``--device auto`` resolved), its thread count, and cuDNN's autotuner on CUDA."""
    if case.threads:
        torch.set_num_threads(case.threads)
    device = resolve_device(case.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def prepare(case: Case, device: torch.device) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """(model, what to call — the compiled model or the model itself —, image batch, label batch) on ``device``."""
    torch.manual_seed(case.seed)
    model = build_model(case).to(device)
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runnable = torch.compile(model) if case.compile else model
    return model, runnable, *random_batch(case, device)


def run_case(case: Case) -> dict[str, Any]:
    """Measure one case in this process: inference first (model in eval mode), then training."""
    device = setup(case)
    prime(case, device)
    meter = MemoryMeter(device)
    model, runnable, image, label = prepare(case, device)
    row: dict[str, Any] = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                           "trainable_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
                           "device_used": str(device), "memory_method": meter.method}
    if case.infer and not case.regularizer:  # the branch is dropped after training: inference = plain row
        model.eval()
        meter.start_phase()
        forward = infer_fn(runnable, case, image, device)
        times, first = time_calls(forward, iters=case.iters, warmup=case.warmup, device=device)
        row.update(_summary("infer", times, case.batch), infer_peak_mb=meter.peak_mb(), infer_first_s=round(first, 2),
                   infer_gflop=None if case.compile else count_gflop(forward))
    model.train()
    meter.start_phase()
    step = train_step_fn(model, case, image, label, device, forward=runnable)
    times, first = time_calls(step, iters=case.iters, warmup=case.warmup, device=device)
    row.update(_summary("train", times, case.batch), peak_mb=meter.peak_mb(), train_first_s=round(first, 2),
               train_gflop=None if case.compile else count_gflop(step))
    return row


def paired_train_times(cases: list[Case], progress: bool = True) -> dict[str, list[float]]:
    """Training-step times (ms) of all ``cases`` built side by side in this process and stepped in turn
    (one step of each, ``iters`` times), so a change of machine load hits every case alike: ratios of
    the i-th steps compare like with like. Keyed by ``Case.label()``."""
    device = setup(cases[0])
    prime(cases[0], device)
    steps = {}
    for case in cases:
        model, runnable, image, label = prepare(case, device)
        steps[case.label()] = train_step_fn(model.train(), case, image, label, device, forward=runnable)
    if progress:
        print(f"[bench] paired timing: {len(steps)} models in turn, {cases[0].iters} steps each …", file=sys.stderr,
              flush=True)
    for _ in range(cases[0].warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(cases[0].iters):
        for name, step in steps.items():
            times[name].append(round(time_calls(step, iters=1, warmup=0, device=device)[0][0], 2))
    return times


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over steps of the ratio of the i-th step times."""
    return round(statistics.median(a / b for a, b in zip(times[numerator], times[denominator])), 3)


def profile_case(case: Case, steps: int = 3, row_limit: int = 25) -> str:
    """torch.profiler table (self CPU/CUDA time by op and input shape) over ``steps`` training steps of ``case``."""
    device = setup(case)
    model, runnable, image, label = prepare(case, device)
    step = train_step_fn(model.train(), case, image, label, device, forward=runnable)
    step()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=row_limit)


# ----------------------------------------------------------------------------- cases in subprocesses


def _case_from_json(data: dict[str, Any]) -> Case:
    return Case(**{**data, "size": tuple(data["size"])})


def _worker() -> None:
    """Subprocess entry: read ``{"kind": "case"|"paired", "cases": [...]}`` on stdin, print the result
    after a marker line on stdout."""
    request = json.loads(sys.stdin.read())
    cases = [_case_from_json(data) for data in request["cases"]]
    result = run_case(cases[0]) if request["kind"] == "case" else paired_train_times(cases, progress=False)
    print(_RESULT_MARKER + json.dumps(result), flush=True)


def run_isolated(kind: str, cases: list[Case], timeout: float | None = None) -> dict[str, Any]:
    """``run_case`` (kind "case") or ``paired_train_times`` (kind "paired") in a fresh Python process:
    clean memory peaks, nothing shared with earlier cases. Failures come back as ``{"error": …}``."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [sys.executable, "-c", f"from {__name__} import _worker; _worker()"]
    request = json.dumps({"kind": kind, "cases": [asdict(case) for case in cases]})
    try:
        done = subprocess.run(command, input=request, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    for line in done.stdout.splitlines():
        if line.startswith(_RESULT_MARKER):
            return json.loads(line[len(_RESULT_MARKER):])
    tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return {"error": f"subprocess failed (exit {done.returncode}): {tail}"}


def measure(case: Case, isolate: bool = True, timeout: float | None = None) -> dict[str, Any]:
    """One row: the case's settings and its measurements (or ``error``)."""
    try:
        result = run_isolated("case", [case], timeout) if isolate else run_case(case)
    except Exception as error:  # one failing case (OOM, compile error…) must not end the whole run
        result = {"error": f"{type(error).__name__}: {error}"}
    settings = {key: value for key, value in asdict(case).items() if key not in ("iters", "warmup", "seed")}
    settings["size"] = f"{case.size[0]}x{case.size[1]}"
    return {**settings, **result}


def run_cases(cases: list[Case], *, repeat: int = 1, isolate: bool = True, progress: bool = True,
              timeout: float | None = None) -> list[dict[str, Any]]:
    """Every case ``repeat`` times, in interleaved rounds (case 1, 2, …, then again), each row tagged ``round``."""
    rows = []
    for round_index in range(repeat):
        for case in cases:
            if progress:
                print(f"[bench] round {round_index + 1}/{repeat}: {case.label()} …", file=sys.stderr, flush=True)
            rows.append({**measure(case, isolate, timeout), "round": round_index + 1})
    return rows


def run_paired(cases: list[Case], *, repeat: int = 1, isolate: bool = True, progress: bool = True,
               timeout: float | None = None) -> list[dict[str, Any]]:
    """``repeat`` rounds of ``paired_train_times`` (each in a fresh subprocess unless ``isolate`` is off)."""
    rounds = []
    for round_index in range(repeat):
        if progress:
            print(f"[bench] paired round {round_index + 1}/{repeat}: {len(cases)} models stepped in turn …",
                  file=sys.stderr, flush=True)
        try:
            rounds.append(run_isolated("paired", cases, timeout) if isolate else paired_train_times(cases, progress))
        except Exception as error:
            rounds.append({"error": f"{type(error).__name__}: {error}"})
    return rounds
