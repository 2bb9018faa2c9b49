"""Zoom-out head: classify every cell of a coarse grid from features tapped at many depths.

Thesis §3.3, §3.5. The literal model resizes every tap to the grid (1/4 or
1/8 of the input), concatenates them (plus an optional scene feature replicated
over the grid), optionally normalises each channel to zero mean and unit
variance, and applies a 3-layer MLP of 1×1 convolutions.

The first 1×1 layer over that concatenation dominates the cost (for ResNet-101 at
256² it is more arithmetic than the backbone). Resizing (adaptive average pooling
down, bilinear interpolation up — both with weights summing to one), per-channel
normalisation with fixed statistics and a 1×1 convolution are all linear, so

    W · norm(concat_t resize_t(x_t))  ==  Σ_t resize_t((W_t / σ_t) · x_t)  −  Σ_t W_t μ_t / σ_t

where W_t is the slice of the first layer acting on tap t. ``ZoomOutHead`` runs
the right-hand side: each tap is projected at the coarser of its own and the
grid resolution (finer taps are pooled to the grid first, coarser ones are
projected and then upsampled), the scene feature is projected once per image and
broadcast, and the bias and non-linearity come after the sum. ``forward_literal``
keeps the left-hand side for tests and benchmarks.

Normalisation statistics are fixed buffers (``feature_mean``/``feature_std``),
estimated once from training batches by ``calibrate`` (thesis §5.4.1: zoom-out
features of pretrained backbones normalised to zero mean, unit variance); a
BatchNorm over the concatenation in training mode would need the full
concatenated tensor and could not be folded.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.models.pspnet import PyramidPooling


def interpolation_matrix(size_in: int, size_out: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """size_out×size_in weights of 1-D linear interpolation with half-pixel centres (``align_corners=False``):
    output ``i`` reads the input at ``(i + ½)·size_in/size_out − ½``, clamped to the first and last sample."""
    # built where it is used (no host-to-device copy per forward), in float64, then rounded once to ``dtype``
    rows = torch.arange(size_out, device=device)
    source = ((rows.to(torch.float64) + 0.5) * (size_in / size_out) - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    frac = source - low
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64, device=device)
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix.to(dtype)


def bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×C×h×w → B×C×size: ``F.interpolate(x, size, mode="bilinear", align_corners=False)`` written as two
    small matrix products (rows, then columns; equal to float rounding, tested in float64).

    Why not ``F.interpolate``: the head resizes 1000-channel maps, and on the CPU the bilinear kernel copies
    its output to contiguous memory and its backward is a slow per-channel scatter; the two products
    (and their backward, two more) ran the 1000-channel resizes of a zoom-out ResNet step 5× (fp32) to 8×
    (bf16) faster in one process (docs/bench.md). Under autocast the products run in the autocast dtype,
    weights included (e.g. bf16: errors of ~0.01 on unit-scale maps, as any bf16 layer), like the rest of
    the head; measured on CPUs only."""
    rows = interpolation_matrix(x.shape[-2], size[0], dtype=x.dtype, device=x.device)
    columns = interpolation_matrix(x.shape[-1], size[1], dtype=x.dtype, device=x.device)
    return rows @ (x @ columns.t())


def resize_to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """B×C×h×w → B×C×grid: adaptive average pooling when shrinking, bilinear when growing (both linear)."""
    height, width = x.shape[-2:]
    if (height, width) == tuple(grid):
        return x
    if height >= grid[0] and width >= grid[1]:
        return F.adaptive_avg_pool2d(x, grid)
    return bilinear_resize(x, tuple(grid))


def grid_size(image_size: tuple[int, int], grid_stride: int) -> tuple[int, int]:
    return math.ceil(image_size[0] / grid_stride), math.ceil(image_size[1] / grid_stride)


def feature_slices(tap_channels: Mapping[str, int], global_channels: int) -> Iterable[tuple[str, slice]]:
    """(name, channel slice) of every part of the concatenated zoom-out feature, in order."""
    start = 0
    for name, channels in tap_channels.items():
        yield name, slice(start, start + channels)
        start += channels
    if global_channels:
        yield "global", slice(start, start + global_channels)


