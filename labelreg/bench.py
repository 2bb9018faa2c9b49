"""Benchmarks (issue 7): training-step and inference throughput, peak memory, data loading.

``labelreg bench`` (or ``python scripts/benchmark.py``) measures, for every combination of
the chosen models, batch sizes, resolutions, precisions, channels_last, torch.compile and
regularizer settings, on CPU or CUDA:

- **training step**: forward + loss + backward + optimizer step on a fixed random batch
  that already sits on the device (no data loading), ``warmup`` untimed steps, then
  ``iters`` steps timed one by one with ``time.perf_counter`` (``torch.cuda.synchronize``
  before and after each on CUDA); ms/step is the median, img/s = batch / median, and the
  fastest step is kept too (the least disturbed one on a shared machine);
- **inference**: the same with ``model.eval()`` and ``torch.inference_mode()``;
- **FLOPs** of one step and one inference (``torch.utils.flop_counter``): machine-independent;
- **peak memory** over what was in use before the model was built, per phase:
  CUDA ``torch.cuda.max_memory_allocated`` (statistics reset before each phase); CPU the
  growth of the process' resident set: Linux' peak RSS (``VmHWM``), reset before each phase
  through ``/proc/self/clear_refs``, minus the RSS before the model was built (elsewhere:
  ``resource.getrusage`` maxrss, which cannot be reset). By default every case runs in a
  fresh subprocess, so no case sees memory cached by an earlier one;
- **paired timing** (``--paired``, on for presets): all cases built side by side in one
  process and stepped in turn, so load from other users hits them alike; ratios are the
  median over steps of the i-th step ratios.

Models: any name in ``labelreg.models.MODELS`` (``--model-options`` JSON goes to its
builder) and torchvision's reference segmenters as ``tv:fcn_resnet50``,
``tv:deeplabv3_resnet50``, ``tv:deeplabv3_resnet101`` … (built with ``weights=None,
weights_backbone=None, aux_loss=False``; never downloaded). Loss and optimizer are the trainer's
(``train_seg.make_losses`` weighted by ``default_loss_weights``; ``engine.build_optimizer``):
cross-entropy, plus ``0.4 ·`` PSPNet's auxiliary head's cross-entropy for PSPNets, plus ``0.5 ·``
the auxiliary cross-entropy through the frozen decoder of a randomly initialised
``LabelAutoencoder`` (variant 128) when the regularizer is on (``DecoderRegularized``; with
``--dropin``, the forward-hook wrapper of ``labelreg.regularize`` that ``train-seg`` puts around
torchvision's models — torchvision's own modules, tapped at ``tvseg.TV_TAPS`` — see ``Case.dropin``).

``bench_data`` measures how many images/s the NYUv2 readers (``NYUv2Labeled`` over the
.mat, ``NYUv2DepthOnly`` over depth-only frames) deliver through a ``DataLoader`` with N
workers, on a given folder or on synthetic data written to a temporary folder.
See docs/bench.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.cli import parse_size
from labelreg.config import Config, DataConfig, OptimConfig, RegularizerConfig
from labelreg.data.build import NYU_MAT_NAME, nyu_mat_path
from labelreg.engine import autocast, build_optimizer, pad_collate, resolve_device, weighted_total
from labelreg.train_seg import default_loss_weights, make_losses

TV_PREFIX = "tv:"
PRECISIONS = ("fp32", "bf16", "fp16")
AE_VARIANT = "128"
_RESULT_MARKER = "@@labelreg-bench@@ "

# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One benchmark configuration (a row of the table)."""

    model: str
    batch: int = 2
    size: tuple[int, int] = (256, 256)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds a GradScaler)
    channels_last: bool = False
    regularizer: bool = False
    aux_crop: int | None = None  # regularizer.aux_crop: decode a random window of this many code cells
    # regularized rows: the drop-in wrapper (labelreg.regularize's forward hook; train-seg's for tv: models)
    dropin: bool = False
    compile: bool = False
    num_classes: int = 21
    options: dict = field(default_factory=dict)  # builder options for labelreg models
    device: str = "cpu"
    iters: int = 10
    warmup: int = 3
    infer: bool = True
    optimizer: str = "sgd"
    threads: int | None = None
    seed: int = 0

    def label(self) -> str:
        return (f"{self.model} b{self.batch} {self.size[0]}x{self.size[1]} {self.precision}"
                f"{' cl' if self.channels_last else ''}{' compile' if self.compile else ''}"
                f"{self._regularizer_label()}{' ' + json.dumps(self.options) if self.options else ''}")

    def _regularizer_label(self) -> str:
        if not self.regularizer:
            return ""
        return (f" +reg{' dropin' if self.dropin else ''}{f' crop {self.aux_crop}' if self.aux_crop else ''}")


