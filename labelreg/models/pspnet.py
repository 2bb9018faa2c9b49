"""PSPNet (Zhao et al.): dilated ResNet (output stride 8) + pyramid pooling module
(thesis §5.4.2, Table 5.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.models.backbones.common import Backbone


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PyramidPooling(nn.Module):
    """B×C×h×w → B×2C×h×w: the input concatenated with, per bin b in ``bins``, an adaptive
    average pool to b×b → 1×1 conv to C/len(bins) + BN + ReLU → bilinear upsampling back to h×w."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = bins
        self.branches = nn.ModuleList(conv_bn_relu(in_channels, in_channels // len(bins)) for _ in bins)
        self.out_channels = in_channels + len(bins) * (in_channels // len(bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear", align_corners=False)
                  for b, branch in zip(self.bins, self.branches)]
        return torch.cat([x, *pooled], dim=1)


def classifier_head(in_channels: int, width: int, num_classes: int, dropout: float = 0.1) -> nn.Sequential:
    """3×3 conv → BN → ReLU → dropout → 1×1 conv to classes (PSPNet's final and auxiliary heads)."""
    return nn.Sequential(conv_bn_relu(in_channels, width, 3), nn.Dropout2d(dropout), nn.Conv2d(width, num_classes, 1))


class PSPNet(nn.Module):
    """``forward(x)`` → ``{"seg": B×C×H×W, "psp_aux_seg": B×C×H×W (aux, training only), "features": taps + "ppm"}``.

    The auxiliary head reads the ``layer3`` tap (its loss weight, 0.4 in the paper, lives in the
    trainer's loss weights as ``psp_aux``).
    """

    def __init__(self, backbone: Backbone, num_classes: int, *, bins: tuple[int, ...] = (1, 2, 3, 6),
                 head_width: int = 512, aux: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        deepest = backbone.tap_names[-1]
        self.ppm = PyramidPooling(backbone.tap_channels[deepest], bins)
        self.head = classifier_head(self.ppm.out_channels, head_width, num_classes, dropout)
        self.aux_tap = "layer3" if "layer3" in backbone.tap_channels else backbone.tap_names[-2]
        self.aux_head = (classifier_head(backbone.tap_channels[self.aux_tap], head_width // 2, num_classes, dropout)
                         if aux else None)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        head = [p for name, p in self.named_parameters() if not name.startswith("backbone.")]
        return {"backbone": list(self.backbone.parameters()), "head": head}

    def forward(self, x: torch.Tensor) -> dict:
        size = x.shape[-2:]
        taps = self.backbone(x)
        pooled = self.ppm(taps[self.backbone.tap_names[-1]])
        outputs = {"seg": F.interpolate(self.head(pooled), size=size, mode="bilinear", align_corners=False),
                   "features": {**taps, "ppm": pooled}}
        if self.aux_head is not None and self.training:  # only training uses it
            aux = self.aux_head(taps[self.aux_tap])
            outputs["psp_aux_seg"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return outputs
