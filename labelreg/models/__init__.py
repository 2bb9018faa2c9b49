"""Models. Builders are keyword-only functions in plain dicts; every segmenter returns
``{"seg": B×C×H×W logits at input size, "features": {named taps…}}``.

``build_segmenter(name, *, num_classes, pretrained_backbone=None, **options)`` builds any
name in ``MODELS``; ``options`` are the builder's keywords (head sizes, taps, grid,
output stride, ``backbone_options`` for the backbone builder…). It also builds torchvision's
segmenters as ``tv:<name>`` (``TORCHVISION_SEGMENTERS``; see ``tvseg``), kept out of ``MODELS``.

``regularize(segmenter, autoencoder)`` adds the phase-two regularizer to any ``nn.Module`` (``dropin``).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

from torch import nn

from labelreg.models.autoencoder import (AE_VARIANTS, LabelAutoencoder, LabelDecoder, LabelEncoder,
                                         label_autoencoder, one_hot_labels)
from labelreg.models.backbones import BACKBONES, build_backbone
from labelreg.models.dropin import RegularizedSegmenter, regularize
from labelreg.models.dsunet import DilatedSUNet
from labelreg.models.fcn import FCN8s
from labelreg.models.pspnet import PSPNet
from labelreg.models.tvseg import TORCHVISION_SEGMENTERS, TV_PREFIX, build_torchvision_segmenter
from labelreg.models.zoomout import ZoomOutHead, ZoomOutSegmenter


def zoomout(*, backbone: str, num_classes: int, pretrained_backbone: Any = None, freeze_bn: bool = False,
            output_stride: int | None = None, backbone_options: dict | None = None, taps: list[str] | None = None,
            grid_stride: int = 4, scene: bool = False, pyramid_pooling: bool = False, hidden: int = 1000,
            dropout: float = 0.0, normalize: bool = False) -> ZoomOutSegmenter:
    """Zoom-out segmenter over ``backbone`` (``output_stride`` for dilated ResNets/SUNets)."""
    options = dict(backbone_options or {})
    if output_stride is not None:
        options["output_stride"] = output_stride
    net = build_backbone(backbone, pretrained=pretrained_backbone, freeze_bn=freeze_bn, **options)
    if not scene:
        net.drop_global_feature()  # e.g. VGG's fc6/fc7 would otherwise sit there without gradients
    return ZoomOutSegmenter(net, num_classes, taps=taps, grid_stride=grid_stride, scene=scene,
                            pyramid_pooling=pyramid_pooling, hidden=hidden, dropout=dropout, normalize=normalize)


def pspnet(*, backbone: str, num_classes: int, pretrained_backbone: Any = None, freeze_bn: bool = False,
           output_stride: int = 8, aux: bool = True, bins: tuple[int, ...] = (1, 2, 3, 6), head_width: int = 512,
           dropout: float = 0.1) -> PSPNet:
    """PSPNet on a dilated ResNet (output stride 8 by default)."""
    net = build_backbone(backbone, pretrained=pretrained_backbone, freeze_bn=freeze_bn, output_stride=output_stride)
    return PSPNet(net, num_classes, bins=tuple(bins), head_width=head_width, aux=aux, dropout=dropout)


def fcn8s_vgg16(*, num_classes: int, pretrained_backbone: Any = None, freeze_bn: bool = False,
                dropout: float = 0.5) -> FCN8s:
    return FCN8s(build_backbone("vgg16", pretrained=pretrained_backbone, freeze_bn=freeze_bn), num_classes,
                 dropout=dropout)


def dsunet(*, backbone: str, num_classes: int, pretrained_backbone: Any = None, freeze_bn: bool = False,
           output_stride: int = 8, degridding: bool = False) -> DilatedSUNet:
    """Dilated SUNet + 1×1 classifier (or the de-gridding head)."""
    net = build_backbone(backbone, pretrained=pretrained_backbone, freeze_bn=freeze_bn, output_stride=output_stride)
    return DilatedSUNet(net, num_classes, degridding=degridding)


MODELS: dict[str, Callable[..., nn.Module]] = {
    **{f"zoomout_{name}": partial(zoomout, backbone=name)
       for name in ("vgg16", "densenet67", "densenet121", "densenet161", "densenet201", "resnet50", "resnet101",
                    "sunet64", "sunet128", "sunet7128")},
    "pspnet_resnet50": partial(pspnet, backbone="resnet50"),
    "pspnet_resnet101": partial(pspnet, backbone="resnet101"),
    "fcn8s_vgg16": fcn8s_vgg16,
    "dsunet64": partial(dsunet, backbone="sunet64"),
    "dsunet128": partial(dsunet, backbone="sunet128"),
    "dsunet7128": partial(dsunet, backbone="sunet7128"),
}


def build_segmenter(name: str, *, num_classes: int, pretrained_backbone: Any = None, **options: Any) -> nn.Module:
    if name.startswith(TV_PREFIX):
        return build_torchvision_segmenter(name, num_classes=num_classes, pretrained_backbone=pretrained_backbone,
                                           **options)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))} and torchvision's "
                         f"{', '.join(TV_PREFIX + n for n in TORCHVISION_SEGMENTERS)}")
    return MODELS[name](num_classes=num_classes, pretrained_backbone=pretrained_backbone, **options)


__all__ = [
    "AE_VARIANTS", "BACKBONES", "DilatedSUNet", "FCN8s", "LabelAutoencoder", "LabelDecoder", "LabelEncoder",
    "MODELS", "PSPNet", "RegularizedSegmenter", "TORCHVISION_SEGMENTERS", "ZoomOutHead", "ZoomOutSegmenter",
    "build_backbone", "build_segmenter", "label_autoencoder", "one_hot_labels", "regularize",
]