def make_cases(models: Iterable[str], *, batches: Iterable[int] = (2,),
               sizes: Iterable[tuple[int, int]] = ((256, 256),), precisions: Iterable[str] = ("fp32",),
               channels_last: Iterable[bool] = (False,), compile: Iterable[bool] = (False,),
               regularizer: Iterable[bool] = (False,), **common: Any) -> list[Case]:
    """Every combination, model-major; ``common`` goes to every ``Case`` (device, iters, options…)."""
    cases = []
    for model, batch, size, precision, cl, comp, reg in product(models, batches, sizes, precisions, channels_last,
                                                                compile, regularizer):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; choose from {PRECISIONS}")
        cases.append(Case(model=model, batch=batch, size=tuple(size), precision=precision, channels_last=cl,
                          compile=comp, regularizer=reg, **common))
    return cases


# ----------------------------------------------------------------------------- models


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmentation model (``{"out": …}``) in labelreg's output convention.

    ``forward`` is torchvision's ``_SimpleSegmentationModel.forward`` without the auxiliary
    classifier, also returning the backbone's output as ``features["out"]`` so that the
    regularizer can read it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict:
        features = self.model.backbone(x)["out"]
        logits = F.interpolate(self.model.classifier(features), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)
        return {"seg": logits, "features": {"out": features}}


def build_torchvision(name: str, num_classes: int) -> TorchvisionSegmenter:
    from torchvision.models import segmentation  # after `import labelreg` (see labelreg._compat)

    builder = getattr(segmentation, name, None)
    if builder is None or name.startswith("_") or not callable(builder):
        raise ValueError(f"unknown torchvision segmentation model {name!r} (e.g. tv:deeplabv3_resnet101)")
    return TorchvisionSegmenter(builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))


def build_model(case: Case) -> nn.Module:
    """The segmenter of ``case``, wrapped in ``DecoderRegularized`` when its regularizer is on.

    ``case.dropin``: what ``train-seg`` trains instead: torchvision's models as ``tvseg.TorchvisionSegmenter``
    (torchvision's own forward, so LR-ASPP too), and regularized rows through the drop-in wrapper
    ``dropin.RegularizedOutputs``, tapped at ``TV_TAPS`` (other models: their deepest 1/16 module)."""
    from labelreg.models import build_segmenter
    from labelreg.models.autoencoder import LabelAutoencoder
    from labelreg.models.regularizer import DecoderRegularized

    if case.dropin:
        from labelreg.models.dropin import RegularizedOutputs
        from labelreg.models.tvseg import TV_TAPS

        if case.aux_crop:
            raise ValueError("--aux-crop is not available with --dropin")
        options = {} if case.model.startswith(TV_PREFIX) else case.options
        model = build_segmenter(case.model, num_classes=case.num_classes, **options)
        if not case.regularizer:
            return model
        return RegularizedOutputs(model, LabelAutoencoder(case.num_classes, AE_VARIANT),
                                  tap=TV_TAPS.get(case.model[len(TV_PREFIX):]) if case.model.startswith(TV_PREFIX)
                                  else None)
    if case.model.startswith(TV_PREFIX):
        model = build_torchvision(case.model[len(TV_PREFIX):], case.num_classes)
    else:
        model = build_segmenter(case.model, num_classes=case.num_classes, **case.options)
    if case.regularizer:
        model = DecoderRegularized(model, LabelAutoencoder(case.num_classes, AE_VARIANT), frozen=True,
                                   aux_crop=case.aux_crop)
    return model


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

    ``kind`` picks the source ("cuda" | "vmhwm" | "maxrss"); ``method`` describes it for the results.
    """

    METHODS = {"cuda": "cuda max_memory_allocated",
               "vmhwm": "peak RSS (VmHWM, reset per phase) - RSS before the model",
               "maxrss": "ru_maxrss - RSS before the model (not reset per phase)"}

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self.kind = "cuda"
            self.baseline = torch.cuda.memory_allocated(device)
        elif _proc_status_kb("VmHWM") is not None and self._clear_peak():
            self.kind = "vmhwm"
            self.baseline = _proc_status_kb("VmRSS") * 1024
        else:  # no resettable peak: maxrss over the whole process (KB on Linux, bytes on macOS)
            self.kind = "maxrss"
            self.baseline = self._maxrss()
        self.method = self.METHODS[self.kind]

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


# ----------------------------------------------------------------------------- timing


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


def random_batch(case: Case, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(case.seed)
    image = torch.randn(case.batch, 3, *case.size, generator=generator)
    label = torch.randint(0, case.num_classes, (case.batch, *case.size), generator=generator)
    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
    return image.to(device).contiguous(memory_format=memory_format), label.to(device)


def _amp(precision: str) -> str:
    return "none" if precision == "fp32" else precision


def train_config(case: Case) -> Config:
    """The trainer's default config for ``case``: its optimizer, and the decoder regularizer when it is on."""
    # learning rates do not change the step's cost; SGD's 1e-3 is a typical value, Adam's the trainer's default
    optim = OptimConfig(optimizer=case.optimizer, lr=1e-3 if case.optimizer == "sgd" else OptimConfig().lr)
    regularizer = RegularizerConfig(kind="decoder" if case.regularizer else "none")
    return Config(optim=optim, regularizer=regularizer)


