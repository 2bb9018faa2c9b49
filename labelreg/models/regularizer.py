"""Phase two: label-structure regularization through the phase-one autoencoder (thesis §5.3.3, §5.4).

``DecoderRegularized`` wraps any segmenter from ``MODELS`` without editing it: a new
1×1 conv predicts the decoder's input (the label code, 1/16 of the image) from one
of the segmenter's feature maps, and the phase-one decoder turns that prediction
into an auxiliary segmentation. The decoder is frozen — no parameter updates,
BatchNorm in eval mode — yet gradients flow through it into the segmenter.

``EncoderRegularized`` is the alternative of thesis Fig. 5.4: an auxiliary 1×1 conv of its
own (``ZoomOutProjection``) regresses the frozen encoder's conv1 and conv3 activations of
the ground truth (both on the zoom-out grid, concatenated) from the segmenter's zoom-out
features — the same taps, scene feature and normalisation as the primary head, in the
same projected form (the concatenation is never built; see ``zoomout``), but none of the
head's parameters: the auxiliary loss trains the backbone and this layer only. The encoder
must stay frozen: its activations are the regression target, and a trainable target can
collapse to zero.

``aux_crop`` (off by default, not in the thesis) trades the decoder branch's cost for
noise: in training it decodes a random ``aux_crop``×``aux_crop``-cell window of the
predicted code instead of all of it, and ``aux_target`` cuts the matching window out
of the labels. The full-resolution decoder dominates the regularizer's cost (its forward
and input-gradient backward grow with the decoded area), so a window of a quarter of the
code costs about a quarter; evaluation always decodes the whole code.

Both keep the segmenter under ``self.segmenter``; ``plain_segmenter_state`` strips
everything else, so an exported model is architecturally the plain segmenter.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.models.autoencoder import DOWNSAMPLING, LabelAutoencoder, one_hot_labels
from labelreg.models.zoomout import ZoomOutProjection, ZoomOutSegmenter, resize_to_grid

PROBE_SIZE = (128, 128)


@torch.no_grad()
def probe_features(segmenter: nn.Module, size: tuple[int, int] = PROBE_SIZE) -> dict[str, torch.Size]:
    """Shapes of the segmenter's named features for a 1×3×size input (one forward in eval mode)."""
    was_training = segmenter.training
    segmenter.eval()
    try:
        device = next(segmenter.parameters()).device
        features = segmenter(torch.zeros(1, 3, *size, device=device))["features"]
    finally:
        segmenter.train(was_training)
    return {name: value.shape for name, value in features.items()}


def choose_tap(shapes: dict[str, torch.Size], requested: str | None = None,
               size: tuple[int, int] = PROBE_SIZE) -> str:
    """The feature map the auxiliary 1×1 conv reads.

    ``requested`` if given; else the deepest feature at the decoder input's resolution (1/16:
    VGG-16 conv5_3, DenseNet block3, ResNet layer3, SUNet block3 — "selected because its spatial
    resolution matches that of the expected decoder input", thesis §5.3.3); else the
    pyramid-pooling output (``ppm``) when there is one, which is PSPNet's (output stride 8, nothing
    at 1/16; §5.4.2: "We used the output of the pyramid pooling layer to predict input for the
    decoder"); else the deepest feature. Anything not at 1/16 is resized bilinearly. A zoom-out
    ResNet at output stride 32 with pyramid pooling thus reads ``layer3`` (1/16), not ``ppm`` (1/32).
    """
    if requested is not None:
        if requested not in shapes:
            raise ValueError(f"regularizer.tap={requested!r} is not a feature of this model; choose from {list(shapes)}")
        return requested
    code = (math.ceil(size[0] / DOWNSAMPLING), math.ceil(size[1] / DOWNSAMPLING))
    names = [name for name in shapes if name != "zoomout_hidden"]
    candidates = [name for name in names if tuple(shapes[name][-2:]) == code]
    if candidates:
        return candidates[-1]
    return "ppm" if "ppm" in names else names[-1]


