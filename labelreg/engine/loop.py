"""The training loop of every task: plain functions, no hooks.

A trainer hands ``fit`` a :class:`LoopSpec` — the model plus four plain functions
(augment a batch, run the model, name the loss terms, evaluate) — and the data
loaders. The engine owns everything else: optimizer and schedule, AMP, gradient
clipping, TensorBoard and tqdm, evaluation every N epochs, best/last
checkpoints written atomically, exact resume at epoch boundaries, and stopping
with a clear message when the loss goes non-finite (the last good checkpoint on
disk is never overwritten by a bad one).

Under torchrun the model is wrapped in DistributedDataParallel, every rank trains on
its share of each global batch and only rank 0 writes (see :mod:`labelreg.runtime`).

Exact resume: the shuffling order draws from generators reseeded from ``(seed, epoch)``
and the device augmentation from ``(seed, epoch, rank)`` at the start of every epoch (each
rank its own augmentation, rank 0 the single-process stream), and the
global RNG states (torch, CUDA, numpy, random) are stored in the checkpoint, so
stopping after epoch k and resuming reproduces the uninterrupted run.

Optimizers and schedules live in :mod:`labelreg.engine.optim`, run directories and checkpoints in
:mod:`labelreg.engine.checkpoint`.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from labelreg.config import Config, ConfigError, save_config
from labelreg.data.loader import Batch, set_loader_epoch, to_device
from labelreg.cli_args import progress_wanted  # off after --no-progress
from labelreg.engine.checkpoint import (TrainState, checkpoint_payload, epoch_log_line, repair_run,
                                        restore_rng_state, resume_changes, write_metrics_json)
from labelreg.engine.rundir import claim_run_directory, mark_run_directory, run_directory
from labelreg.engine.optim import build_optimizer, build_scheduler, optimizer_step
from labelreg.engine.precision import resolve_amp
from labelreg.runtime import all_ranks_true, all_reduce_mean, barrier, current, epoch_seed, wrap_model
from labelreg.storage import load_checkpoint, save_checkpoint


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class LoopSpec:
    """What a trainer gives the engine (not to be confused with ``cfg.task``, the name of a task).

    - ``augment(batch) -> batch``: device-side training augmentation (and normalisation).
    - ``eval_augment(batch) -> batch``: device-side evaluation preprocessing.
    - ``forward(model, batch) -> outputs``: a dict of named outputs.
    - ``losses(outputs, batch) -> terms``: a dict of named scalar loss terms; the
      engine multiplies each by its weight — ``train.loss_weights.get(name, 1)``, overridden by
      ``dynamic_loss_weights`` where given — and sums them.
    - ``evaluate(model, loader, device) -> metrics``: flat dict of floats (the
      engine prefixes them with ``val/`` in logs).
    - ``visualize(model, batch) -> 3×H×W float image in [0, 1]`` (optional, for TensorBoard).
    - ``before_epoch(epoch)`` (optional): runs before each epoch, also after a resume, so
      epoch-dependent state (like a backbone frozen for the first epochs) is a function of the epoch.
    - ``dynamic_loss_weights(history)`` (optional): per-epoch loss weights computed from the
      history of earlier epochs (e.g. balancing terms by their running averages), or weights a task
      derived once (segmentation's defaults, kept out of the config); recorded as ``weight/<term>``.
    """

    model: nn.Module
    augment: Callable[[Batch], Batch]
    eval_augment: Callable[[Batch], Batch]
    forward: Callable[[nn.Module, Batch], dict[str, torch.Tensor]]
    losses: Callable[[dict[str, torch.Tensor], Batch], dict[str, torch.Tensor]]
    evaluate: Callable[[nn.Module, Iterable[Batch], torch.device], dict[str, float]]
    visualize: Callable[[nn.Module, Batch], torch.Tensor] | None = None
    generators: list[torch.Generator] = field(default_factory=list)  # reseeded every epoch, the same on every rank
    rank_generators: list[torch.Generator] = field(default_factory=list)  # reseeded every epoch, per rank (augment)
    before_epoch: Callable[[int], None] | None = None  # called with the 0-based epoch (e.g. staged freezing)
    dynamic_loss_weights: Callable[[list[dict]], dict[str, float]] | None = None  # from the history (balancing)


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for ``train.amp``: ``none`` (disabled), ``bf16``, ``fp16`` or ``auto`` (``precision.py``)."""
    amp = resolve_amp(amp, device)
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    if amp not in ("bf16", "fp16"):
        raise ConfigError(f"train.amp={amp!r}; choose 'none', 'bf16', 'fp16' or 'auto'")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The sum of the loss terms, each times its weight (1 where ``weights`` does not name it), in fp32."""
    unknown = sorted(set(weights) - set(terms))
    if unknown:
        raise ConfigError(f"train.loss_weights names {unknown}, but this task's loss terms are {sorted(terms)}")
    return sum(weights.get(name, 1.0) * value.float() for name, value in terms.items())


def _check_finite(finite: torch.Tensor, state: TrainState, last_terms: dict[str, torch.Tensor]) -> None:
    if not bool(finite):
        values = ", ".join(f"{name}={value.item():.4g}" for name, value in last_terms.items())
        raise NonFiniteLossError(
            f"non-finite training loss at epoch {state.epoch + 1}, step {state.step} ({values}); stopping. "
            "The last good checkpoint on disk is unchanged; lower the learning rate or enable grad clipping.")


def train_one_epoch(spec: LoopSpec, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                    state: TrainState, cfg: Config, device: torch.device, writer=None,
                    weights: dict[str, float] | None = None, model: nn.Module | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of every (unweighted) loss term (over all ranks).

    ``weights`` multiply the terms (default ``train.loss_weights``; 1 for unnamed terms).
    ``model``: what runs the steps (``spec.model`` wrapped in DDP / ``torch.compile``; default
    ``spec.model``). Host syncs only at log intervals.
    """
    weights = cfg.train.loss_weights if weights is None else weights
    model = spec.model if model is None else model
    model.train()
    sums: dict[str, torch.Tensor] = {}
    finite = torch.ones((), dtype=torch.bool, device=device)
    steps = 0
    terms: dict[str, torch.Tensor] = {}
    progress = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True,
                    disable=None if current().is_main and progress_wanted() else True)  # None: bars on a terminal only
    for batch in progress:
        batch = spec.augment(to_device(batch, device))
        if cfg.train.channels_last:  # the model's weights are channels_last too (the trainers convert them)
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.train.amp):
            outputs = spec.forward(model, batch)
            terms = spec.losses(outputs, batch)
        total = weighted_total(terms, weights)
        terms = {**{name: value.detach().float() for name, value in terms.items()}, "total": total.detach()}
        finite &= torch.isfinite(total.detach())
        optimizer_step(total, optimizer, scaler=scaler, grad_clip=cfg.optim.grad_clip, parameters=model.parameters())
        scheduler.step()
        state.step += 1
        steps += 1
        for name, value in terms.items():
            sums[name] = sums.get(name, torch.zeros((), device=device)) + value
        if state.step % cfg.train.log_every == 0:
            finite = all_ranks_true(finite)  # a NaN on any rank stops every rank at the same step
            _check_finite(finite, state, terms)
            scalars = {name: value.item() for name, value in terms.items()}
            progress.set_postfix({name: f"{value:.4f}" for name, value in scalars.items()})
            if writer is not None:
                for name, value in scalars.items():
                    writer.add_scalar(f"train/{name}", value, state.step)
                for group in optimizer.param_groups:
                    writer.add_scalar(f"lr/{group.get('name', 'all')}", group["lr"], state.step)
        if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
            break
    _check_finite(all_ranks_true(finite), state, terms)
    return all_reduce_mean({name: (value / max(steps, 1)).item() for name, value in sums.items()}, device)


