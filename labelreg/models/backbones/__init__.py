"""Backbones with named multi-scale taps (see ``common.Backbone``), by name."""
from typing import Any, Callable

from labelreg.models.backbones.common import Backbone, freeze_batchnorm
from labelreg.models.backbones.densenet import DENSENET_BACKBONES
from labelreg.models.backbones.resnet import RESNET_BACKBONES
from labelreg.models.backbones.sunet import SUNET_BACKBONES, SUNET_CLASSIFIERS, DegriddingHead
from labelreg.models.backbones.vgg import VGG_BACKBONES

BACKBONES: dict[str, Callable[..., Backbone]] = {
    **VGG_BACKBONES, **DENSENET_BACKBONES, **RESNET_BACKBONES, **SUNET_BACKBONES,
}


def build_backbone(name: str, *, pretrained: Any = None, freeze_bn: bool = False, **options: Any) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](pretrained=pretrained, freeze_bn=freeze_bn, **options)


__all__ = ["BACKBONES", "Backbone", "DegriddingHead", "SUNET_CLASSIFIERS", "build_backbone", "freeze_batchnorm"]