def loss_fn(cfg: Config, model: nn.Module) -> Callable[[dict, torch.Tensor], torch.Tensor]:
    """The trainer's loss: ``make_losses``' terms (CE, PSPNet's ``psp_aux``, the regularizer's ``aux``)
    weighted by ``default_loss_weights``, as ``train_one_epoch`` combines them."""
    losses, weights = make_losses(cfg, model, None), default_loss_weights(cfg, model)
    return lambda outputs, label: weighted_total(losses(outputs, {"label": label}), weights)


def train_step_fn(model: nn.Module, case: Case, image: torch.Tensor, label: torch.Tensor, device: torch.device,
                  forward: Callable[[torch.Tensor], dict] | None = None) -> Callable[[], None]:
    """A closure running one training step of ``model`` (called through ``forward``, e.g. its compiled
    form): forward + the trainer's weighted loss + backward + the trainer's optimizer step."""
    forward = forward or model
    cfg = train_config(case)
    optimizer = build_optimizer(cfg.optim, model)
    loss_of = loss_fn(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=case.precision == "fp16")

    def step() -> None:
        with autocast(device, _amp(case.precision)):
            loss = loss_of(forward(image), label)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

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


def prime(case: Case, device: torch.device) -> None:
    """One tiny training step and inference with the case's precision, channels_last and optimizer (not
    compiled, no regularizer), before the memory baseline.

    Lazily imported modules, kernel code paged in and thread pools otherwise count as ~100 MB of
    "peak memory" of whatever model runs first in a process.
    """
    import labelreg.models  # noqa: F401  (imports torchvision and every model module)

    tiny = Case(model="tiny", batch=2, size=(32, 32), precision=case.precision, channels_last=case.channels_last,
                num_classes=2, optimizer=case.optimizer)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1)).to(device)
    image, label = random_batch(tiny, device)
    wrapped = lambda x: {"seg": F.interpolate(model(x), size=x.shape[-2:], mode="bilinear")}  # noqa: E731
    train_step_fn(model, tiny, image, label, device, forward=wrapped)()
    model.eval()
    infer_fn(wrapped, tiny, image, device)()


def _setup(case: Case) -> torch.device:
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
    device = _setup(case)
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


def count_gflop(fn) -> float:
    """Floating-point operations (GFLOP, a multiply-add = 2) of one call of ``fn``, by torch's FlopCounterMode
    (convolutions, matmuls and their backward; element-wise ops, pooling and resizing are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return round(counter.get_total_flops() / 1e9, 3)


def paired_train_times(cases: list[Case], progress: bool = True) -> dict[str, list[float]]:
    """Training-step times (ms) of all ``cases`` built side by side in this process and stepped in turn
    (one step of each, ``iters`` times), so a change of machine load hits every case alike: ratios of
    the i-th steps compare like with like. Keyed by ``Case.label()``."""
    device = _setup(cases[0])
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


# ----------------------------------------------------------------------------- running cases in subprocesses


def _case_to_json(case: Case) -> dict[str, Any]:
    return asdict(case)


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
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [sys.executable, "-c", "from labelreg.bench import _worker; _worker()"]
    request = json.dumps({"kind": kind, "cases": [_case_to_json(case) for case in cases]})
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


# ----------------------------------------------------------------------------- summaries


_CASE_KEYS = ("model", "batch", "size", "precision", "channels_last", "compile", "regularizer", "aux_crop", "dropin",
              "device", "num_classes", "options")


def case_key(row: dict[str, Any], without: tuple[str, ...] = ()) -> tuple:
    return tuple(json.dumps(row.get(key)) for key in _CASE_KEYS if key not in without)


def merge_rounds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case: medians over rounds of the per-round medians (and peaks); per-round values kept."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(case_key(row), []).append(row)
    merged = []
    for group in groups.values():
        good = [row for row in group if "error" not in row]
        if not good:
            merged.append({key: value for key, value in group[0].items() if key != "round"})
            continue
        row = {key: value for key, value in good[0].items() if not key.endswith("_all") and key != "round"}
        for metric in ("train_ms", "infer_ms", "peak_mb", "infer_peak_mb"):
            values = [r[metric] for r in good if r.get(metric) is not None]
            if values:
                row[metric] = round(statistics.median(values), 2)
                row[f"{metric}_rounds"] = values
        for metric in ("train_ms_min", "infer_ms_min"):  # the least disturbed step of all rounds
            values = [r[metric] for r in good if r.get(metric) is not None]
            if values:
                row[metric] = min(values)
        for phase in ("train", "infer"):
            if row.get(f"{phase}_ms"):
                row[f"{phase}_img_s"] = round(row["batch"] * 1000 / row[f"{phase}_ms"], 3)
        merged.append(row)
    return merged


def regularizer_overheads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each case measured with and without the regularizer: training step time overhead in %."""
    plain = {case_key(r, ("regularizer",)): r for r in rows if not r["regularizer"] and r.get("train_ms")}
    result = []
    for row in rows:
        base = plain.get(case_key(row, ("regularizer",)))
        if row["regularizer"] and row.get("train_ms") and base is not None:
            result.append({"case": _short(row), "train_ms_without": base["train_ms"], "train_ms_with": row["train_ms"],
                           "overhead_pct": round((row["train_ms"] / base["train_ms"] - 1) * 100, 1),
                           "overhead_pct_min": round((row["train_ms_min"] / base["train_ms_min"] - 1) * 100, 1),
                           "flop_overhead_pct": (round((row["train_gflop"] / base["train_gflop"] - 1) * 100, 1)
                                                 if row.get("train_gflop") and base.get("train_gflop") else None),
                           "peak_mb_without": base.get("peak_mb"), "peak_mb_with": row.get("peak_mb")})
    return result


