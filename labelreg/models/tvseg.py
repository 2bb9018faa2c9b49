"""torchvision's segmentation models as ``labelreg train-seg`` segmenters (``model.name: tv:<name>``).

``TorchvisionSegmenter`` runs torchvision's own forward and renames its outputs to labelreg's
convention: ``out`` → ``seg``; FCN's/DeepLabV3's auxiliary classifier (``aux_loss``, an FCN head on
ResNet ``layer3``) → ``psp_aux_seg``, the trainer's term for the same idea in PSPNet (a second
classifier on stage 3), weighted 0.5 by default as in torchvision's reference training script
(PSPNet's is 0.4). The adapter holds torchvision's submodules directly, so its state dict has
torchvision's keys: an exported checkpoint loads strictly into
``torchvision.models.segmentation.<name>(num_classes=…, aux_loss=…)``.

The phase-two regularizer wraps these with ``dropin.RegularizedOutputs`` (forward hook on
``TV_TAPS[name]``): DeepLabV3 reads its ASPP output ``classifier.0`` and FCN its deepest backbone
stage ``backbone.layer4`` (both output stride 8, resized to the decoder's 1/16 input, as PSPNet's
pyramid pooling in §5.4.2); LR-ASPP's default tap is the deepest module at 1/16 (``classifier.cbr``).

``TorchvisionReference`` (``build_torchvision_reference``) is the benchmark's reference form of the dilated
models (``labelreg bench``, thesis §3.5.1's cost comparison): the backbone's output exposed as
``features["out"]`` for ``DecoderRegularized``, no auxiliary classifier.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

# Importing anything under labelreg has already run labelreg/__init__, which makes torchvision importable.
from labelreg.models.backbones.common import freeze_batchnorm, load_checked, read_state_dict
from torchvision.models import segmentation

TV_PREFIX = "tv:"
TORCHVISION_SEGMENTERS = ("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
                          "fcn_resnet50", "fcn_resnet101", "lraspp_mobilenet_v3_large")
# the regularizer's tap per model when regularizer.tap is null (None: the deepest module at 1/16)
TV_TAPS: dict[str, str | None] = {
    "deeplabv3_resnet50": "classifier.0", "deeplabv3_resnet101": "classifier.0",
    "deeplabv3_mobilenet_v3_large": "classifier.0",
    "fcn_resnet50": "backbone.layer4", "fcn_resnet101": "backbone.layer4",
    "lraspp_mobilenet_v3_large": None,
}
AUX_HEAD_WEIGHT = 0.5  # torchvision references/segmentation/train.py: losses["out"] + 0.5 * losses["aux"]


def is_torchvision_name(name: str) -> bool:
    return name.startswith(TV_PREFIX)


class TorchvisionSegmenter(nn.Module):
    """``forward(x)`` → ``{"seg": logits at input size, "features": {}}`` (+ ``psp_aux_seg`` with ``aux_loss``)."""

    aux_head_weight = AUX_HEAD_WEIGHT

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.architecture = type(model)  # whose forward runs on these very submodules
        for name, child in model.named_children():
            self.add_module(name, child)
        if "aux_classifier" not in self._modules:
            self.aux_classifier = None  # what _SimpleSegmentationModel.forward checks

    def forward(self, x: torch.Tensor) -> dict:
        result = self.architecture.forward(self, x)
        outputs = {"seg": result["out"], "features": {}}
        if "aux" in result:
            outputs["psp_aux_seg"] = result["aux"]
        return outputs

    @property
    def aux_head(self) -> nn.Module | None:
        return self.aux_classifier

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        return {"backbone": backbone, "head": [p for p in self.parameters() if id(p) not in ids]}


def load_backbone_file(model: nn.Module, name: str, source: str | Path | Mapping[str, Any]) -> None:
    """Load a torchvision classification network's state dict (ResNet or MobileNetV3) into ``model.backbone``,
    strictly: only the classifier (``fc.`` / ``classifier.``) may be left over."""
    state, label = read_state_dict(source)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if "mobilenet" in name:  # the backbone is mobilenet_v3_large(...).features
        state = {key.removeprefix("features."): value for key, value in state.items()
                 if not key.startswith("classifier.")}
        ignored: tuple[str, ...] = ()
    else:
        ignored = ("fc.",)
    try:
        load_checked(model.backbone, state, ignore_prefixes=ignored)
    except ValueError as error:
        raise ValueError(f"{label}: {error}") from error


def build_torchvision_segmenter(name: str, *, num_classes: int, pretrained_backbone: Any = None,
                                freeze_bn: bool = False, **options: Any) -> TorchvisionSegmenter:
    """``torchvision.models.segmentation.<name>(weights=None, num_classes=…, **options)`` (``aux_loss`` is an
    option), backbone weights from ImageNet (``pretrained_backbone="imagenet"``: ``weights_backbone=
    "IMAGENET1K_V1"``, as our backbones) or a local file loaded strictly; ``freeze_bn`` as for our backbones."""
    name = name.removeprefix(TV_PREFIX)
    if name not in TORCHVISION_SEGMENTERS:
        raise ValueError(f"unknown torchvision segmenter tv:{name}; available: "
                         f"{', '.join(TV_PREFIX + n for n in TORCHVISION_SEGMENTERS)}")
    imagenet = isinstance(pretrained_backbone, str) and pretrained_backbone == "imagenet"
    if options.get("aux_loss") and name.startswith("lraspp"):
        raise ValueError(f"tv:{name} has no auxiliary classifier (aux_loss)")
    model = getattr(segmentation, name)(weights=None, weights_backbone="IMAGENET1K_V1" if imagenet else None,
                                        num_classes=num_classes, **options)
    if pretrained_backbone is not None and not imagenet:
        load_backbone_file(model, name, pretrained_backbone)
    if freeze_bn:
        freeze_batchnorm(model.backbone)
    return TorchvisionSegmenter(model)


class TorchvisionReference(nn.Module):
    """A torchvision segmentation model (``{"out": …}``) in labelreg's output convention, as the benchmark runs it.

    ``forward`` is torchvision's ``_SimpleSegmentationModel.forward`` without the auxiliary
    classifier, also returning the backbone's output as ``features["out"]`` so that the
    regularizer (``DecoderRegularized``) can read it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict:
        features = self.model.backbone(x)["out"]
        logits = F.interpolate(self.model.classifier(features), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)
        return {"seg": logits, "features": {"out": features}}


def build_torchvision_reference(name: str, num_classes: int) -> TorchvisionReference:
    """``torchvision.models.segmentation.<name>`` (any builder there, ``weights=None, weights_backbone=None,
    aux_loss=False``: never downloaded) as a ``TorchvisionReference``."""
    builder = getattr(segmentation, name, None)
    if builder is None or name.startswith("_") or not callable(builder):
        raise ValueError(f"unknown torchvision segmentation model {name!r} (e.g. tv:deeplabv3_resnet101)")
    return TorchvisionReference(builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))
