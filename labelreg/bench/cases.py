"""What the benchmark runs: a ``Case`` per table row, its model, its random batch, and the trainer's loss.

Models: any name in ``labelreg.models.MODELS`` (``Case.options`` go to its builder) and torchvision's
reference segmenters as ``tv:fcn_resnet50``, ``tv:deeplabv3_resnet50``, ``tv:deeplabv3_resnet101`` …
(``tvseg.build_torchvision_reference``: ``weights=None, weights_backbone=None, aux_loss=False``; never
downloaded). Loss and optimizer are the segmentation trainer's (``tasks.segmentation.make_losses`` weighted
by ``default_loss_weights``; ``engine.build_optimizer``): cross-entropy, plus ``0.4 ·`` PSPNet's auxiliary
head's cross-entropy for PSPNets, plus ``0.5 ·`` the auxiliary cross-entropy through the frozen decoder of a
randomly initialised ``LabelAutoencoder`` (variant 128) when the regularizer is on (``DecoderRegularized``,
thesis §5.3.3; with ``dropin``, the forward-hook wrapper that ``train-seg`` puts around torchvision's models,
tapped at ``tvseg.TV_TAPS``).

``PRESETS`` are the predefined comparisons: the zoom-out vs dilated cost claim (thesis §3.5.1) and the
regularizer's training-step overhead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Callable, Iterable

import torch
from torch import nn

from labelreg.cli_args import BENCH_PRECISIONS
from labelreg.config import Config, OptimConfig, RegularizerConfig
from labelreg.engine import weighted_total
from labelreg.models import build_segmenter
from labelreg.models.autoencoder import LabelAutoencoder
from labelreg.models.dropin import RegularizedOutputs
from labelreg.models.regularizer import DecoderRegularized
from labelreg.models.tvseg import TV_PREFIX, TV_TAPS, build_torchvision_reference
from labelreg.tasks.segmentation import default_loss_weights, make_losses

PRECISIONS = BENCH_PRECISIONS  # fp32, bf16, fp16: defined with the --precision choices (labelreg.cli_args)
AE_VARIANT = "128"

PRESETS: dict[str, dict[str, Any]] = {
    # Thesis §3.5.1's cost claim: zoom-out ResNet-101 (output stride 32, grid 1/4, 1000 hidden) vs dilated
    # (OS 8) ResNet-101.
    "zoomout-vs-dilated": {"models": ["zoomout_resnet101", "tv:deeplabv3_resnet101"], "batches": [2],
                           "sizes": [(256, 256)], "num_classes": 21, "regularizer": [False]},
    # The regularizer's cost target: at most 10% of the training step (OVERHEAD_TARGET_PCT).
    "regularizer-overhead": {"models": ["zoomout_densenet121", "zoomout_resnet101"], "batches": [2],
                             "sizes": [(256, 256)], "num_classes": 21, "regularizer": [False, True]},
}
TIME_RATIO_TARGET = 0.5
OVERHEAD_TARGET_PCT = 10.0


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


def build_model(case: Case) -> nn.Module:
    """The segmenter of ``case``, wrapped in ``DecoderRegularized`` when its regularizer is on.

    ``case.dropin``: what ``train-seg`` trains instead: torchvision's models as ``tvseg.TorchvisionSegmenter``
    (torchvision's own forward, so LR-ASPP too), and regularized rows through the drop-in wrapper
    ``dropin.RegularizedOutputs``, tapped at ``TV_TAPS`` (other models: their deepest 1/16 module)."""
    torchvision_name = case.model[len(TV_PREFIX):] if case.model.startswith(TV_PREFIX) else None
    if case.dropin:
        if case.aux_crop:
            raise ValueError("--aux-crop is not available with --dropin")
        options = {} if torchvision_name else case.options
        model = build_segmenter(case.model, num_classes=case.num_classes, **options)
        if not case.regularizer:
            return model
        return RegularizedOutputs(model, LabelAutoencoder(case.num_classes, AE_VARIANT),
                                  tap=TV_TAPS.get(torchvision_name) if torchvision_name else None)
    if torchvision_name:
        model = build_torchvision_reference(torchvision_name, case.num_classes)
    else:
        model = build_segmenter(case.model, num_classes=case.num_classes, **case.options)
    if case.regularizer:
        model = DecoderRegularized(model, LabelAutoencoder(case.num_classes, AE_VARIANT), frozen=True,
                                   aux_crop=case.aux_crop)
    return model


def random_batch(case: Case, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random image batch and label batch (``case.seed``), on ``device`` (channels_last if asked)."""
    generator = torch.Generator().manual_seed(case.seed)
    image = torch.randn(case.batch, 3, *case.size, generator=generator)
    label = torch.randint(0, case.num_classes, (case.batch, *case.size), generator=generator)
    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
    return image.to(device).contiguous(memory_format=memory_format), label.to(device)


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
