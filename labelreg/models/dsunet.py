"""Dilated Stacked U-Nets for segmentation (SUNet paper §5, §6.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.models.backbones.sunet import DegriddingHead, SUNetBackbone


class DilatedSUNet(nn.Module):
    """Dilated SUNet backbone (output stride 32/16/8) + a 1×1 classifier or the de-gridding head.

    ``forward(x: B×3×H×W)`` → ``{"seg": B×C×H×W, "features": taps}``.
    """

    def __init__(self, backbone: SUNetBackbone, num_classes: int, *, degridding: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        channels = backbone.tap_channels[backbone.tap_names[-1]]
        self.classifier = DegriddingHead(channels, num_classes) if degridding else nn.Conv2d(channels, num_classes, 1)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"backbone": list(self.backbone.parameters()), "head": list(self.classifier.parameters())}

    def forward(self, x: torch.Tensor) -> dict:
        taps = self.backbone(x)
        logits = self.classifier(taps[self.backbone.tap_names[-1]])
        return {"seg": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False),
                "features": taps}
