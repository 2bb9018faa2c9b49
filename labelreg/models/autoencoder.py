"""Label-map autoencoder: phase one of label-structure regularization (thesis §5.3.1).

The encoder is five 3×3 conv layers with 2×2 max pooling between them, so the
bottleneck sits at 1/16 of the input; the decoder mirrors it with 2× upsampling
followed by a 3×3 conv; there are no skip connections. Variants are named by
bottleneck width (thesis §5.3.1, Table 5.1):

    "32":  32, 32, 32, 32, 32
    "128": 32, 128, 128, 128, 128
    "256": 32, 128, 128, 128, 256

Choices the thesis leaves open, made here:
- every hidden conv is followed by BatchNorm and ReLU (faster, steadier training;
  in phase two the frozen decoder runs with its running statistics);
- upsampling is bilinear (align_corners=False), which gives smoother shapes than
  nearest neighbour for the same cost;
- the decoder's last conv maps the first-layer width to C class logits, so the
  decoder has five convs like the encoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.config import ConfigError
from labelreg.palette import IGNORE_INDEX

AE_VARIANTS: dict[str, tuple[int, ...]] = {
    "32": (32, 32, 32, 32, 32),
    "128": (32, 128, 128, 128, 128),
    "256": (32, 128, 128, 128, 256),
}
DOWNSAMPLING = 16


def one_hot_labels(label: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """B×H×W int ids → B×C×H×W float one-hot; ignore pixels are all-zero."""
    valid = label != ignore_index
    bad = valid & ((label < 0) | (label >= num_classes))
    if bool(bad.any()):
        found = torch.unique(label[bad]).tolist()
        raise ValueError(f"label ids {found} are outside 0..{num_classes - 1} (and not ignore {ignore_index})")
    safe = torch.where(valid, label, torch.zeros_like(label))
    onehot = F.one_hot(safe.long(), num_classes).permute(0, 3, 1, 2).to(torch.float32)
    return onehot * valid.unsqueeze(1)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class LabelEncoder(nn.Module):
    """B×C×H×W one-hot labels → B×widths[-1]×H/16×W/16 code."""

    def __init__(self, num_classes: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        channels = (num_classes, *widths)
        self.convs = nn.ModuleList(_conv_bn_relu(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:]))

    def forward_features(self, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        """All five activations, ``conv1`` (H×W) … ``conv5`` (H/16×W/16)."""
        features = {}
        x = onehot
        for level, conv in enumerate(self.convs, start=1):
            if level > 1:
                x = F.max_pool2d(x, 2)
            x = conv(x)
            features[f"conv{level}"] = x
        return features

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        return self.forward_features(onehot)[f"conv{len(self.convs)}"]


class LabelDecoder(nn.Module):
    """B×widths[-1]×h×w code → B×C×16h×16w logits."""

    def __init__(self, num_classes: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        reversed_widths = widths[::-1]
        self.in_channels = reversed_widths[0]
        self.convs = nn.ModuleList(
            _conv_bn_relu(c_in, c_out) for c_in, c_out in zip(reversed_widths[:-1], reversed_widths[1:])
        )
        self.classifier = nn.Conv2d(reversed_widths[-1], num_classes, 3, padding=1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = code
        for conv in self.convs:
            x = conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.classifier(x)

    def decode_to(self, code: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """B×K×h×w predicted code → B×C×H×W logits, ``size`` = (H, W) (phase two's auxiliary branch, §5.3.3).

        Geometry: phase one pads a label map at the bottom and right (ignore label) to 16h×16w,
        h = ⌈H/16⌉, w = ⌈W/16⌉, and crops the reconstruction back to its top-left H×W
        (``labelreg.tasks.autoencoder.autoencoder_forward``), so code cell (i, j) stands for the pixels
        [16i, 16i + 16) × [16j, 16j + 16). The decoder's 16h×16w output is therefore cropped to its top-left
        H×W here, never resized: a resize would stretch every cell by H / 16h (at 180×240: 180 rows over
        192, cell 11 moved by ~11 px). The crop is exact for any code of ⌈H/16⌉×⌈W/16⌉ cells; any other
        code size is refused.

        On the CPU the decoder runs channels-last: it grows its maps to full resolution, and in that layout
        oneDNN's convolutions and the bilinear upsampling skip the per-layer layout reorders (forward + input
        gradient in 0.54× the time under bf16, 0.68× in fp32; docs/bench.md). Same values up to float
        rounding. Elsewhere the code keeps the caller's layout (``train.channels_last`` chooses it on a GPU,
        where this was not measured). Phase one keeps the contiguous layout, where it measured no faster.
        """
        rows, cols = code.shape[-2:]
        height, width = size
        if not (DOWNSAMPLING * (rows - 1) < height <= DOWNSAMPLING * rows
                and DOWNSAMPLING * (cols - 1) < width <= DOWNSAMPLING * cols):
            raise ValueError(f"a {rows}×{cols} code decodes {DOWNSAMPLING * rows}×{DOWNSAMPLING * cols} pixels; "
                             f"{height}×{width} needs a ⌈H/16⌉×⌈W/16⌉ = "
                             f"{-(-height // DOWNSAMPLING)}×{-(-width // DOWNSAMPLING)} code")
        if code.device.type == "cpu":
            code = code.contiguous(memory_format=torch.channels_last)
        logits = self(code)
        if tuple(logits.shape[-2:]) == (height, width):
            return logits
        return logits[..., :height, :width]


class LabelAutoencoder(nn.Module):
    """Phase-one autoencoder over one-hot label maps.

    ``forward(onehot)`` takes B×C×H×W (H, W divisible by 16) and returns
    ``{"seg": B×C×H×W logits, "code": B×K×H/16×W/16}``.
    """

    def __init__(self, num_classes: int, variant: str = "128") -> None:
        super().__init__()
        if variant not in AE_VARIANTS:
            raise ValueError(f"unknown autoencoder variant {variant!r}; choose one of {sorted(AE_VARIANTS)}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        widths = AE_VARIANTS[variant]
        self.num_classes = num_classes
        self.variant = variant
        self.encoder = LabelEncoder(num_classes, widths)
        self.decoder = LabelDecoder(num_classes, widths)

    @property
    def code_channels(self) -> int:
        return self.decoder.in_channels

    def forward(self, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        if onehot.dim() != 4 or onehot.shape[1] != self.num_classes:
            raise ValueError(f"expected B×{self.num_classes}×H×W one-hot input, got shape {tuple(onehot.shape)}")
        height, width = onehot.shape[-2:]
        if height % DOWNSAMPLING or width % DOWNSAMPLING:
            raise ValueError(f"autoencoder input {height}×{width} must be divisible by {DOWNSAMPLING} in both sides")
        code = self.encoder(onehot)
        return {"seg": self.decoder(code), "code": code}

    def reconstruct(self, label: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> dict[str, torch.Tensor]:
        """B×H×W label ids → outputs of ``forward`` on their one-hot encoding."""
        return self(one_hot_labels(label, self.num_classes, ignore_index))


def label_autoencoder(*, num_classes: int, variant: str = "128") -> LabelAutoencoder:
    return LabelAutoencoder(num_classes, variant)


def variant_from_weights(weights: dict[str, torch.Tensor], prefix: str = "") -> str | None:
    """The variant of the autoencoder (or of its decoder or encoder alone) stored in ``weights`` under
    ``prefix``, read from the code width; None when neither part is there."""
    width = None
    if f"{prefix}decoder.convs.0.0.weight" in weights:  # first decoder conv: code channels in
        width = weights[f"{prefix}decoder.convs.0.0.weight"].shape[1]
    elif f"{prefix}encoder.convs.4.0.weight" in weights:  # last encoder conv: code channels out
        width = weights[f"{prefix}encoder.convs.4.0.weight"].shape[0]
    return next((name for name, widths in AE_VARIANTS.items() if widths[-1] == width), None)


def autoencoder_from_checkpoint(checkpoint: dict, source: str, num_classes: int | None = None,
                                default_variant: str = "128") -> LabelAutoencoder:
    """The phase-one autoencoder in a loaded ``train-ae`` checkpoint, weights loaded: class count from its
    weights, variant from its config (else ``default_variant``). ``source`` names the file in errors."""
    weights = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict) or "decoder.classifier.weight" not in weights:
        task = checkpoint.get("config", {}).get("task") if isinstance(checkpoint, dict) else None
        raise ConfigError(f"{source} is not a label-autoencoder checkpoint (it holds "
                          f"{'a ' + repr(task) + ' model' if task else 'no autoencoder weights'}); give a phase-one "
                          "train-ae checkpoint, e.g. runs/<ae run>/checkpoints/best.pt")
    stored = weights["decoder.classifier.weight"].shape[0]
    if num_classes is not None and stored != num_classes:
        raise ConfigError(f"{source} was trained on {stored} classes, the data set has {num_classes}")
    variant = checkpoint.get("config", {}).get("model", {}).get("variant", default_variant)
    autoencoder = LabelAutoencoder(stored, variant)
    autoencoder.load_state_dict(checkpoint["model"])
    return autoencoder
