"""DenseNets as zoom-out backbones: torchvision's 121/161/201 and the thesis' DenseNet-67 (Figure 5.3).

Taps (thesis §3.5, Figure 3.8): the stem, and the end of every dense block *before* the
transition that follows it (the transition's 2×2 average pool is the
downsampling, so each block is tapped at its full resolution). The last block
has no transition; it is tapped after ``norm5`` + ReLU, the features torchvision's
classifier sees. All four nets keep torchvision's module names under
``features`` so state dicts in torchvision's layout load directly; the
1000-way ``classifier`` is dropped.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Importing anything under labelreg has already run labelreg/__init__, which makes torchvision importable.
from labelreg.models.backbones.common import Backbone, freeze_batchnorm
from torchvision.models import densenet121 as _tv_densenet121
from torchvision.models import densenet161 as _tv_densenet161
from torchvision.models import densenet201 as _tv_densenet201
from torchvision.models.densenet import _DenseBlock, _Transition

__all__ = [
    "DenseNetBackbone", "densenet67_features",
    "densenet121_backbone", "densenet161_backbone", "densenet201_backbone", "densenet67_backbone",
    "DENSENET_BACKBONES",
]


def _stride(module: nn.Module) -> int:
    """Spatial downsampling factor of one top-level module of ``features``."""
    if isinstance(module, _Transition):
        return _stride(module.pool)
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        stride = module.stride
        return stride[0] if isinstance(stride, tuple) else stride
    return 1  # dense blocks, norms, ReLUs


class DenseNetBackbone(Backbone):
    """A DenseNet ``features`` stack with taps ``stem``, ``block1`` … ``blockN`` (N dense blocks, 4 here).

    ``features`` must be laid out as torchvision's: a stem whose last module before
    ``pool0`` is a ReLU, then ``pool0``, then ``denseblock{i}`` / ``transition{i}``
    pairs, then ``denseblock{N}`` and ``norm5``. Widths and strides are read off the
    modules. Shapes for a B×3×H×W input (conv/max-pool stages pad, giving ``⌈·/2⌉``;
    the transitions' 2×2 average pools floor), e.g. 97×129 → stem 49×65, block1
    25×33, block2 12×16, block3 6×8, block4 3×4:

    - ``stem``: B×C0 at stride 2 (after the stem's last ReLU, before ``pool0``)
    - ``block1``: stride 4, ``block2``: 8, ``block3``: 16 (the raw concatenated block
      output, before the transition's BN-ReLU-conv-pool)
    - ``block4``: stride 32, after ``norm5`` and a ReLU.

    ``global_feature`` is the global average of ``block4`` (what the classifier sees).
    """

    ignored_pretrained_prefixes = ("classifier.",)

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        names = [name for name, _ in features.named_children()]
        blocks = [name for name in names if name.startswith("denseblock")]
        if "pool0" not in names or not blocks or names[-1] != "norm5":
            raise ValueError("features must follow torchvision's DenseNet layout (… pool0, denseblock*, norm5)")
        self._last_block = blocks[-1]

        stem_norms = [m for m in features[: names.index("pool0")] if isinstance(m, nn.BatchNorm2d)]
        self.tap_channels = {"stem": stem_norms[-1].num_features}
        self.tap_strides = {}
        stride = 1
        for name, module in features.named_children():
            if name == "pool0":
                self.tap_strides["stem"] = stride
            stride *= _stride(module)
            if name.startswith("denseblock"):
                tap = "block" + name.removeprefix("denseblock")
                self.tap_strides[tap] = stride
                # A block's width is what the next BatchNorm (transition's or norm5) normalises.
                following = features[names.index(name) + 1]
                norm = following.norm if isinstance(following, _Transition) else following
                self.tap_channels[tap] = norm.num_features
        self.global_channels = self.tap_channels[self.tap_names[-1]]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×H×W → {stem, block1, …, block4} (see the class docstring for shapes)."""
        taps: dict[str, torch.Tensor] = {}
        for name, module in self.features.named_children():
            if name == "pool0":
                taps["stem"] = x
            x = module(x)
            if name.startswith("denseblock") and name != self._last_block:
                taps["block" + name.removeprefix("denseblock")] = x
        # Not in-place: x is norm5's output, which autograd needs unchanged for norm5's backward.
        taps["block" + self._last_block.removeprefix("denseblock")] = F.relu(x)
        return taps


def densenet67_features(*, growth_rate: int = 48, block_config: Sequence[int] = (6, 8, 8, 8),
                        stem_channels: Sequence[int] = (48, 48, 96), bn_size: int = 4,
                        compression: float = 0.5, drop_rate: float = 0.0) -> nn.Sequential:
    """The ``features`` stack of DenseNet-67 (thesis Figure 5.3), in torchvision's layout.

    Figure 5.3 fixes: growth 48; a stem of three 3×3 convs, the first with stride 2;
    a 3×3 max pool with stride 2; dense blocks of 6, 8, 8, 8 bottleneck layers
    [1×1 conv, 3×3 conv]; transitions of a 1×1 conv and a 2×2 average pool. The rest
    is our choice, following DenseNet-BC / torchvision:

    - stem widths 48, 48, 96 (the last is 2·growth, the stem width DenseNet-BC uses);
      each stem conv is conv (no bias) + BN + ReLU, padding 1;
    - bottleneck layers are torchvision's ``_DenseLayer``: BN-ReLU-1×1 conv to
      ``bn_size``·growth = 192 channels, BN-ReLU-3×3 conv to growth = 48;
    - transitions are torchvision's ``_Transition`` (BN-ReLU-1×1 conv-2×2 avg pool)
      with compression 0.5;
    - after the last block, ``norm5`` (BN); the backbone adds the ReLU.

    Widths: stem 96 → block1 96+6·48 = 384 → 192 → block2 192+8·48 = 576 → 288 →
    block3 288+384 = 672 → 336 → block4 336+384 = 720.

    Counting to 67 the way "121" is counted for DenseNet-121 (weighted layers on the
    main path: 1 stem conv + 2·58 + 3 transitions + 1 classifier = 121):
    3 stem convs + 2·(6+8+8+8) = 60 bottleneck convs + 3 transition convs + 1
    classifier (fully connected) layer = 67. The backbone itself has no classifier.
    """
    if len(stem_channels) != 3:
        raise ValueError("the DenseNet-67 stem has three convolutions")
    layers: list[tuple[str, nn.Module]] = []
    in_channels = 3
    for i, out_channels in enumerate(stem_channels):
        layers += [
            (f"conv{i}", nn.Conv2d(in_channels, out_channels, 3, stride=2 if i == 0 else 1, padding=1, bias=False)),
            (f"norm{i}", nn.BatchNorm2d(out_channels)),
            (f"relu{i}", nn.ReLU(inplace=True)),
        ]
        in_channels = out_channels
    layers.append(("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))

    channels = in_channels
    for i, num_layers in enumerate(block_config):
        layers.append((f"denseblock{i + 1}", _DenseBlock(num_layers=num_layers, num_input_features=channels,
                                                         bn_size=bn_size, growth_rate=growth_rate,
                                                         drop_rate=drop_rate)))
        channels += num_layers * growth_rate
        if i != len(block_config) - 1:
            out_channels = int(math.floor(channels * compression))
            layers.append((f"transition{i + 1}", _Transition(num_input_features=channels,
                                                             num_output_features=out_channels)))
            channels = out_channels
    layers.append(("norm5", nn.BatchNorm2d(channels)))
    features = nn.Sequential(OrderedDict(layers))

    # torchvision's DenseNet initialisation.
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return features


def _densenet_backbone(features: nn.Sequential, *, pretrained: str | Path | Mapping[str, Any] | None,
                       freeze_bn: bool) -> DenseNetBackbone:
    model = DenseNetBackbone(features)
    if pretrained is not None:
        model.load_pretrained(pretrained)
    if freeze_bn:
        freeze_batchnorm(model)
    return model


def _torchvision_densenet(builder: Callable[..., nn.Module], *, pretrained: str | Path | Mapping[str, Any] | None,
                          freeze_bn: bool) -> DenseNetBackbone:
    if isinstance(pretrained, str) and pretrained == "imagenet":
        # torchvision's builder also remaps the old "norm.1"-style keys of its checkpoints.
        return _densenet_backbone(builder(weights="IMAGENET1K_V1").features, pretrained=None, freeze_bn=freeze_bn)
    return _densenet_backbone(builder(weights=None).features, pretrained=pretrained, freeze_bn=freeze_bn)


def densenet121_backbone(*, pretrained: str | Path | Mapping[str, Any] | None = None,
                         freeze_bn: bool = False) -> DenseNetBackbone:
    """DenseNet-121 (growth 32, blocks 6/12/24/16). Taps: stem 64, block1 256, block2 512, block3 1024, block4 1024.

    Args:
        pretrained: ``None``, ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, may
            download), or a local .pth path / state dict in torchvision's layout.
        freeze_bn: replace every BatchNorm2d by FrozenBatchNorm2d (after loading weights).
    """
    return _torchvision_densenet(_tv_densenet121, pretrained=pretrained, freeze_bn=freeze_bn)


def densenet161_backbone(*, pretrained: str | Path | Mapping[str, Any] | None = None,
                         freeze_bn: bool = False) -> DenseNetBackbone:
    """DenseNet-161 (growth 48, blocks 6/12/36/24). Taps: stem 96, block1 384, block2 768, block3 2112, block4 2208."""
    return _torchvision_densenet(_tv_densenet161, pretrained=pretrained, freeze_bn=freeze_bn)


def densenet201_backbone(*, pretrained: str | Path | Mapping[str, Any] | None = None,
                         freeze_bn: bool = False) -> DenseNetBackbone:
    """DenseNet-201 (growth 32, blocks 6/12/48/32). Taps: stem 64, block1 256, block2 512, block3 1792, block4 1920."""
    return _torchvision_densenet(_tv_densenet201, pretrained=pretrained, freeze_bn=freeze_bn)


def densenet67_backbone(*, pretrained: str | Path | Mapping[str, Any] | None = None,
                        freeze_bn: bool = False, **feature_options: Any) -> DenseNetBackbone:
    """DenseNet-67 (thesis Figure 5.3; see :func:`densenet67_features` for the design choices).

    Taps: stem 96, block1 384, block2 576, block3 672, block4 720 (strides 2, 4, 8, 16, 32).

    Args:
        pretrained: ``None`` or a local .pth path / state dict saved from this
            backbone (keys ``features.*``; a ``classifier.*`` from a classification
            run is ignored). There are no ImageNet weights, so ``"imagenet"`` is an error.
        freeze_bn: replace every BatchNorm2d by FrozenBatchNorm2d (after loading weights).
        feature_options: overrides of :func:`densenet67_features` (``growth_rate``,
            ``block_config``, ``stem_channels``…), e.g. for tiny CPU variants.
    """
    if isinstance(pretrained, str) and pretrained == "imagenet":
        raise ValueError("DenseNet-67 has no ImageNet weights; pass None or a checkpoint of its own layout")
    return _densenet_backbone(densenet67_features(**feature_options), pretrained=pretrained, freeze_bn=freeze_bn)


DENSENET_BACKBONES: dict[str, Callable[..., Backbone]] = {
    "densenet121": densenet121_backbone,
    "densenet161": densenet161_backbone,
    "densenet201": densenet201_backbone,
    "densenet67": densenet67_backbone,
}