def fold_normalisation(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor | None,
                       std: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """out×in weight and bias of a 1×1 conv applied to (x − mean) / std, as weight and bias acting on x."""
    if mean is None:
        return weight, bias
    weight = weight / std
    return weight, bias - weight @ mean


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype for ``device_type`` if autocast is on there, else None."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def project_zoomout(taps: Mapping[str, torch.Tensor], grid: tuple[int, int], scene: torch.Tensor | None,
                    weight: torch.Tensor, bias: torch.Tensor, tap_channels: Mapping[str, int],
                    global_channels: int) -> torch.Tensor:
    """A 1×1 conv (out×in ``weight``, ``bias``) over the concatenated zoom-out feature, B×out×grid, in the
    projected form: each tap is projected at the coarser of its own and the grid resolution and resized,
    the scene feature is projected once and broadcast, and the parts are summed (see the module docstring).

    Under autocast the (folded) weight and the bias are cast once to the autocast dtype, so the projected
    taps, their sum and the bias add — the B×out×grid maps, the largest of the network (§3.5) — stay in
    that dtype; a float32 bias would promote the sum, and everything after it, to float32. Without
    autocast nothing is cast (a float64 model stays exactly equal to ``forward_literal``).
    """
    dtype = autocast_dtype(weight.device.type)
    if dtype is not None and weight.dtype != torch.float64:  # autocast leaves float64 alone too
        weight, bias = weight.to(dtype), bias.to(dtype)
    total = None
    for name, part in feature_slices(tap_channels, global_channels):
        w = weight[:, part]
        if name == "global":
            projected = (scene @ w.t())[:, :, None, None]  # B×out×1×1, broadcast over the grid
        else:
            x = taps[name]
            if x.shape[-2] >= grid[0] and x.shape[-1] >= grid[1]:
                x = resize_to_grid(x, grid)  # pool first: projecting is cheaper on the grid
            # a 1×1 convolution rather than einsum: same numbers, but it keeps the memory format and
            # skips the einsum's permuted output that later ops had to copy (bench profile, docs/bench.md)
            projected = resize_to_grid(F.conv2d(x, w[:, :, None, None]), grid)
        total = projected if total is None else total + projected
    return total + bias[None, :, None, None]


def concatenate_zoomout(taps: Mapping[str, torch.Tensor], grid: tuple[int, int], scene: torch.Tensor | None,
                        tap_channels: Mapping[str, int], global_channels: int) -> torch.Tensor:
    """The literal zoom-out feature, B×in×grid: every tap resized to the grid, the scene feature replicated."""
    parts = [resize_to_grid(taps[name], grid) for name in tap_channels]
    if global_channels:
        parts.append(scene[:, :, None, None].expand(-1, -1, *grid))
    return torch.cat(parts, dim=1)