def _short(row: dict[str, Any]) -> str:
    return (f"{row['model']} b{row['batch']} {row['size']} {row['precision']}"
            f"{' channels_last' if row['channels_last'] else ''}{' compile' if row['compile'] else ''}")


def ratio(rows: list[dict[str, Any]], numerator: str, denominator: str, metric: str) -> float | None:
    """``metric`` of model ``numerator`` over that of ``denominator`` (first matching rows without error)."""
    def value(model: str) -> float | None:
        return next((r[metric] for r in rows if r["model"] == model and r.get(metric)), None)

    top, bottom = value(numerator), value(denominator)
    return round(top / bottom, 3) if top is not None and bottom else None


# ----------------------------------------------------------------------------- output


TABLE_COLUMNS = ("model", "batch", "HxW", "precision", "channels_last", "regularizer", "train img/s", "infer img/s",
                 "ms/step", "fastest ms", "peak MB")


def _regularizer_cell(row: dict[str, Any]) -> str:
    if row["regularizer"] and row.get("aux_crop"):
        return f"crop {row['aux_crop']}"
    if row["regularizer"] and row.get("dropin"):
        return "dropin"
    return _cell(row["regularizer"])


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    cells = []
    for row in rows:
        model = row["model"] + (" (compiled)" if row.get("compile") else "")
        if "error" in row:
            tail = ["error: " + row["error"][:60], "", "", "", ""]
        else:
            infer = "=plain" if row["regularizer"] else _cell(row.get("infer_img_s"))
            tail = [_cell(row.get("train_img_s")), infer, _cell(row.get("train_ms"), 1),
                    _cell(row.get("train_ms_min"), 1), _cell(row.get("peak_mb"), 0)]
        cells.append([model, str(row["batch"]), row["size"], row["precision"], _cell(row["channels_last"]),
                      _regularizer_cell(row), *tail])
    return cells


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = TABLE_COLUMNS,
                 cells: list[list[str]] | None = None) -> str:
    """A Markdown table (aligned, so it also reads as plain text)."""
    cells = table_rows(rows) if cells is None else cells
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def machine_info() -> dict[str, Any]:
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "memory_gb": memory_gb,
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


# ----------------------------------------------------------------------------- model benchmark and presets


PRESETS: dict[str, dict[str, Any]] = {
    # Thesis cost claim: zoom-out ResNet-101 (output stride 32, grid 1/4, 1000 hidden) vs dilated (OS 8) ResNet-101.
    "zoomout-vs-dilated": {"models": ["zoomout_resnet101", "tv:deeplabv3_resnet101"], "batches": [2],
                           "sizes": [(256, 256)], "num_classes": 21, "regularizer": [False]},
    # Issue 7's target: the regularizer costs at most 10% of the training step.
    "regularizer-overhead": {"models": ["zoomout_densenet121", "zoomout_resnet101"], "batches": [2],
                             "sizes": [(256, 256)], "num_classes": 21, "regularizer": [False, True]},
}
TIME_RATIO_TARGET = 0.5
OVERHEAD_TARGET_PCT = 10.0


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