def align_to_code_grid(feature: torch.Tensor, stride: tuple[float, float],
                       code_size: tuple[int, int]) -> torch.Tensor:
    """B×F×h'×w' feature of ``stride`` pixels per cell → B×F×``code_size`` on phase one's code grid.

    A code cell (i, j) covers the pixels [16i, 16i + 16) × [16j, 16j + 16) from the image's top-left
    (see ``LabelDecoder.decode_to``); a feature cell k of stride s, [ks, ks + s). A feature at 1/16 is thus
    taken cell for cell: at a size that is not a multiple of 16 the backbone's floor-rounded map lacks
    the last, partial cell, which copies its neighbour (edge padding), and a surplus cell is dropped;
    stretching the map over the code instead (a resize) would shift the middle cells by up to half a
    cell. Any other stride is resampled bilinearly by s/16 with the cell centres matched
    (align_corners=False at that exact scale), then cut or edge-padded the same way.
    """
    if stride != (DOWNSAMPLING, DOWNSAMPLING):
        scale = (stride[0] / DOWNSAMPLING, stride[1] / DOWNSAMPLING)
        feature = F.interpolate(feature, scale_factor=scale, mode="bilinear", align_corners=False,
                                recompute_scale_factor=False)
    feature = feature[..., :code_size[0], :code_size[1]]
    missing_rows, missing_cols = code_size[0] - feature.shape[-2], code_size[1] - feature.shape[-1]
    if missing_rows or missing_cols:
        feature = F.pad(feature, (0, missing_cols, 0, missing_rows), mode="replicate")
    return feature


