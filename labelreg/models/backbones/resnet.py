"""ResNet-50/101 as zoom-out backbones, optionally dilated (thesis §3.5, §3.5.1, Table 3.9).

Taps are the stem and the end of each of the four stages. Dilation follows
torchvision's ``replace_stride_with_dilation``: output stride 16 dilates stage 4,
output stride 8 dilates stages 3 and 4 (what PSPNet and the "zoom-out dilated
ResNet" use). The stages keep torchvision's module names (``conv1``, ``bn1``,
``layer1`` … ``layer4``) directly on the backbone, so a torchvision ResNet state
dict loads as is; only the 1000-way ``fc`` is dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

# Importing anything under labelreg has already run labelreg/__init__, which makes torchvision importable.
from labelreg.models.backbones.common import Backbone, freeze_batchnorm
from torchvision.models import resnet101 as _tv_resnet101
from torchvision.models import resnet50 as _tv_resnet50

__all__ = ["ResNetBackbone", "resnet50_backbone", "resnet101_backbone", "RESNET_BACKBONES"]

# output stride → torchvision's replace_stride_with_dilation for (layer2, layer3, layer4)
_DILATION: dict[int, list[bool]] = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _first_block_stride(layer: nn.Sequential) -> int:
    """Spatial stride of a stage: that of its first block's strided convolution (1 once dilated)."""
    return max(m.stride[0] for m in layer[0].modules() if isinstance(m, nn.Conv2d))


def _out_channels(layer: nn.Sequential) -> int:
    """Output width of a stage: the last convolution of its last block."""
    convs = [m for m in layer[-1].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class ResNetBackbone(Backbone):
    """A torchvision ResNet with taps ``stem``, ``layer1`` … ``layer4``.

    Shapes for a B×3×H×W input with a Bottleneck ResNet (50/101):

    - ``stem``: B×64×⌈H/2⌉×⌈W/2⌉ (after conv1, bn1, ReLU; before the max pool)
    - ``layer1``: B×256 at stride 4, ``layer2``: B×512 at stride 8,
    - ``layer3``: B×1024 at stride 16 (8 when the output stride is 8),
    - ``layer4``: B×2048 at stride 32, 16 or 8 (the output stride).

    Every convolution pads, so sizes are ``⌈H/s⌉`` (97×129 → 49×65, 25×33, 13×17, 7×9, 4×5).
    ``global_feature`` is the global average of ``layer4`` (B×2048), what fc would see.

    Args:
        resnet: a ``torchvision.models.ResNet``; its ``fc`` is discarded. Strides and
            widths are read off its modules, so a dilated model reports its own strides.
    """

    ignored_pretrained_prefixes = ("fc.",)

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        # Same attribute names as torchvision's ResNet so its state dict keys match.
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

        self.tap_channels = {"stem": self.conv1.out_channels}
        self.tap_strides = {"stem": self.conv1.stride[0]}
        stride = self.conv1.stride[0] * 2  # the 3×3 stride-2 max pool
        for name in _STAGES:
            layer = getattr(self, name)
            stride *= _first_block_stride(layer)
            self.tap_channels[name] = _out_channels(layer)
            self.tap_strides[name] = stride
        self.global_channels = self.tap_channels["layer4"]

    @property
    def output_stride(self) -> int:
        return self.tap_strides["layer4"]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×H×W → {stem, layer1, layer2, layer3, layer4} (see the class docstring for shapes)."""
        x = self.relu(self.bn1(self.conv1(x)))
        taps = {"stem": x}
        x = self.maxpool(x)
        for name in _STAGES:
            x = getattr(self, name)(x)
            taps[name] = x
        return taps


def _resnet_backbone(builder: Callable[..., nn.Module], *, output_stride: int,
                     pretrained: str | Path | Mapping[str, Any] | None, freeze_bn: bool) -> ResNetBackbone:
    if output_stride not in _DILATION:
        raise ValueError(f"output_stride must be one of {sorted(_DILATION)}, got {output_stride}")
    dilation = _DILATION[output_stride]
    if isinstance(pretrained, str) and pretrained == "imagenet":
        model = ResNetBackbone(builder(weights="IMAGENET1K_V1", replace_stride_with_dilation=dilation))
    else:
        model = ResNetBackbone(builder(weights=None, replace_stride_with_dilation=dilation))
        if pretrained is not None:
            # Dilation changes no parameter shapes, so undilated checkpoints load into dilated models.
            model.load_pretrained(pretrained)
    if freeze_bn:
        freeze_batchnorm(model)
    return model


def resnet50_backbone(*, output_stride: int = 32, pretrained: str | Path | Mapping[str, Any] | None = None,
                      freeze_bn: bool = False) -> ResNetBackbone:
    """ResNet-50 zoom-out backbone.

    Args:
        output_stride: 32 (plain), 16 (layer4 dilated) or 8 (layer3 and layer4 dilated).
        pretrained: ``None``, ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, may
            download), or a local .pth path / state dict in torchvision's ResNet-50 layout.
        freeze_bn: replace every BatchNorm2d by FrozenBatchNorm2d (after loading weights).
    """
    return _resnet_backbone(_tv_resnet50, output_stride=output_stride, pretrained=pretrained, freeze_bn=freeze_bn)


def resnet101_backbone(*, output_stride: int = 32, pretrained: str | Path | Mapping[str, Any] | None = None,
                       freeze_bn: bool = False) -> ResNetBackbone:
    """ResNet-101 zoom-out backbone; arguments as :func:`resnet50_backbone`."""
    return _resnet_backbone(_tv_resnet101, output_stride=output_stride, pretrained=pretrained, freeze_bn=freeze_bn)


RESNET_BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet50": resnet50_backbone,
    "resnet101": resnet101_backbone,
}