def paired_overheads(cases: list[Case], rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regularizer overhead (%) from paired timing: median over steps of with/without, per round."""
    result = []
    for case in cases:
        base = replace(case, regularizer=False).label()
        good = [times for times in rounds if "error" not in times and base in times]
        if case.regularizer and good:
            per_round = [round((paired_ratio(times, case.label(), base) - 1) * 100, 1) for times in good]
            fastest = [round((min(times[case.label()]) / min(times[base]) - 1) * 100, 1) for times in good]
            result.append({"case": base, "overhead_pct": round(statistics.median(per_round), 1), "per_round": per_round,
                           "overhead_pct_min_per_round": fastest})
    return result


def benchmark_models(cases: list[Case], *, repeat: int = 1, isolate: bool = True, paired: bool = False,
                     progress: bool = True, timeout: float | None = None) -> dict[str, Any]:
    """Run ``cases``; return ``{"machine", "settings", "results" (merged over rounds), "rounds" (raw rows),
    "regularizer_overhead", …, "paired" (with ``paired``: step times of the cases stepped in turn)}``."""
    rows = run_cases(cases, repeat=repeat, isolate=isolate, progress=progress, timeout=timeout)
    merged = merge_rounds(rows)
    per_round = [regularizer_overheads([r for r in rows if r["round"] == k]) for k in range(1, repeat + 1)]
    report = {"machine": machine_info(),
              "settings": {"iters": cases[0].iters, "warmup": cases[0].warmup, "repeat": repeat, "isolated": isolate,
                           "optimizer": cases[0].optimizer, "aux_weight": RegularizerConfig().weight,
                           "autoencoder_variant": AE_VARIANT},
              "results": merged, "rounds": rows, "regularizer_overhead": regularizer_overheads(merged),
              "regularizer_overhead_per_round": per_round}
    if paired:
        rounds = run_paired(cases, repeat=repeat, isolate=isolate, progress=progress, timeout=timeout)
        good = [times for times in rounds if "error" not in times]
        medians = {case.label(): [round(statistics.median(times[case.label()]), 2) for times in good] for case in cases}
        report["paired"] = {"train_ms_per_round": medians, "rounds": rounds,
                            "regularizer_overhead": paired_overheads(cases, rounds)}
    return report


def zoomout_vs_dilated_summary(report: dict[str, Any], cases: list[Case], zoomout: str = "zoomout_resnet101",
                               dilated: str = "tv:deeplabv3_resnet101") -> dict[str, Any]:
    """Time and memory ratios zoom-out / dilated: from the separate runs (medians, per round) and, when
    measured, from paired timing (median over steps of the i-th step ratio, per round)."""
    rounds = sorted({r["round"] for r in report["rounds"]})
    by_round = [[r for r in report["rounds"] if r["round"] == k] for k in rounds]
    summary = {"zoomout": zoomout, "dilated": dilated, "time_ratio_target": TIME_RATIO_TARGET,
               "time_ratio": ratio(report["results"], zoomout, dilated, "train_ms"),
               "time_ratio_per_round": [ratio(rows, zoomout, dilated, "train_ms") for rows in by_round],
               "memory_ratio": ratio(report["results"], zoomout, dilated, "peak_mb"),
               "memory_ratio_per_round": [ratio(rows, zoomout, dilated, "peak_mb") for rows in by_round],
               "time_ratio_fastest": ratio(report["results"], zoomout, dilated, "train_ms_min"),
               "flop_ratio": ratio(report["results"], zoomout, dilated, "train_gflop"),
               "infer_time_ratio": ratio(report["results"], zoomout, dilated, "infer_ms")}
    labels = [next((c.label() for c in cases if c.model == name), None) for name in (zoomout, dilated)]
    good = [times for times in report.get("paired", {}).get("rounds", []) if "error" not in times]
    if good and None not in labels:
        summary["paired_time_ratio_per_round"] = [paired_ratio(times, *labels) for times in good]
        summary["paired_fastest_ratio_per_round"] = [round(min(times[labels[0]]) / min(times[labels[1]]), 3)
                                                     for times in good]
        summary["paired_time_ratio"] = round(statistics.median(summary["paired_time_ratio_per_round"]), 3)
    headline = summary.get("paired_time_ratio", summary["time_ratio"])
    summary["time_target_met"] = headline is not None and headline <= TIME_RATIO_TARGET
    summary["lighter_in_memory"] = summary["memory_ratio"] is not None and summary["memory_ratio"] < 1
    return summary


def print_report(report: dict[str, Any], preset: str | None = None) -> None:
    print(format_table(report["results"]))
    target = f" (target ≤ {OVERHEAD_TARGET_PCT:g}%)" if preset == "regularizer-overhead" else ""
    for item in report["regularizer_overhead"]:
        rounds = [o["overhead_pct"] for per in report["regularizer_overhead_per_round"] for o in per
                  if o["case"] == item["case"]]
        print(f"regularizer overhead{target}, {item['case']}: {item['overhead_pct']:+.1f}% of the training step "
              f"(median {item['train_ms_without']:.1f} → {item['train_ms_with']:.1f} ms; per round {rounds}; "
              f"fastest steps {item['overhead_pct_min']:+.1f}%; FLOPs {_cell(item['flop_overhead_pct'], 1)}%); peak "
              f"{_cell(item['peak_mb_without'], 0)} → {_cell(item['peak_mb_with'], 0)} MB")
    for label, medians in report.get("paired", {}).get("train_ms_per_round", {}).items():
        print(f"paired timing, {label}: median ms/step per round {medians}")
    for item in report.get("paired", {}).get("regularizer_overhead", []):
        print(f"regularizer overhead{target}, paired timing, {item['case']}: {item['overhead_pct']:+.1f}% "
              f"(median of step ratios, per round {item['per_round']}; "
              f"fastest steps {item['overhead_pct_min_per_round']})")
    for times in report.get("paired", {}).get("rounds", []):
        if "error" in times:
            print(f"paired timing failed: {times['error']}")
    if "zoomout_vs_dilated" in report:
        s = report["zoomout_vs_dilated"]
        paired = (f"; paired timing {s['paired_time_ratio']:.3f} (median of step ratios, per round "
                  f"{s['paired_time_ratio_per_round']}; fastest steps {s['paired_fastest_ratio_per_round']})"
                  if "paired_time_ratio" in s else "")
        print(f"{s['zoomout']} / {s['dilated']}: training step time ratio {_cell(s['time_ratio'], 3)} "
              f"(per round {s['time_ratio_per_round']}; fastest steps {_cell(s['time_ratio_fastest'], 3)}{paired}; "
              f"target ≤ {TIME_RATIO_TARGET}: "
              f"{'met' if s['time_target_met'] else 'missed'}); peak memory ratio {_cell(s['memory_ratio'], 3)} "
              f"(per round {s['memory_ratio_per_round']}: {'lighter' if s['lighter_in_memory'] else 'not lighter'}); "
              f"inference time ratio {_cell(s['infer_time_ratio'], 3)}; "
              f"training FLOP ratio {_cell(s['flop_ratio'], 3)}")


# ----------------------------------------------------------------------------- data loading


def nyu_sources(root: str | Path | None, depth_only: str | Path | None = None) -> dict[str, Path]:
    """``{"mat": …, "depth_only": …}`` found under ``root`` (itself or ``root/nyu``, as the trainer looks for
    the .mat); either may be missing. A given ``depth_only`` is used instead of searching ``root``."""
    found: dict[str, Path] = {}
    if root is not None:
        with contextlib.suppress(FileNotFoundError):
            found["mat"] = nyu_mat_path(DataConfig(root=str(root)))
        if depth_only is None:
            candidates = (Path(root) / "depth_only", Path(root) / "nyu" / "depth_only")
            depth_only = next((folder for folder in candidates if folder.is_dir()), None)
    if depth_only is not None:
        found["depth_only"] = Path(depth_only)
    return found


def nyu_datasets(sources: dict[str, Path], limit: int | None = None) -> dict[str, torch.utils.data.Dataset]:
    """The readers to benchmark, by name: ``nyu-mat`` (NYUv2Labeled, all frames) and ``nyu-depth-only``."""
    from torch.utils.data import Subset

    from labelreg.data.nyu import NYUv2DepthOnly, NYUv2Labeled

    datasets: dict[str, torch.utils.data.Dataset] = {}
    if "mat" in sources:
        datasets["nyu-mat"] = NYUv2Labeled(sources["mat"], split="all")
    if "depth_only" in sources:
        datasets["nyu-depth-only"] = NYUv2DepthOnly(sources["depth_only"])
    if limit is not None:
        datasets = {name: Subset(d, range(min(limit, len(d)))) for name, d in datasets.items()}
    return datasets


def bench_loader(dataset: torch.utils.data.Dataset, *, workers: int, batch: int, images: int = 256,
                 seed: int = 0) -> dict[str, Any]:
    """Draw ``images`` frames in random order (repeating the set if it is smaller) through a DataLoader.

    ``epoch_img_s`` counts from creating the iterator (worker start-up included) to the last batch;
    ``img_s`` is the steady rate over the later batches: those after the first half and after the
    2·workers batches the workers prefetch while starting up (``None`` if too few batches remain).
    """
    from torch.utils.data import DataLoader, RandomSampler

    sampler = RandomSampler(dataset, num_samples=images, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=pad_collate)
    started = time.perf_counter()
    arrivals, counts = [], []
    for sample in loader:
        arrivals.append(time.perf_counter())
        counts.append(len(sample["image"]))
    skip = min(max(len(arrivals) // 2, 2 * workers + 1), len(arrivals) - 1)
    steady_images, steady_time = sum(counts[skip + 1:]), arrivals[-1] - arrivals[skip]
    return {"workers": workers, "batch": batch, "images": sum(counts), "seconds": round(arrivals[-1] - started, 3),
            "first_batch_s": round(arrivals[0] - started, 3),
            "img_s": round(steady_images / steady_time, 1) if steady_time > 0 and steady_images else None,
            "epoch_img_s": round(sum(counts) / (arrivals[-1] - started), 1)}


def bench_data(root: str | Path | None = None, *, workers: Iterable[int] = (0, 1, 2, 4), batch: int = 8,
               images: int = 256, depth_only: str | Path | None = None, limit: int | None = None,
               synthetic: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Images/s of the NYUv2 readers through DataLoaders with each worker count.

    ``root``: a folder holding ``nyu_depth_v2_labeled.mat`` and/or ``depth_only/`` (or ``root/nyu/…``). Without
    it, a synthetic set (``synthetic``: ``write_synthetic_dataset`` keywords) is written to a temporary folder.
    """
    settings = dict(workers=workers, batch=batch, images=images, limit=limit, progress=progress)
    if root is None and depth_only is None:
        from labelreg.data.synthetic import write_synthetic_dataset

        options = {"labeled": 48, "depth_only": 96, "size": (480, 640), "seed": 0, **(synthetic or {})}
        with tempfile.TemporaryDirectory(prefix="labelreg-bench-") as folder:
            if progress:
                print(f"[bench] writing synthetic NYUv2 data {options} to {folder} …", file=sys.stderr, flush=True)
            paths = write_synthetic_dataset(folder, progress=False, **options)
            rows = reader_rows({"mat": paths.nyu_mat, "depth_only": paths.depth_only_dir}, **settings)
        source: str | dict[str, str] = f"synthetic (written to a temporary folder): {options}"
    else:
        sources = nyu_sources(root, depth_only)
        if not sources:
            raise FileNotFoundError(f"no {NYU_MAT_NAME} or depth_only/ under {root} (nor {root}/nyu)")
        rows = reader_rows(sources, **settings)
        source = {key: str(value) for key, value in sources.items()}
    return {"machine": machine_info(), "source": source, "data": rows}


def reader_rows(sources: dict[str, Path], *, workers: Iterable[int], batch: int, images: int, limit: int | None,
                progress: bool) -> list[dict[str, Any]]:
    """One row per reader of ``sources`` and worker count (``bench_loader``'s numbers)."""
    rows = []
    for name, dataset in nyu_datasets(sources, limit).items():
        first = dataset[0]["image"]
        for count in workers:
            if progress:
                print(f"[bench] data: {name}, {count} workers …", file=sys.stderr, flush=True)
            rows.append({"reader": name, "frames": len(dataset), "HxW": f"{first.shape[-2]}x{first.shape[-1]}",
                         **bench_loader(dataset, workers=count, batch=batch, images=images)})
    return rows


DATA_COLUMNS = ("reader", "HxW", "frames", "workers", "batch", "images", "img/s (steady)", "img/s (incl. start-up)",
                "first batch s")


def format_data_table(rows: list[dict[str, Any]]) -> str:
    cells = [[r["reader"], r["HxW"], str(r["frames"]), str(r["workers"]), str(r["batch"]), str(r["images"]),
              _cell(r["img_s"], 1),
              _cell(r["epoch_img_s"], 1), _cell(r["first_batch_s"], 2)] for r in rows]
    return format_table(rows, DATA_COLUMNS, cells)


# ----------------------------------------------------------------------------- profiling


def profile_case(case: Case, steps: int = 3, row_limit: int = 25) -> str:
    """torch.profiler table (self CPU/CUDA time by op and input shape) over ``steps`` training steps of ``case``."""
    from torch.profiler import ProfilerActivity, profile

    device = _setup(case)
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


# ----------------------------------------------------------------------------- command line


def parse_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object: {error}") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object, got {text!r}")
    return options