class _Regularized(nn.Module):
    """Common part: the wrapped segmenter, the frozen (or not) autoencoder half, train-mode handling."""

    def __init__(self, segmenter: nn.Module, frozen_part: nn.Module, frozen: bool) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.frozen = frozen
        if frozen:
            frozen_part.eval()
            for parameter in frozen_part.parameters():
                parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> "_Regularized":
        super().train(mode)
        if self.frozen:
            self._frozen_part().eval()  # BatchNorm uses phase one's running statistics
        return self

    def _frozen_part(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = self.segmenter.param_groups()
        own = [p for name, p in self.named_parameters() if not name.startswith("segmenter.")]
        return {**groups, "head": groups.get("head", []) + own}

    @property
    def backbone(self) -> nn.Module:
        return self.segmenter.backbone


class DecoderRegularized(_Regularized):
    """``forward(x)`` → the segmenter's outputs plus ``aux_seg`` (B×C×H×W through the decoder) and
    ``aux_code`` (B×K×⌈H/16⌉×⌈W/16⌉, the predicted decoder input). With ``aux_crop`` in training:
    ``aux_seg`` covers only the pixel window ``aux_window`` = (y0, x0, y1, x1) of the image.

    At any H×W a code cell covers the 16×16 pixels it covers in phase one: the tap is put on the code
    grid by ``align_to_code_grid`` and the decoder's output is cropped, not resized (``decode_to``)."""

    def __init__(self, segmenter: nn.Module, autoencoder: LabelAutoencoder, *, tap: str | None = None,
                 frozen: bool = True, aux_crop: int | None = None) -> None:
        if aux_crop is not None and aux_crop < 1:
            raise ValueError(f"aux_crop must be a positive number of code cells (or None), got {aux_crop}")
        shapes = probe_features(segmenter)
        super().__init__(segmenter, autoencoder.decoder, frozen)
        self.aux_crop = aux_crop
        self.tap = choose_tap(shapes, tap)
        # pixels per feature cell, read off the probe (powers of two in every backbone here: 16 at 1/16)
        self.tap_stride = (PROBE_SIZE[0] / shapes[self.tap][-2], PROBE_SIZE[1] / shapes[self.tap][-1])
        self.decoder = autoencoder.decoder
        self.to_code = nn.Conv2d(shapes[self.tap][1], autoencoder.code_channels, 1)

    def _frozen_part(self) -> nn.Module:
        return self.decoder

    def forward(self, x: torch.Tensor) -> dict:
        outputs = self.segmenter(x)
        height, width = x.shape[-2:]
        code_size = (math.ceil(height / DOWNSAMPLING), math.ceil(width / DOWNSAMPLING))
        code = self.to_code(align_to_code_grid(outputs["features"][self.tap], self.tap_stride, code_size))
        outputs["aux_code"] = code
        rows, cols = code.shape[-2:]
        if self.training and self.aux_crop and (rows > self.aux_crop or cols > self.aux_crop):
            window_rows, window_cols = min(self.aux_crop, rows), min(self.aux_crop, cols)
            # drawn on the CPU generator: no device synchronisation, and reproducible under a seed
            r0 = int(torch.randint(rows - window_rows + 1, ()))
            c0 = int(torch.randint(cols - window_cols + 1, ()))
            code = code[..., r0:r0 + window_rows, c0:c0 + window_cols]
            # the window's cells' own pixels (16 per cell, as in the full decode), cut at the image's edge
            window = (DOWNSAMPLING * r0, DOWNSAMPLING * c0, min(DOWNSAMPLING * (r0 + window_rows), height),
                      min(DOWNSAMPLING * (c0 + window_cols), width))
            outputs["aux_window"] = window
            size = (window[2] - window[0], window[3] - window[1])
        else:
            size = (height, width)
        outputs["aux_seg"] = self.decoder.decode_to(code, size)
        return outputs


def aux_target(outputs: dict, label: torch.Tensor) -> torch.Tensor:
    """The labels ``outputs["aux_seg"]`` is compared with: ``label`` (B×H×W), or its ``aux_window``."""
    if "aux_window" not in outputs:
        return label
    y0, x0, y1, x1 = outputs["aux_window"]
    return label[..., y0:y1, x0:x1]


class EncoderRegularized(_Regularized):
    """``forward(x)`` → the segmenter's outputs plus ``aux_features`` (B×(c1+c3)×grid), the predicted
    encoder activations; ``encoder_targets(label, grid)`` gives what they regress to.

    ``frozen=False`` is refused: the target is the encoder's output, and training it with the
    regression loss lets it shrink towards the prediction (all zeros fits everything).
    """

    def __init__(self, segmenter: nn.Module, autoencoder: LabelAutoencoder, *, frozen: bool = True) -> None:
        if not isinstance(segmenter, ZoomOutSegmenter):
            raise ValueError("the encoder regularizer needs a zoom-out segmenter (it reads the zoom-out features)")
        if not frozen:
            raise ValueError("regularizer.kind=encoder needs regularizer.frozen=true: a trainable encoder is also "
                             "the regression target and can collapse to zero activations")
        super().__init__(segmenter, autoencoder.encoder, frozen)
        self.encoder = autoencoder.encoder
        self.num_classes = autoencoder.num_classes
        widths = [conv[0].out_channels for conv in self.encoder.convs]
        self.to_encoder = ZoomOutProjection(segmenter.head, widths[0] + widths[2])

    def _frozen_part(self) -> nn.Module:
        return self.encoder

    def forward(self, x: torch.Tensor) -> dict:
        outputs, (taps, grid, scene) = self.segmenter.forward_with_inputs(x)
        outputs["aux_features"] = self.to_encoder(taps, grid, scene, *self.segmenter.head.normalisation())
        return outputs

    def encoder_targets(self, label: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """B×H×W ground truth → B×(c1+c3)×grid: encoder conv1 and conv3 activations resized to the grid."""
        height, width = label.shape[-2:]
        padded = F.pad(label, (0, -width % DOWNSAMPLING, 0, -height % DOWNSAMPLING), value=255)
        with torch.no_grad():  # the frozen encoder's activations are a fixed target
            features = self.encoder.forward_features(one_hot_labels(padded, self.num_classes))
        conv1 = features["conv1"][..., :height, :width]
        conv3 = features["conv3"][..., : math.ceil(height / 4), : math.ceil(width / 4)]
        return torch.cat([resize_to_grid(conv1, grid), resize_to_grid(conv3, grid)], dim=1)


def plain_segmenter_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A regularized model's state dict → the plain segmenter's (a plain one passes through unchanged)."""
    if not any(key.startswith("segmenter.") for key in state_dict):
        return dict(state_dict)
    return {key.removeprefix("segmenter."): value for key, value in state_dict.items() if key.startswith("segmenter.")}
