"""FCN-8s on VGG-16 (Long et al.), the from-scratch baseline of thesis Table 5.1.

fc6/fc7 become 7×7 and 1×1 convolutions over pool5 (initialised from the VGG
classifier, so ImageNet weights carry over); class scores from fc7 are upsampled
and fused with scores from pool4 and then pool3 before the final upsampling to
the input size. Choices: fixed bilinear upsampling (to the exact size of each
skip, so odd input sizes need no 100-pixel input padding or cropping) instead of
learned deconvolutions initialised bilinearly, which FCN reported makes little
difference; the skip score layers start at zero, as FCN's did.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.models.backbones.vgg import VGG16Backbone, fc_to_conv


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class FCN8s(nn.Module):
    """``forward(x: B×3×H×W)`` → ``{"seg": B×C×H×W, "features": {taps…, "pool3", "pool4", "pool5", "fc7"}}``."""

    def __init__(self, backbone: VGG16Backbone, num_classes: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc6 = fc_to_conv(backbone.fc6, in_channels=512, kernel_size=7)
        self.fc6.padding = (3, 3)  # keep pool5's size, so small inputs still give a score map
        self.fc7 = fc_to_conv(backbone.fc7, in_channels=4096, kernel_size=1)
        backbone.drop_global_feature()  # fc6/fc7 now live here; the classifier copy would never get gradients
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)  # element-wise, as FCN's fc6/fc7 (and VGG's fc layers) drop units
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        for layer in (self.score_pool4, self.score_pool3):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        head = [p for name, p in self.named_parameters() if not name.startswith("backbone.")]
        return {"backbone": list(self.backbone.parameters()), "head": head}

    def forward(self, x: torch.Tensor) -> dict:
        features = self.backbone.features_with_pools(x)
        h = self.dropout(F.relu(self.fc6(features["pool5"])))
        h = self.dropout(F.relu(self.fc7(h)))
        score = self.score_fr(h)
        score = _upsample(score, features["pool4"]) + self.score_pool4(features["pool4"])
        score = _upsample(score, features["pool3"]) + self.score_pool3(features["pool3"])
        seg = F.interpolate(score, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"seg": seg, "features": {**features, "fc7": h}}