def _switch(value: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    models = parser.add_argument_group("model benchmark")
    models.add_argument("--preset", choices=sorted(PRESETS), help="a predefined comparison (see docs/bench.md)")
    models.add_argument("--models", nargs="+", metavar="NAME",
                        help="names in labelreg.models.MODELS and/or tv:fcn_resnet50, tv:deeplabv3_resnet50, "
                             "tv:deeplabv3_resnet101")
    models.add_argument("--batch", nargs="+", type=int, help="batch sizes (default 2)")
    models.add_argument("--size", nargs="+", type=parse_size, help="HxW resolutions (default 256x256)")
    models.add_argument("--precision", nargs="+", choices=PRECISIONS, help="default fp32")
    models.add_argument("--channels-last", nargs="?", const="on", default="off", choices=("off", "on", "both"))
    models.add_argument("--compile", nargs="?", const="on", default="off", choices=("off", "on", "both"),
                        help="torch.compile the model (compile time is excluded by the warm-up)")
    models.add_argument("--regularizer", choices=("off", "on", "both"), default=None,
                        help="wrap in DecoderRegularized (random AE-128, frozen decoder, loss CE + 0.5·aux CE)")
    models.add_argument("--aux-crop", type=int, default=None, metavar="CELLS",
                        help="regularized rows decode a random CELLS×CELLS window of the code (regularizer.aux_crop)")
    models.add_argument("--dropin", action="store_true",
                        help="as train-seg builds them: tv: models run torchvision's own forward (LR-ASPP too) and "
                             "regularized rows use the drop-in wrapper (labelreg.regularize's forward hook), not "
                             "DecoderRegularized")
    models.add_argument("--num-classes", type=int, default=None, help="default 21")
    models.add_argument("--model-options", type=parse_options, default={}, metavar="JSON",
                        help="builder options for labelreg models, e.g. '{\"hidden\": 256}'")
    models.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    models.add_argument("--iters", type=int, default=10, help="timed steps per case (default 10)")
    models.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    models.add_argument("--repeat", type=int, default=1, help="rounds over all cases, interleaved (default 1)")
    models.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    models.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each case")
    models.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    models.add_argument("--in-process", action="store_true",
                        help="run cases in this process (faster; CPU peaks may include memory cached by earlier cases)")
    models.add_argument("--timeout", type=float, default=None, help="seconds per case (subprocess mode)")
    models.add_argument("--paired", action="store_true",
                        help="also time all cases side by side in one process, one step of each in turn "
                             "(ratios robust to changing machine load; on by default for presets)")
    models.add_argument("--profile", action="store_true", help="also print a torch.profiler table of the first case")
    data = parser.add_argument_group("data-loading benchmark")
    data.add_argument("--data", choices=("nyu",), help="benchmark the NYUv2 readers instead of models")
    data.add_argument("--data-root", default=None, help="folder with nyu_depth_v2_labeled.mat and/or depth_only/ "
                                                        "(default: synthetic data in a temporary folder)")
    data.add_argument("--depth-only", default=None, help="depth-only frames: a folder of .h5 or a list of PNG pairs")
    data.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2, 4])
    data.add_argument("--data-batch", type=int, default=8)
    data.add_argument("--data-images", type=int, default=256, help="frames drawn per measurement (default 256)")
    data.add_argument("--data-limit", type=int, default=None, help="use only the first N frames of each reader")
    data.add_argument("--synthetic-size", type=parse_size, default=(480, 640), help="HxW of synthetic frames")
    data.add_argument("--synthetic-count", nargs=2, type=int, default=(48, 96), metavar=("LABELED", "DEPTH_ONLY"))
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")


