"""VGG-16 as a zoom-out backbone: one tap per convolution layer plus the fc7 scene feature.

§3.3.1.1 / §3.4.1.4 / §4.4.1 of the thesis tap VGG-16 after every one of its 13
convolution layers (after the ReLU), so the zoom-out descriptor is
64+64+128+128+256·3+512·6 = 4224 wide; the global feature is the fc7 activation
(4096), for 8320 in total (§4.4.1).

Where the taps sit relative to the max pools. §4.4.1 takes "each of the 13 feature
maps (outputs of all convolutional layers, with pooling applied when available)".
Each tap here is the convolution's own (ReLU) output, *before* the 2×2 max pool that
follows the last convolution of a block; "pooling applied" is read as the network's
pools being applied between the layers (so conv2_* see pool1's output and sit at
stride 2, …, conv5_* at stride 16), and the finer taps being pooled down to the 1/4
grid by the zoom-out head. Reasons:

- Table 3.1 lists the receptive field of every level's unit on a 256×256 input:
  3, 5, 10, 14, 24, 32, 40, 60, 76, 92, 132, 164, 196. These are exactly the
  receptive fields of conv1_1 … conv5_3 without the following pool; tapping the
  last conv of each block after its pool would give 6, 16, 44, 100 and 212 for
  levels 2, 4, 7, 10 and 13 (``tests/models/test_backbones.py`` checks the table).
- Fig. 3.4 (§3.3.1.1) takes φ1 from the "conv1 map", not the "pool1 map"; the pool
  maps only feed the next convolution.
- Tapping after pool5 would put conv5_3 at 1/32, leaving no VGG feature at the
  decoder input's 1/16 resolution that §5.3.3 predicts it from.

The module keeps torchvision's own submodules under torchvision's names
(``features`` and ``classifier.0`` … ``classifier.4``), so a state dict saved from
``torchvision.models.vgg16()`` loads into it directly; only fc8
(``classifier.6.*``) is dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

# Importing anything under labelreg has already run labelreg/__init__, which makes torchvision importable.
from labelreg.models.backbones.common import Backbone, freeze_batchnorm
from torchvision.models import vgg16 as _tv_vgg16

__all__ = ["VGG16Backbone", "vgg16_backbone", "fc_to_conv", "VGG_BACKBONES"]

# Index in torchvision's ``vgg16().features`` of the ReLU that ends each conv layer.
_VGG16_TAPS: tuple[tuple[str, int, int, int], ...] = (
    # name, index of the ReLU, channels, stride
    ("conv1_1", 1, 64, 1), ("conv1_2", 3, 64, 1),
    ("conv2_1", 6, 128, 2), ("conv2_2", 8, 128, 2),
    ("conv3_1", 11, 256, 4), ("conv3_2", 13, 256, 4), ("conv3_3", 15, 256, 4),
    ("conv4_1", 18, 512, 8), ("conv4_2", 20, 512, 8), ("conv4_3", 22, 512, 8),
    ("conv5_1", 25, 512, 16), ("conv5_2", 27, 512, 16), ("conv5_3", 29, 512, 16),
)
# Index of each max pool in ``features`` and its output stride (used by FCN-8s).
_VGG16_POOLS: tuple[tuple[str, int, int], ...] = (
    ("pool1", 4, 2), ("pool2", 9, 4), ("pool3", 16, 8), ("pool4", 23, 16), ("pool5", 30, 32),
)


class VGG16Backbone(Backbone):
    """VGG-16 with 13 taps (``conv1_1`` … ``conv5_3``, each after its ReLU) and the fc7 global feature.

    Shapes for a B×3×H×W input (VGG's 2×2 max pools floor, so sizes are ``⌊H/s⌋``,
    not ``⌈H/s⌉``; e.g. 97×129 gives 97×129, 48×64, 24×32, 12×16, 6×8):

    - ``conv1_*``: B×64×H×W (stride 1), ``conv2_*``: B×128 (stride 2),
      ``conv3_*``: B×256 (stride 4), ``conv4_*``: B×512 (stride 8),
      ``conv5_*``: B×512 (stride 16).
    - ``global_feature``: B×4096, the fc7 activation: pool5 → adaptive average pool
      to 7×7 (as torchvision does, so any input size works) → fc6 → ReLU → Dropout →
      fc7 → ReLU. The dropout between fc6 and fc7 is the pretrained network's own
      and is active in train mode only. This follows §3.4.1.4 ("the entire image …
      fed to the CNN, and extracting the activations of the last fully connected
      layer"), with the adaptive pool standing in for resizing the image to the
      network's canonical size; §4.4.1's "fc7 …, pooled over the entire image" could
      also be read as fc6/fc7 run convolutionally over pool5 and the fc7 map pooled
      afterwards, which this does not do (the two agree when pool5 is 7×7).

    Args:
        vgg: a ``torchvision.models.VGG`` with the VGG-16 layout; its ``features``,
            ``avgpool`` and ``classifier[:5]`` are reused (fc8 is discarded).
            ``None`` builds one with random weights.
    """

    tap_channels = {name: channels for name, _, channels, _ in _VGG16_TAPS}
    tap_strides = {name: stride for name, _, _, stride in _VGG16_TAPS}
    global_channels = 4096
    ignored_pretrained_prefixes = ("classifier.6.",)

    def __init__(self, vgg: nn.Module | None = None) -> None:
        super().__init__()
        if vgg is None:
            vgg = _tv_vgg16(weights=None)
        if len(vgg.features) != 31 or len(vgg.classifier) != 7:
            raise ValueError("VGG16Backbone needs torchvision's VGG-16 layout "
                             "(31 feature modules, 7 classifier modules)")
        self.features: nn.Sequential = vgg.features
        self.avgpool: nn.Module = vgg.avgpool
        # Keep indices 0..4 (fc6, ReLU, Dropout, fc7, ReLU) so "classifier.0.*"/"classifier.3.*" keys match.
        self.classifier = nn.Sequential(*list(vgg.classifier.children())[:5])
        self._tap_at = {index: name for name, index, _, _ in _VGG16_TAPS}
        self._pool_at = {index: name for name, index, _ in _VGG16_POOLS}

    @property
    def fc6(self) -> nn.Linear:
        """fc6, 25088 → 4096; as a convolution it is a 7×7 conv over pool5 (see :func:`fc_to_conv`)."""
        return self.classifier[0]

    @property
    def fc7(self) -> nn.Linear:
        """fc7, 4096 → 4096; as a convolution it is a 1×1 conv (see :func:`fc_to_conv`)."""
        return self.classifier[3]

    def _run(self, x: torch.Tensor, *, with_pools: bool) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        # Without pools the last module (pool5) is not needed: the taps end at conv5_3.
        end = len(self.features) if with_pools else _VGG16_TAPS[-1][1] + 1
        for index in range(end):
            x = self.features[index](x)
            if index in self._tap_at:
                out[self._tap_at[index]] = x
            elif with_pools and index in self._pool_at:
                out[self._pool_at[index]] = x
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×H×W → the 13 taps, in order (see the class docstring for shapes)."""
        return self._run(x, with_pools=False)

    def features_with_pools(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The 13 taps plus ``pool1`` … ``pool5`` (strides 2, 4, 8, 16, 32), in execution order.

        FCN-8s needs ``pool3`` (B×256), ``pool4`` (B×512) and ``pool5`` (B×512), which are
        not taps because the zoom-out model taps the convolutions themselves.
        """
        return self._run(x, with_pools=True)

    def drop_global_feature(self) -> None:
        """Remove fc6/fc7 (for models that take them over, e.g. FCN-8s via :func:`fc_to_conv`).

        Afterwards ``global_channels`` is 0, ``global_feature`` raises, and checkpoints
        still load: their ``classifier.*`` keys are then all ignored.
        """
        self.classifier = nn.Sequential()
        self.global_channels = 0
        self.ignored_pretrained_prefixes = ("classifier.",)

    def global_feature(self, taps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """B×4096 fc7 activation computed from the ``conv5_3`` tap."""
        if len(self.classifier) == 0:
            raise RuntimeError("this VGG16Backbone's fc6/fc7 were removed by drop_global_feature()")
        x = self.features[_VGG16_POOLS[-1][1]](taps["conv5_3"])  # pool5
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


def fc_to_conv(linear: nn.Linear, *, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """The convolution computing ``linear`` at every position of a feature map (FCN's "convolutionalization").

    torchvision flattens pool5 (B×512×7×7) in C, H, W order before fc6, so fc6's
    4096×25088 weight is exactly ``weight.view(4096, 512, 7, 7)`` of a 7×7 conv;
    fc7's 4096×4096 weight is ``view(4096, 4096, 1, 1)``, a 1×1 conv::

        fc6 = fc_to_conv(backbone.fc6, in_channels=512, kernel_size=7)
        fc7 = fc_to_conv(backbone.fc7, in_channels=4096, kernel_size=1)

    The returned conv has no padding; the caller pads (FCN pads the input by 100).
    """
    if linear.in_features != in_channels * kernel_size * kernel_size:
        raise ValueError(f"{linear.in_features} inputs do not factor as {in_channels}×{kernel_size}×{kernel_size}")
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kernel_size, kernel_size))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def vgg16_backbone(*, pretrained: str | Path | Mapping[str, Any] | None = None,
                   freeze_bn: bool = False) -> VGG16Backbone:
    """VGG-16 zoom-out backbone.

    Args:
        pretrained: ``None`` (random init), ``"imagenet"`` (torchvision's
            ``IMAGENET1K_V1`` weights, downloaded by torchvision if not cached), or a
            local .pth path / state dict in torchvision's VGG-16 layout.
        freeze_bn: replace BatchNorm by FrozenBatchNorm2d (VGG-16 has none; accepted
            so every builder takes the same arguments).
    """
    if isinstance(pretrained, str) and pretrained == "imagenet":
        model = VGG16Backbone(_tv_vgg16(weights="IMAGENET1K_V1"))
    else:
        model = VGG16Backbone()
        if pretrained is not None:
            model.load_pretrained(pretrained)
    if freeze_bn:
        freeze_batchnorm(model)
    return model


VGG_BACKBONES: dict[str, Callable[..., Backbone]] = {"vgg16": vgg16_backbone}
