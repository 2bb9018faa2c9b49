"""Zoom-out pixel features for chapter 4 (§4.4.1), and their dataset-wide normalisation.

The thesis runs VGG-16 (everything above pool5 removed) fully convolutionally on
images resized to 256×336, resizes each of the 13 conv-layer outputs to 1/4 of the
input (64×84) and concatenates them: 4224 features per location. The final
segmentation model also gets fc7 pooled over the whole image and replicated at
every location (8320 features).

For dot products in diverse sampling the features are normalised "in two stages":
every dimension to zero mean and unit variance over the *entire training set*
(all locations of all training images), then every location's vector to unit
Euclidean norm. :class:`ChannelStats` accumulates those statistics;
:func:`standardize` and :func:`unit_norm` apply the two stages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.config import ConfigError, WeakConfig
from labelreg.data.transforms import normalize
from labelreg.models.backbones import BACKBONES, Backbone, build_backbone
from labelreg.models.zoomout import grid_size, resize_to_grid

# A channel whose training-set standard deviation is below this (a dead ReLU) is only centred,
# so it stays 0 instead of dividing noise by ~0.
MIN_STD = 1e-6


class ZoomOutExtractor(nn.Module):
    """Backbone taps resized to a common grid and concatenated, plus an optional global feature.

    ``forward``: B×3×H×W ImageNet-normalised images → (B×D×h×w zoom-out map with
    (h, w) = (⌈H/s⌉, ⌈W/s⌉), B×G global feature or None). D is the sum of the chosen
    taps' channels (VGG-16, all 13 taps: 4224); G is the backbone's global width
    (VGG-16: 4096, fc7). Taps are resized like the zoom-out segmenters do
    (``labelreg.models.zoomout.resize_to_grid``: average pooling down, bilinear up),
    so "pooling applied when available" (§4.4.1) holds for the finer taps.
    """

    def __init__(self, backbone: Backbone, *, taps: Sequence[str] | None = None, grid_stride: int = 4,
                 global_feature: bool = True) -> None:
        super().__init__()
        names = list(taps) if taps else backbone.tap_names
        unknown = [name for name in names if name not in backbone.tap_channels]
        if unknown:
            raise ConfigError(f"weak.taps: unknown tap(s) {unknown}; this backbone has {', '.join(backbone.tap_names)}")
        if grid_stride < 1:
            raise ConfigError(f"weak.grid_stride must be positive, got {grid_stride}")
        self.backbone = backbone
        self.taps = names
        self.grid_stride = grid_stride
        self.with_global = global_feature
        self.dim = sum(backbone.tap_channels[name] for name in names)
        self.global_dim = backbone.global_channels if global_feature else 0

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        grid = grid_size(tuple(images.shape[-2:]), self.grid_stride)
        taps = self.backbone(images)
        zoomout = torch.cat([resize_to_grid(taps[name], grid) for name in self.taps], dim=1)
        scene = self.backbone.global_feature(taps) if self.with_global else None
        return zoomout, scene


def build_extractor(*, backbone: str, backbone_options: dict[str, Any] | None = None, pretrained: str | None = None,
                    taps: Sequence[str] | None = None, grid_stride: int = 4, global_feature: bool = True,
                    seed: int = 0) -> ZoomOutExtractor:
    """A frozen extractor in eval mode; ``pretrained`` must be a local weight file (nothing is downloaded).

    The random initialisation is drawn from its own generator seeded with ``seed``, so a
    random-init backbone is the same network every time it is built (``weak.cache: false``
    rebuilds it in every step) and the global RNG is left as it was.
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"weak.backbone={backbone!r}; available: {', '.join(sorted(BACKBONES))}")
    if pretrained is not None:
        if pretrained == "imagenet":
            # The weak pipeline never downloads: the thesis' weights are a file the user provides.
            raise ConfigError("weak.pretrained must be a local weight file (e.g. a torchvision vgg16 state dict "
                              "saved with torch.save), not 'imagenet'")
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"weak.pretrained: backbone weights not found: {pretrained}")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_backbone(backbone, pretrained=pretrained, **(backbone_options or {}))
    except TypeError as error:  # an option the builder does not take
        raise ConfigError(f"weak.backbone_options {backbone_options} do not fit backbone {backbone!r}: "
                          f"{error}") from None
    extractor = ZoomOutExtractor(net, taps=taps, grid_stride=grid_stride, global_feature=global_feature)
    extractor.requires_grad_(False)
    return extractor.eval()


def extractor_from_config(cfg: WeakConfig, *, seed: int = 0) -> ZoomOutExtractor:
    return build_extractor(backbone=cfg.backbone, backbone_options=cfg.backbone_options, pretrained=cfg.pretrained,
                           taps=cfg.taps, grid_stride=cfg.grid_stride, global_feature=cfg.global_feature, seed=seed)


def prepare_image(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """uint8 3×H×W → float32 3×size ImageNet-normalised (bilinear, antialiased when shrinking)."""
    x = image[None].float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return normalize(x.clamp(0, 255))[0]


def label_to_grid(label: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """H×W int labels → grid-sized labels (nearest: a grid cell takes the label under its centre).

    "nearest-exact", not "nearest": plain nearest takes a cell's top-left pixel, half a cell off the centres
    where the features are read and where the figures draw points (as in ``labelreg.data.transforms``).
    """
    if int(label.max()) > 255 or int(label.min()) < 0:
        raise ValueError(f"label ids must lie in 0..255 (255 = void), got {int(label.min())}..{int(label.max())}")
    out = F.interpolate(label[None, None].float(), size=tuple(grid), mode="nearest-exact")
    return out[0, 0].to(torch.uint8)


class ChannelStats:
    """Per-channel mean and (population) standard deviation over every location of every batch.

    Batches are merged with Chan et al.'s pairwise formula in float64, so the result
    does not depend on how the data were split into batches (up to rounding) and
    does not suffer the cancellation of a running sum of squares.
    """

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """x: B×C×h×w (or B×C): every element of a channel is one observation."""
        flat = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1).cpu()
        n = flat.shape[1]
        if n == 0:
            return
        mean = flat.mean(dim=1)
        m2 = ((flat - mean[:, None]) ** 2).sum(dim=1)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32 C-vectors; std below ``MIN_STD`` becomes 1 (the channel is only centred)."""
        if self.count == 0:
            raise ValueError("no observations: the training split is empty")
        std = (self.m2 / self.count).sqrt()
        std = torch.where(std < MIN_STD, torch.ones_like(std), std)
        return self.mean.float(), std.float()


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Stage one: (x − mean_c) / std_c per channel; x is B×C×h×w or B×C, mean/std C-vectors."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x.float() - mean.view(shape).to(x.device)) / std.view(shape).to(x.device)


def unit_norm(x: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """Stage two: every location's feature vector (along ``dim``) scaled to unit Euclidean norm."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)