def cases_from_args(args: argparse.Namespace) -> list[Case]:
    preset = dict(PRESETS[args.preset]) if args.preset else {}
    models = args.models or preset.get("models")
    if not models:
        raise ValueError("give --models, --preset or --data")
    regularizer = _switch(args.regularizer) if args.regularizer else preset.get("regularizer", [False])
    return make_cases(models, batches=args.batch or preset.get("batches", [2]),
                      sizes=args.size or preset.get("sizes", [(256, 256)]), precisions=args.precision or ["fp32"],
                      channels_last=_switch(args.channels_last), compile=_switch(args.compile),
                      regularizer=regularizer, num_classes=args.num_classes or preset.get("num_classes", 21),
                      options=args.model_options, device=args.device, iters=args.iters, warmup=args.warmup,
                      infer=not args.no_infer, optimizer=args.optimizer, threads=args.threads, aux_crop=args.aux_crop,
                      dropin=args.dropin)


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.data:
        synthetic = {"labeled": args.synthetic_count[0], "depth_only": args.synthetic_count[1],
                     "size": args.synthetic_size}
        report = bench_data(args.data_root, workers=args.workers, batch=args.data_batch, images=args.data_images,
                            depth_only=args.depth_only, limit=args.data_limit, synthetic=synthetic)
        print(format_data_table(report["data"]))
    else:
        cases = cases_from_args(args)
        report = benchmark_models(cases, repeat=args.repeat, isolate=not args.in_process, timeout=args.timeout,
                                  paired=args.paired or args.preset is not None)
        report["preset"] = args.preset
        if args.preset == "zoomout-vs-dilated":
            report["zoomout_vs_dilated"] = zoomout_vs_dilated_summary(report, cases)
        print_report(report, args.preset)
        if args.profile:
            print(profile_case(cases[0]))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return report


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``labelreg bench`` to the CLI's subcommands."""
    parser = commands.add_parser("bench", help="throughput and memory of models, and data-loading speed",
                                 description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(run=run_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_from_args(args)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"benchmark: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