@torch.inference_mode()
def predict_batches(model: nn.Module, loader: Iterable[Batch], device: torch.device,
                    preprocess: Callable[[Batch], Batch], forward: Callable[[nn.Module, Batch], dict],
                    amp: str = "none", desc: str = "eval") -> Iterable[tuple[Batch, dict[str, torch.Tensor]]]:
    """Yield ``(batch, outputs)`` over ``loader`` with the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True,
                          disable=None if progress_wanted() else True):
            batch = preprocess(to_device(batch, device))
            with autocast(device, amp):
                outputs = forward(model, batch)
            yield batch, outputs
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- fit


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def fit(cfg: Config, spec: LoopSpec, train_loader: DataLoader, val_loader: DataLoader | None, *,
        device: torch.device, resume: str | Path | None = None) -> TrainState:
    """Train ``spec.model`` for ``cfg.train.epochs`` epochs in ``cfg.run_dir``; see the module docstring.

    The run directory is claimed for the whole run (``claim_run_directory``): a fresh run refuses a
    folder that holds checkpoints (the CLI's ``--overwrite`` claims it first to replace them).
    """
    with claim_for_training(cfg.run_dir, resume):
        return _fit(cfg, spec, train_loader, val_loader, device=device, resume=resume)


@contextmanager
def claim_for_training(run_dir: str | Path, resume: str | Path | None = None, *, cfg: Config | None = None):
    """``claim_run_directory`` as ``fit`` takes it: continuing this run's own checkpoint may write over its
    files; a checkpoint from elsewhere starts a new run, which refuses a folder holding checkpoints. A task
    that writes into the run directory before ``fit`` (derived values, cached statistics) claims it first
    with this and its ``cfg``, so a refused run or a refused resume (``check_resume``) leaves a finished
    one untouched."""
    if cfg is not None:
        check_resume(cfg, resume)
    resume_here = resume is not None and run_directory(resume) == Path(run_dir).resolve()
    with claim_run_directory(run_dir, resume=resume_here) as lock:
        yield lock


def _resume_checkpoint(cfg: Config, resume: str | Path, device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """The checkpoint ``resume`` and the settings ``cfg`` changes (``resume_changes``, which refuses the others)."""
    checkpoint = load_checkpoint(resume, map_location=device)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict) or "epoch" not in checkpoint:
        raise ConfigError(f"{resume} is not a checkpoint written by labelreg's training (no config and epoch "
                          "in it), so there is nothing to resume; start a new run from its weights with "
                          "model.init_from= instead")
    return checkpoint, resume_changes(checkpoint["config"], cfg)


def check_resume(cfg: Config, resume: str | Path | None) -> None:
    """Refuse a resume of ``cfg`` from ``resume`` (a checkpoint that is not a training one, settings it may not
    change, another task) before anything is written; nothing to check without ``resume``."""
    if resume is not None:
        _resume_checkpoint(cfg, resume)


def _fit(cfg: Config, spec: LoopSpec, train_loader: DataLoader, val_loader: DataLoader | None, *,
         device: torch.device, resume: str | Path | None = None) -> TrainState:
    main_process = current().is_main  # only rank 0 writes; every rank trains and evaluates
    run_dir = cfg.run_dir
    if cfg.train.best_mode not in ("max", "min"):
        raise ConfigError(f"train.best_mode={cfg.train.best_mode!r}; choose 'max' or 'min'")
    checkpoint, changes = None, {}
    if resume is not None:  # checked before anything is written: a refused resume leaves the run as it was
        checkpoint, changes = _resume_checkpoint(cfg, resume, device)

    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    optimizer = build_optimizer(cfg.optim, spec.model)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps)
    # fp16 gradients underflow on any device, so fp16 always trains with a loss scaler (as the bench's fp16 rows)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    if cfg.train.amp == "auto" and main_process:
        print(f"train.amp=auto: {resolve_amp('auto', device)} on this {device.type} (labelreg.engine.precision)")
    state = TrainState()

    if checkpoint is not None:
        spec.model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"] or not scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        else:  # saved by a disabled scaler (fp16 on CPU before it had one): start with a fresh scale
            print(f"{resume}: no loss-scaler state in the checkpoint; fp16 continues with a fresh scale")
        state = TrainState.from_checkpoint(checkpoint)
        restore_rng_state(checkpoint["rng"])
        print(f"resumed from {resume}: epoch {state.epoch}, step {state.step}")
    if main_process:  # the first write: every state is loaded, so a checkpoint that does not fit changed nothing
        mark_run_directory(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if checkpoint is not None:
        if main_process:
            notes = []
            if Path(resume).resolve() == (run_dir / "checkpoints" / "last.pt").resolve():
                notes = repair_run(run_dir, checkpoint)
            notes += [f"resumed at epoch {state.epoch} with {key} changed from {old!r} to {new!r}"
                      for key, (old, new) in changes.items()]
            for note in notes:
                print(note)
            if notes:
                with open(run_dir / "train.log", "a") as log:
                    log.write("".join(f"{note}\n" for note in notes))
        del checkpoint

    if device.type == "cuda":  # fixed training shapes: let cuDNN pick its fastest kernels; TF32 matmuls
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    # the optimizer holds spec.model's parameters, which DDP and torch.compile share
    train_model = wrap_model(spec.model, device, sync_bn=cfg.train.sync_bn,
                             find_unused_parameters=cfg.train.find_unused_parameters)
    if cfg.train.compile:
        train_model = torch.compile(train_model)
    # events after the resumed step are from epochs the checkpoint never committed: TensorBoard drops them. The
    # resumed epoch's own validation scalars were logged at state.step itself, so they stay (purge_step is inclusive)
    writer = (SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=state.step + 1 if state.step else None)
              if main_process else None)
    try:
        while state.epoch < cfg.train.epochs:
            if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
                break
            for generator in [train_loader.generator, *spec.generators]:  # batch order: the same on every rank
                if generator is not None:
                    generator.manual_seed(epoch_seed(cfg.train.seed, state.epoch))
            for generator in spec.rank_generators:  # augmentation: each rank its own reproducible stream
                generator.manual_seed(epoch_seed(cfg.train.seed, state.epoch, current().rank))
            if spec.before_epoch is not None:
                spec.before_epoch(state.epoch)
            scheduler.set_epoch(state.epoch)
            set_loader_epoch(train_loader, state.epoch)
            weights = dict(cfg.train.loss_weights)
            if spec.dynamic_loss_weights is not None:
                weights.update(spec.dynamic_loss_weights(state.history))
            started = time.perf_counter()
            train_means = train_one_epoch(spec, train_loader, optimizer, scheduler, scaler, state, cfg, device, writer,
                                          weights, model=train_model)
            state.epoch += 1
            entry: dict[str, float] = {"epoch": state.epoch, "step": state.step,
                                       "seconds": round(time.perf_counter() - started, 2),
                                       **{f"train/{name}": value for name, value in train_means.items()}}
            if spec.dynamic_loss_weights is not None:  # the balancing is part of the record
                entry.update({f"weight/{name}": value for name, value in weights.items()})
            last_epoch = state.epoch == cfg.train.epochs or (
                cfg.train.max_steps is not None and state.step >= cfg.train.max_steps)
            improved = False
            if val_loader is not None and (state.epoch % cfg.train.eval_every == 0 or last_epoch):
                metrics = spec.evaluate(spec.model, val_loader, device)
                entry.update({f"val/{name}": value for name, value in metrics.items() if isinstance(value, (int, float))})
                for name, value in metrics.items():
                    if isinstance(value, (int, float)) and writer is not None:
                        writer.add_scalar(f"val/{name}", value, state.step)
                if cfg.train.best_metric not in metrics:
                    raise ConfigError(f"train.best_metric={cfg.train.best_metric!r} is not among the evaluation "
                                      f"metrics {sorted(metrics)}")
                if _is_better(metrics[cfg.train.best_metric], state.best_value, cfg.train.best_mode):
                    state.best_value, state.best_epoch, improved = metrics[cfg.train.best_metric], state.epoch, True
                if spec.visualize is not None and writer is not None and cfg.train.images_to_log > 0:
                    sample = next(iter(val_loader))
                    with torch.inference_mode():
                        spec.model.eval()
                        image = spec.visualize(spec.model, spec.eval_augment(to_device(sample, device)))
                        spec.model.train()
                    writer.add_image("val/examples", image, state.step)
            state.history.append(entry)
            if not main_process:
                continue
            writer.flush()  # the epoch's events reach the file before its commit, so a kill after it loses none
            payload = checkpoint_payload(spec.model, optimizer, scheduler, scaler, state, cfg, entry)
            # last.pt is the commit point; best.pt, metrics.json and the log line follow it (repair_run fixes a
            # crash in between)
            save_checkpoint(run_dir / "checkpoints" / "last.pt", payload)
            if improved:
                save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)
            write_metrics_json(run_dir, state, cfg)
            line = epoch_log_line(cfg.name, entry, cfg.train.epochs)
            tqdm.write(line)
            with open(run_dir / "train.log", "a") as log:
                log.write(line + "\n")
    finally:
        if writer is not None:
            writer.close()
    barrier()  # nobody reads the checkpoints before rank 0 has written them
    return state
