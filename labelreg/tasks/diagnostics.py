"""How the label-structure regularizer acts on a segmenter: measurements, never used for any choice.

With ``regularizer.diagnostics: true`` a regularized ``train-seg`` run writes ``<run>/diagnostics.json``:

- **gradients at the backbone**, on one fixed batch (the first ``DIAGNOSTIC_BATCH`` training images,
  evaluation preprocessing, no augmentation): the norm of the weighted auxiliary term's gradient over
  the primary terms' (``grad_ratio``) and the cosine between the two (``grad_cosine``), before the first
  step (``step0``), at the epoch boundary nearest 10% of training (``frac10``) and after the last epoch
  (``end``). The primary terms are everything but ``aux`` (``ce``, PSPNet's ``psp_aux``), each times its
  weight; the auxiliary term is ``aux`` times its weight (CE × 0.5, thesis §5.4.2).
- **code agreement** on the evaluation split (``data.val_split``, the study's scored split), after
  training: the cosine over channels between the predicted decoder input (``aux_code``) and the phase-one
  encoder's code of the ground truth, averaged over code cells (``code_cosine``), and the fraction of
  negative entries in the predicted code (``code_negative_fraction``; the encoder's code ends in a ReLU, so
  it has none — ``encoder_code_negative_fraction`` says so). Only for the decoder branch with a phase-one
  decoder: a random-init decoder has no phase-one encoder, and the encoder regularizer (Fig. 5.4) predicts
  encoder activations, not a code. Under torchrun rank 0 measures, on its own share of the batch and split.

Measuring changes nothing in training: it runs on a copy of the model (so BatchNorm statistics stay) and
puts every random generator back as it found it (dropout and the loader's seed draw from them), so a run
with diagnostics takes exactly the steps of one without.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from labelreg.data.loader import Batch, make_loader, to_device
from labelreg.engine.checkpoint import capture_rng_state, restore_rng_state
from labelreg.models.autoencoder import DOWNSAMPLING, LabelEncoder, one_hot_labels
from labelreg.palette import IGNORE_INDEX
from labelreg.storage import write_json

DIAGNOSTICS_FILE = "diagnostics.json"
DIAGNOSTIC_BATCH = 4  # images in the fixed batch


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Every global random generator (torch, CUDA, numpy, random) as it was before the block."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def fixed_batch(train_set: Dataset, preprocess: Callable[[Batch], Batch], device: torch.device) -> Batch:
    """The first ``DIAGNOSTIC_BATCH`` training images, preprocessed as for evaluation (deterministic)."""
    with preserved_rng():
        loader = make_loader(Subset(train_set, range(min(DIAGNOSTIC_BATCH, len(train_set)))),
                             batch_size=DIAGNOSTIC_BATCH, shuffle=False, num_workers=0)
        return preprocess(to_device(next(iter(loader)), device))


def gradient_agreement(model: nn.Module, batch: Batch, losses: Callable[[dict, Batch], dict[str, torch.Tensor]],
                       weights: dict[str, float]) -> dict[str, float]:
    """Backbone gradients of the weighted auxiliary term vs the weighted primary terms, on a copy of ``model``.

    Returns ``ratio`` = ‖g_aux‖ / ‖g_main‖, ``cosine`` and both norms. The copy is in training mode (its
    frozen decoder stays in eval mode), every backbone parameter takes a gradient (also one frozen for the
    first epochs), and the global random generators are put back afterwards.
    """
    probe = copy.deepcopy(model).train()
    parameters = list(probe.backbone.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    with preserved_rng():
        terms = losses(probe(batch["image"]), batch)
    if "aux" not in terms:
        raise ValueError("gradient_agreement needs a regularized model (no 'aux' loss term)")
    main = sum(weights.get(name, 1.0) * value.float() for name, value in terms.items() if name != "aux")
    aux = weights.get("aux", 1.0) * terms["aux"].float()
    main_grad = _flat(torch.autograd.grad(main, parameters, retain_graph=True, allow_unused=True), parameters)
    aux_grad = _flat(torch.autograd.grad(aux, parameters, allow_unused=True), parameters)
    main_norm, aux_norm = float(main_grad.norm()), float(aux_grad.norm())
    cosine = float(torch.dot(main_grad, aux_grad) / (main_norm * aux_norm)) if main_norm and aux_norm else math.nan
    return {"ratio": aux_norm / main_norm if main_norm else math.nan, "cosine": cosine,
            "main_norm": main_norm, "aux_norm": aux_norm}


def _flat(gradients, parameters) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().double()
                      for g, p in zip(gradients, parameters)])


@torch.no_grad()
def code_agreement(model: nn.Module, encoder: LabelEncoder, loader, preprocess: Callable[[Batch], Batch],
                   device: torch.device, num_classes: int) -> dict[str, float]:
    """Predicted decoder input vs the encoder's code of the ground truth, over every image of ``loader``.

    The labels are padded with ignore to a multiple of 16 (phase one's geometry: one code cell = 16×16
    pixels; ignored pixels are all-zero one-hot), so the encoder's code has the predicted code's
    ⌈H/16⌉×⌈W/16⌉ cells. Cosine per cell over channels, averaged over all cells; a cell where either code
    is all zero has cosine 0.
    """
    was_training = model.training
    model.eval()
    encoder = encoder.eval()
    cosine_sum = cells = negative = entries = encoder_negative = 0.0
    try:
        for batch in loader:
            batch = preprocess(to_device(batch, device))
            predicted = model(batch["image"])["aux_code"].float()
            label = batch["label"]
            height, width = label.shape[-2:]
            padded = F.pad(label, (0, -width % DOWNSAMPLING, 0, -height % DOWNSAMPLING), value=IGNORE_INDEX)
            target = encoder(one_hot_labels(padded, num_classes).to(predicted.dtype)).float()
            if target.shape != predicted.shape:
                raise ValueError(f"predicted code {tuple(predicted.shape)} and encoder code {tuple(target.shape)} "
                                 "differ in shape")
            cosine_sum += float(F.cosine_similarity(predicted, target, dim=1).sum())
            cells += predicted.shape[0] * predicted.shape[-2] * predicted.shape[-1]
            negative += float((predicted < 0).sum())
            encoder_negative += float((target < 0).sum())
            entries += predicted.numel()
    finally:
        model.train(was_training)
    return {"code_cosine": cosine_sum / cells, "code_negative_fraction": negative / entries,
            "encoder_code_negative_fraction": encoder_negative / entries}


def checkpoint_epochs(epochs: int) -> dict[str, int]:
    """When the gradients are measured: before epoch 0, at the epoch boundary nearest 10% of training
    (at least after one epoch, when there are two or more), and after the last epoch."""
    return {"step0": 0, "frac10": min(max(1, round(0.1 * epochs)), epochs), "end": epochs}


class DiagnosticsRecord:
    """``<run>/diagnostics.json``, filled in as training goes (a resumed run keeps what was measured)."""

    def __init__(self, run_dir: str | Path, epochs: int, *, resume: bool) -> None:
        self.path = Path(run_dir) / DIAGNOSTICS_FILE
        self.epochs = checkpoint_epochs(epochs)
        self.record = {"batch_images": DIAGNOSTIC_BATCH, "epochs": self.epochs,
                       "grad_ratio": {}, "grad_cosine": {}, "grad_norms": {}}
        if resume and self.path.is_file():  # what the interrupted run measured before it stopped
            try:
                self.record = {**json.loads(self.path.read_text()), "epochs": self.epochs}
            except (OSError, ValueError) as error:
                raise RuntimeError(f"cannot read {self.path}: {error}; delete it to measure again") from error

    def due(self, epoch: int) -> list[str]:
        """The measurements due at this epoch boundary and not yet taken."""
        return [name for name, at in self.epochs.items() if at == epoch and name not in self.record["grad_ratio"]]

    def add_gradients(self, name: str, measured: dict[str, float]) -> None:
        self.record["grad_ratio"][name] = measured["ratio"]
        self.record["grad_cosine"][name] = measured["cosine"]
        self.record["grad_norms"][name] = {"main": measured["main_norm"], "aux": measured["aux_norm"]}
        write_json(self.path, self.record)

    def add(self, values: dict[str, float]) -> None:
        self.record.update(values)
        write_json(self.path, self.record)


def with_diagnostics(spec, record: DiagnosticsRecord, batch: Batch, weights: dict[str, float]):
    """``spec`` whose ``before_epoch`` also measures the gradients due at that epoch (after its own work,
    so a backbone unfrozen at this epoch is measured as it trains)."""
    own = spec.before_epoch

    def before_epoch(epoch: int) -> None:
        if own is not None:
            own(epoch)
        for name in record.due(epoch):
            record.add_gradients(name, gradient_agreement(spec.model, batch, spec.losses, weights))

    return dataclasses.replace(spec, before_epoch=before_epoch)


def finish_diagnostics(spec, record: DiagnosticsRecord, batch: Batch, weights: dict[str, float], epochs_done: int,
                       encoder: LabelEncoder | None, loader, device: torch.device, num_classes: int) -> dict:
    """After training: the gradients still due (``end``, and ``frac10`` of a one-epoch run), then the code
    agreement on ``loader`` (skipped without a phase-one ``encoder``)."""
    for name, at in record.epochs.items():
        if name == "end" or (at <= epochs_done and name not in record.record["grad_ratio"]):
            record.add_gradients(name, gradient_agreement(spec.model, batch, spec.losses, weights))
    if encoder is not None:
        with preserved_rng():
            record.add(code_agreement(spec.model, encoder, loader, spec.eval_augment, device, num_classes))
    return record.record