class ZoomOutHead(nn.Module):
    """Taps (+ optional B×G scene feature) → B×C×⌈H/g⌉×⌈W/g⌉ logits, computed in the projected form.

    Args:
        tap_channels: ordered name → channels of the taps to use (a subset of a backbone's).
        num_classes: C.
        grid_stride: g, 4 or 8 (any positive int works).
        global_channels: G, width of the scene feature (0 = none).
        hidden: width of the two hidden 1×1 layers (1000 in the thesis).
        dropout: element-wise dropout after each hidden layer (each location's units dropped independently).
        normalize: use fixed per-channel feature normalisation (see ``calibrate``).
    """

    def __init__(self, tap_channels: Mapping[str, int], num_classes: int, *, grid_stride: int = 4,
                 global_channels: int = 0, hidden: int = 1000, dropout: float = 0.0, normalize: bool = False) -> None:
        super().__init__()
        if not tap_channels:
            raise ValueError("a zoom-out head needs at least one tap")
        self.tap_channels = dict(tap_channels)
        self.grid_stride = grid_stride
        self.global_channels = global_channels
        self.normalize = normalize
        self.in_channels = sum(self.tap_channels.values()) + global_channels
        self.first = nn.Conv2d(self.in_channels, hidden, 1)
        # element-wise dropout: the MLP classifies each location on its own (§3.5), so a hidden unit
        # is dropped per location, not for the whole image as Dropout2d would
        self.rest = nn.Sequential(
            nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )
        self.register_buffer("feature_mean", torch.zeros(self.in_channels))
        self.register_buffer("feature_std", torch.ones(self.in_channels))

    # -------------------------------------------------------------- the folded first layer

    def normalisation(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(mean, std) of the zoom-out features if this head normalises them, else (None, None)."""
        return (self.feature_mean, self.feature_std) if self.normalize else (None, None)

    def _folded_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """First-layer weight (hidden×in) and bias with the normalisation folded in."""
        return fold_normalisation(self.first.weight.flatten(1), self.first.bias, *self.normalisation())

    def hidden_features(self, taps: Mapping[str, torch.Tensor], grid: tuple[int, int],
                        scene: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-activation of the first MLP layer on the grid, B×hidden×grid (the projected form)."""
        weight, bias = self._folded_weight_and_bias()
        return project_zoomout(taps, grid, scene, weight, bias, self.tap_channels, self.global_channels)

    def forward(self, taps: Mapping[str, torch.Tensor], grid: tuple[int, int],
                scene: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(taps, scene)
        return self.rest(self.hidden_features(taps, grid, scene))

    # -------------------------------------------------------------- reference form and calibration

    def concatenated_features(self, taps: Mapping[str, torch.Tensor], grid: tuple[int, int],
                              scene: torch.Tensor | None = None) -> torch.Tensor:
        """The literal zoom-out feature, B×in_channels×grid (before normalisation)."""
        return concatenate_zoomout(taps, grid, scene, self.tap_channels, self.global_channels)

    def forward_literal(self, taps: Mapping[str, torch.Tensor], grid: tuple[int, int],
                        scene: torch.Tensor | None = None) -> torch.Tensor:
        """Concatenate-normalise-convolve, as written in the thesis; same output as ``forward``."""
        self._check_inputs(taps, scene)
        features = self.concatenated_features(taps, grid, scene)
        if self.normalize:
            features = (features - self.feature_mean[:, None, None]) / self.feature_std[:, None, None]
        return self.rest(self.first(features))

    @torch.no_grad()
    def calibrate(self, batches: Iterable[tuple[Mapping[str, torch.Tensor], tuple[int, int], torch.Tensor | None]],
                  eps: float = 1e-5) -> None:
        """Set the normalisation statistics to the per-channel mean/std of the zoom-out features of ``batches``."""
        total = total_sq = None
        count = 0
        for taps, grid, scene in batches:
            features = self.concatenated_features(taps, grid, scene).double()
            summed, summed_sq = features.sum(dim=(0, 2, 3)), (features ** 2).sum(dim=(0, 2, 3))
            total = summed if total is None else total + summed
            total_sq = summed_sq if total_sq is None else total_sq + summed_sq
            count += features.shape[0] * features.shape[2] * features.shape[3]
        if count == 0:
            raise ValueError("calibrate needs at least one batch")
        mean = total / count
        variance = (total_sq / count - mean ** 2).clamp(min=0)
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_((variance + eps).sqrt().float())

    def _check_inputs(self, taps: Mapping[str, torch.Tensor], scene: torch.Tensor | None) -> None:
        missing = [name for name in self.tap_channels if name not in taps]
        if missing:
            raise KeyError(f"zoom-out head expects taps {missing}; got {sorted(taps)}")
        if self.global_channels and scene is None:
            raise ValueError("this zoom-out head was built with a scene feature; pass scene=B×G")


class ZoomOutProjection(nn.Module):
    """A 1×1 conv over a zoom-out head's (normalised) concatenated features, in the projected form.

    An auxiliary layer of its own on the zoom-out features, e.g. the encoder regularizer's of thesis
    Fig. 5.4 ("An auxiliary layer attempts to predict the encoder zoom-out features from the CNN zoom-out
    features at the corresponding spatial location", §5.3.3). It reads the same taps, grid, scene feature
    and normalisation statistics as ``head`` but shares none of its parameters, so a loss on its output
    trains the backbone and this layer, never the head. ``forward_literal`` builds the concatenation.
    """

    def __init__(self, head: ZoomOutHead, out_channels: int) -> None:
        super().__init__()
        self.tap_channels = dict(head.tap_channels)
        self.global_channels = head.global_channels
        self.conv = nn.Conv2d(head.in_channels, out_channels, 1)

    def forward(self, taps: Mapping[str, torch.Tensor], grid: tuple[int, int], scene: torch.Tensor | None = None,
                mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
        """B×out×grid; ``mean``/``std`` (the head's ``normalisation()``) normalise the features first."""
        weight, bias = fold_normalisation(self.conv.weight.flatten(1), self.conv.bias, mean, std)
        return project_zoomout(taps, grid, scene, weight, bias, self.tap_channels, self.global_channels)

    def forward_literal(self, taps: Mapping[str, torch.Tensor], grid: tuple[int, int],
                        scene: torch.Tensor | None = None, mean: torch.Tensor | None = None,
                        std: torch.Tensor | None = None) -> torch.Tensor:
        features = concatenate_zoomout(taps, grid, scene, self.tap_channels, self.global_channels)
        if mean is not None:
            features = (features - mean[:, None, None]) / std[:, None, None]
        return self.conv(features)


class ZoomOutSegmenter(nn.Module):
    """Backbone taps → zoom-out head on a 1/g grid → logits bilinearly upsampled to the input size.

    ``forward(x: B×3×H×W)`` → ``{"seg": B×C×H×W, "features": {taps…, "ppm"?, "zoomout_hidden": B×hidden×grid}}``.

    Args:
        backbone: any ``Backbone``.
        taps: which taps to use (default: all of the backbone's, in its order).
        scene: append the backbone's global feature, replicated over the grid.
        pyramid_pooling: add a pyramid pooling module over the deepest tap as one more tap (§3.5.1).
        grid_stride, hidden, dropout, normalize: see ``ZoomOutHead``.
    """

    def __init__(self, backbone, num_classes: int, *, taps: list[str] | None = None, grid_stride: int = 4,
                 scene: bool = False, pyramid_pooling: bool = False, hidden: int = 1000, dropout: float = 0.0,
                 normalize: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        names = list(taps) if taps is not None else backbone.tap_names
        unknown = [name for name in names if name not in backbone.tap_channels]
        if unknown:
            raise ValueError(f"unknown tap(s) {unknown}; {type(backbone).__name__} has {backbone.tap_names}")
        self.tap_names = names
        self.grid_stride = grid_stride
        self.scene = scene
        tap_channels = {name: backbone.tap_channels[name] for name in names}
        self.ppm = None
        if pyramid_pooling:
            self.ppm = PyramidPooling(backbone.tap_channels[backbone.tap_names[-1]])
            tap_channels["ppm"] = self.ppm.out_channels
        self.head = ZoomOutHead(tap_channels, num_classes, grid_stride=grid_stride,
                                global_channels=backbone.global_channels if scene else 0, hidden=hidden,
                                dropout=dropout, normalize=normalize)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        head = [p for name, p in self.named_parameters() if not name.startswith("backbone.")]
        return {"backbone": list(self.backbone.parameters()), "head": head}

    def head_inputs(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], tuple[int, int], torch.Tensor | None]:
        """(taps, grid, scene feature) for an image batch: what ``ZoomOutHead`` consumes."""
        taps = dict(self.backbone(x))
        if self.ppm is not None:
            taps["ppm"] = self.ppm(taps[self.backbone.tap_names[-1]])
        scene = self.backbone.global_feature(taps) if self.scene else None
        return taps, grid_size(x.shape[-2:], self.grid_stride), scene

    def forward(self, x: torch.Tensor) -> dict:
        return self.forward_with_inputs(x)[0]

    def forward_with_inputs(self, x: torch.Tensor) -> tuple[dict, tuple[dict[str, torch.Tensor], tuple[int, int],
                                                                      torch.Tensor | None]]:
        """``forward``'s outputs and the head's inputs (taps, grid, scene), for auxiliary layers on them."""
        taps, grid, scene = self.head_inputs(x)
        self.head._check_inputs(taps, scene)
        hidden = self.head.hidden_features(taps, grid, scene)
        logits = self.head.rest(hidden)
        seg = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"seg": seg, "features": {**taps, "zoomout_hidden": hidden}}, (taps, grid, scene)

    @torch.no_grad()
    def calibrate(self, images: Iterable[torch.Tensor]) -> None:
        """Estimate the head's feature normalisation from batches of (normalised) images."""
        was_training = self.training
        self.eval()
        try:
            self.head.calibrate(self.head_inputs(x) for x in images)
        finally:
            self.train(was_training)
