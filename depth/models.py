"""Depth and joint depth + segmentation networks (thesis §5.5).

- ``SegToDepth`` (Table 5.5): dilated ResNet-50 + pyramid pooling regressing depth from a
  one-hot segmentation, an RGB image, or both.
- ``ZoomOutMultiTask``: one zoom-out backbone, two zoom-out heads (segmentation, depth).
- ``TwoPartModel`` (§5.5.2): part two re-reads the image together with part one's depth
  and class probabilities.

Every model returns a dict at input size: ``"depth"`` B×1×H×W in metres (always > 0,
see ``positive_depth``), ``"seg"`` B×C×H×W logits where there is a segmentation head, and
``"features"``: a flat dict of named tensors. ``param_groups()`` splits the parameters
into ``{"backbone": [...], "head": [...]}`` (each parameter exactly once) for per-group
learning rates.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.models.autoencoder import one_hot_labels
from labelreg.models.backbones import Backbone, build_backbone
from labelreg.models.backbones.densenet import DenseNetBackbone
from labelreg.models.backbones.resnet import ResNetBackbone
from labelreg.models.pspnet import PyramidPooling, conv_bn_relu
from labelreg.models.zoomout import ZoomOutHead, autocast_dtype, grid_size

__all__ = [
    "MIN_DEPTH", "positive_depth", "adapt_input_channels", "seg_to_depth_input",
    "SegToDepth", "ZoomOutMultiTask", "TwoPartModel",
    "seg_to_depth", "twopart_densenet121", "DEPTH_MODELS", "build_depth_model",
]

SEG_TO_DEPTH_INPUTS = ("seg", "rgb", "seg+rgb")
DEPTH_INPUT_TRANSFORMS = ("log", "scaled")

MIN_DEPTH = 1e-3
"""Floor (metres) added to the softplus, so depth stays > 0 (and its log finite) even where softplus underflows."""


def positive_depth(raw: torch.Tensor) -> torch.Tensor:
    """Raw regression output → depth in metres: ``softplus(raw) + MIN_DEPTH`` (smooth, strictly positive).

    Always float32 (float64 stays float64), also under autocast, on purpose: it is the depth the losses
    and metrics of §5.5 read, and bfloat16's 8-bit mantissa would round 5 m to steps of 1/32 m and
    swallow ``MIN_DEPTH`` next to depths above 0.25 m. It is one channel, so the cast costs little (CUDA
    autocast runs softplus in float32 anyway; this makes CPU do the same).
    """
    if raw.dtype in (torch.float16, torch.bfloat16):
        raw = raw.float()
    return F.softplus(raw) + MIN_DEPTH


def _upsample(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _split_params(model: nn.Module, backbones: Iterable[nn.Module]) -> dict[str, list[nn.Parameter]]:
    """{"backbone": parameters of ``backbones``, "head": every other parameter of ``model``}, each once."""
    ids = {id(p) for backbone in backbones for p in backbone.parameters()}
    params = list(model.parameters())  # deduplicated
    return {"backbone": [p for p in params if id(p) in ids], "head": [p for p in params if id(p) not in ids]}


# ----------------------------------------------------------------------------- inputs


def _first_conv(backbone: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of a backbone's first convolution."""
    if isinstance(backbone, DenseNetBackbone):
        return backbone.features, "conv0"  # torchvision's 121/161/201 and our DenseNet-67 alike
    if isinstance(backbone, ResNetBackbone):
        return backbone, "conv1"
    raise ValueError(f"adapt_input_channels supports DenseNet and ResNet backbones, not {type(backbone).__name__}")


def adapt_input_channels(backbone: Backbone, in_channels: int, *, rgb_start: int | None = 0) -> None:
    """Replace ``backbone``'s first convolution by one reading ``in_channels`` channels (in place).

    The old input channels (RGB for a fresh backbone) keep their (possibly pretrained)
    weights at input channels ``rgb_start : rgb_start + 3``; every other channel's weights
    start at zero, so a pretrained net initially ignores the extra inputs (they still get
    gradients and learn). ``rgb_start=None`` means the new input holds no RGB: the whole
    convolution is freshly initialised (Kaiming normal, fan-out, as torchvision does),
    since zero weights on every channel would silence the network.

    Raises:
        ValueError: for other backbone types, or when the RGB channels do not fit.
    """
    parent, name = _first_conv(backbone)
    old: nn.Conv2d = getattr(parent, name)
    if rgb_start is not None and not 0 <= rgb_start <= in_channels - old.in_channels:
        raise ValueError(f"the {old.in_channels} old input channels do not fit at {rgb_start} in {in_channels}")
    if rgb_start == 0 and in_channels == old.in_channels:
        return
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                    dilation=old.dilation, groups=old.groups, bias=old.bias is not None,
                    padding_mode=old.padding_mode, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        if rgb_start is None:
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        else:
            new.weight.zero_()
            new.weight[:, rgb_start:rgb_start + old.in_channels] = old.weight
        if new.bias is not None:
            new.bias.copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    setattr(parent, name, new)


def _input_channels(inputs: str, num_classes: int) -> int:
    if inputs not in SEG_TO_DEPTH_INPUTS:
        raise ValueError(f"inputs must be one of {SEG_TO_DEPTH_INPUTS}, got {inputs!r}")
    return {"seg": num_classes, "rgb": 3, "seg+rgb": num_classes + 3}[inputs]


def seg_to_depth_input(image: torch.Tensor | None, label: torch.Tensor | None, num_classes: int,
                       inputs: str) -> torch.Tensor:
    """The ``SegToDepth`` input: B×C×H×W with C = num_classes, 3 or num_classes + 3.

    Args:
        image: B×3×H×W normalised RGB (needed unless ``inputs == "seg"``).
        label: B×H×W class ids in 0..num_classes-1, 255 = ignore (needed unless ``inputs == "rgb"``);
            one channel per class, ignore pixels all zero.
        inputs: "seg", "rgb" or "seg+rgb" (concatenated in that order: one-hot, then RGB).
    """
    _input_channels(inputs, num_classes)
    parts = []
    if "seg" in inputs:
        if label is None:
            raise ValueError(f"inputs={inputs!r} needs a label map")
        parts.append(one_hot_labels(label, num_classes))
    if "rgb" in inputs:
        if image is None:
            raise ValueError(f"inputs={inputs!r} needs an image")
        parts.append(image)
    if image is not None:
        parts = [p.to(device=image.device, dtype=image.dtype) for p in parts]
    return torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------- Table 5.5


class SegToDepth(nn.Module):
    """Depth from segmentation and/or RGB (thesis Table 5.5).

    Backbone (a dilated ResNet-50, output stride 8) → ``PyramidPooling`` over its deepest
    tap → 3×3 conv (``head_width``) + BN + ReLU → 1×1 conv to one channel → bilinear
    upsampling to the input size → ``positive_depth``.

    ``forward(x: B×in_channels×H×W)`` → ``{"depth": B×1×H×W metres, "features": {taps…, "ppm"}}``;
    build ``x`` with ``make_input`` / ``seg_to_depth_input``.

    Args:
        backbone: a ResNet or DenseNet backbone (RGB); its first conv is adapted to ``inputs``
            (RGB weights kept for the RGB channels; "seg" alone gets a fresh first conv).
        inputs: "seg" (num_classes one-hot channels), "rgb" (3) or "seg+rgb" (one-hot then RGB).
        num_classes: classes of the one-hot input.
    """

    def __init__(self, backbone: Backbone, *, inputs: str, num_classes: int, bins: tuple[int, ...] = (1, 2, 3, 6),
                 head_width: int = 512) -> None:
        super().__init__()
        self.inputs = inputs
        self.num_classes = num_classes
        self.in_channels = _input_channels(inputs, num_classes)
        adapt_input_channels(backbone, self.in_channels,
                             rgb_start={"seg": None, "rgb": 0, "seg+rgb": num_classes}[inputs])
        self.backbone = backbone
        self.tap = backbone.tap_names[-1]
        self.ppm = PyramidPooling(backbone.tap_channels[self.tap], tuple(bins))
        self.head = nn.Sequential(conv_bn_relu(self.ppm.out_channels, head_width, 3), nn.Conv2d(head_width, 1, 1))

    def make_input(self, image: torch.Tensor | None, label: torch.Tensor | None) -> torch.Tensor:
        """``seg_to_depth_input`` with this model's ``inputs`` and ``num_classes``."""
        return seg_to_depth_input(image, label, self.num_classes, self.inputs)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return _split_params(self, [self.backbone])

    def forward(self, x: torch.Tensor) -> dict:
        taps = self.backbone(x)
        pooled = self.ppm(taps[self.tap])
        depth = positive_depth(_upsample(self.head(pooled), x.shape[-2:]))
        return {"depth": depth, "features": {**taps, "ppm": pooled}}


# ----------------------------------------------------------------------------- §5.5.2


class ZoomOutMultiTask(nn.Module):
    """One zoom-out backbone, two ``ZoomOutHead``s on the same taps: ``seg`` (C logits) and ``depth`` (1).

    Each head is the thesis' 3-layer MLP of 1×1 convs (``hidden`` units) on a 1/``grid_stride``
    grid; outputs are bilinearly upsampled to the input size, depth through ``positive_depth``.

    ``forward(x: B×in_channels×H×W)`` → ``{"seg": B×C×H×W logits, "depth": B×1×H×W metres,
    "features": {taps…}}``.

    Args:
        backbone: any ``Backbone``; with ``in_channels != 3`` (DenseNet/ResNet only) its first
            conv is widened by ``adapt_input_channels`` (RGB first, extras zero-initialised).
        num_classes: C.
        in_channels: channels of ``x``.
        taps: which taps to use (default all).
        grid_stride, hidden, dropout: see ``ZoomOutHead``.
        normalize: both heads normalise the zoom-out features to zero mean and unit variance per
            channel with fixed statistics (thesis §5.4.1, for ImageNet backbones), estimated by
            ``calibrate`` before training; both heads read the same taps, so they share the values.
    """

    def __init__(self, backbone: Backbone, num_classes: int, *, in_channels: int = 3, taps: list[str] | None = None,
                 grid_stride: int = 4, hidden: int = 1000, dropout: float = 0.0, normalize: bool = False) -> None:
        super().__init__()
        if in_channels != 3:
            adapt_input_channels(backbone, in_channels)
        self.backbone = backbone
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.grid_stride = grid_stride
        names = list(taps) if taps is not None else backbone.tap_names
        unknown = [name for name in names if name not in backbone.tap_channels]
        if unknown:
            raise ValueError(f"unknown tap(s) {unknown}; {type(backbone).__name__} has {backbone.tap_names}")
        tap_channels = {name: backbone.tap_channels[name] for name in names}
        self.heads = nn.ModuleDict({
            task: ZoomOutHead(tap_channels, outputs, grid_stride=grid_stride, hidden=hidden, dropout=dropout,
                              normalize=normalize)
            for task, outputs in (("seg", num_classes), ("depth", 1))
        })

    @property
    def normalize(self) -> bool:
        return self.heads["seg"].normalize

    @torch.no_grad()
    def calibrate(self, inputs: Iterable[torch.Tensor]) -> None:
        """Estimate the heads' feature normalisation from batches of inputs (B×in_channels×H×W), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            self.heads["seg"].calibrate((self.backbone(x), grid_size(x.shape[-2:], self.grid_stride), None)
                                        for x in inputs)
        finally:
            self.train(was_training)
        for name in ("feature_mean", "feature_std"):
            getattr(self.heads["depth"], name).copy_(getattr(self.heads["seg"], name))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return _split_params(self, [self.backbone])

    def forward(self, x: torch.Tensor) -> dict:
        size = x.shape[-2:]
        taps = self.backbone(x)
        grid = grid_size(size, self.grid_stride)
        seg = _upsample(self.heads["seg"](taps, grid), size)
        depth = positive_depth(_upsample(self.heads["depth"](taps, grid), size))
        return {"seg": seg, "depth": depth, "features": dict(taps)}


class TwoPartModel(nn.Module):
    """The two-part joint depth + segmentation model (thesis §5.5.2.1).

    Part one (a ``ZoomOutMultiTask`` on RGB) predicts depth and segmentation; part two (a
    ``ZoomOutMultiTask`` with 4 + C input channels) reads, concatenated along channels:

    - channels 0:3 — the normalised RGB image ``x``;
    - channel 3 — part one's depth, as ``log(depth)`` (``depth_input="log"``, default: NYUv2's
      0.5–10 m become about −0.7…2.3, a range like normalised RGB's, and relative depth
      errors become additive) or ``depth / 10`` (``"scaled"``);
    - channels 4: — ``softmax`` of part one's segmentation logits (already at input size).

    Part one's outputs are *not* detached: the losses on part two train part one too — except
    that for depth-only images (``forward(x, labeled)`` with ``labeled[i]`` False) part one's
    class probabilities are detached, so that with the segmentation losses (all-ignore labels,
    zero) no term of such an image reaches either segmentation head: thesis §5.5.2, "we freeze
    segmentation head and only backpropagate through the depth head and the shared model".
    Their depth still flows back through part one's depth head and both backbones. Samples are
    independent only without training-mode BatchNorm (``freeze_bn``, §3.5.1): batch statistics
    couple them otherwise.
    Training supervises all four outputs (§5.5.2.1: four losses). The single-part baseline of Table 5.6
    is this same model supervised only on ``seg`` / ``depth`` (part two) — a loss choice,
    not a different network.

    ``forward(x: B×3×H×W)`` → ``{"seg", "depth"`` (part two), ``"part1_seg", "part1_depth",
    "features": {part two's taps…, "part1_<tap>"…, "part2_input": B×(4+C)×H×W}}``.
    """

    def __init__(self, part1: ZoomOutMultiTask, part2: ZoomOutMultiTask, *, depth_input: str = "log") -> None:
        super().__init__()
        if depth_input not in DEPTH_INPUT_TRANSFORMS:
            raise ValueError(f"depth_input must be one of {DEPTH_INPUT_TRANSFORMS}, got {depth_input!r}")
        if part1.in_channels != 3:
            raise ValueError(f"part one reads RGB (3 channels), not {part1.in_channels}")
        if part2.num_classes != part1.num_classes or part2.in_channels != 4 + part1.num_classes:
            raise ValueError(f"part two must have {part1.num_classes} classes and 4 + {part1.num_classes} inputs, "
                             f"got {part2.num_classes} and {part2.in_channels}")
        self.part1 = part1
        self.part2 = part2
        self.depth_input = depth_input
        self.num_classes = part1.num_classes

    def depth_feature(self, depth: torch.Tensor) -> torch.Tensor:
        """Part one's B×1×H×W depth (metres) as fed to part two."""
        return depth.log() if self.depth_input == "log" else depth / 10.0

    def part2_input(self, x: torch.Tensor, depth: torch.Tensor, seg_logits: torch.Tensor,
                    labeled: torch.Tensor | None = None) -> torch.Tensor:
        """[RGB, depth feature, class probabilities] → B×(4+C)×H×W.

        ``labeled`` (B bool, optional): the class probabilities of samples marked False are
        detached, so nothing computed from them downstream reaches part one's segmentation head
        (thesis §5.5.2: for depth-only images the segmentation head is frozen). The values are
        the same either way; None treats every sample as labeled.
        """
        probabilities = seg_logits.softmax(dim=1)
        if labeled is not None:
            keep = labeled.to(device=probabilities.device, dtype=torch.bool).view(-1, 1, 1, 1)
            probabilities = torch.where(keep, probabilities, probabilities.detach())
        parts = [x, self.depth_feature(depth), probabilities]
        dtype = autocast_dtype(x.device.type)
        if dtype is not None:
            # under autocast the float32 image and depth (see positive_depth) would promote the whole
            # B×(4+C)×H×W concatenation to float32; part two's first conv casts it to ``dtype`` anyway
            parts = [part.to(dtype) if part.dtype != torch.float64 else part for part in parts]
        return torch.cat(parts, dim=1)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return _split_params(self, [self.part1.backbone, self.part2.backbone])

    @property
    def normalize(self) -> bool:
        return self.part1.normalize or self.part2.normalize

    @torch.no_grad()
    def calibrate(self, images: list[torch.Tensor]) -> None:
        """Estimate both parts' feature normalisation from batches of normalised images (thesis §5.4.1):
        part one from the images, then part two from its inputs built with the calibrated part one."""
        was_training = self.training
        self.eval()
        try:
            self.part1.calibrate(images)

            def part2_inputs():
                for x in images:
                    first = self.part1(x)
                    yield self.part2_input(x, first["depth"], first["seg"])

            self.part2.calibrate(part2_inputs())
        finally:
            self.train(was_training)

    def forward(self, x: torch.Tensor, labeled: torch.Tensor | None = None) -> dict:
        """``labeled``: optional B bool, False for depth-only images (see ``part2_input``); None = all labeled."""
        first = self.part1(x)
        second_input = self.part2_input(x, first["depth"], first["seg"], labeled)
        second = self.part2(second_input)
        features = {**second["features"], **{f"part1_{k}": v for k, v in first["features"].items()},
                    "part2_input": second_input}
        return {"seg": second["seg"], "depth": second["depth"], "part1_seg": first["seg"],
                "part1_depth": first["depth"], "features": features}


# ----------------------------------------------------------------------------- builders


def seg_to_depth(*, inputs: str, num_classes: int, pretrained_backbone: Any = None, freeze_bn: bool = False,
                 backbone: str = "resnet50", output_stride: int | None = 8,
                 backbone_options: Mapping[str, Any] | None = None) -> SegToDepth:
    """Table 5.5's model: dilated ResNet-50 (output stride 8) + pyramid pooling → depth.

    ``output_stride`` is passed to the backbone builder (set ``None`` for backbones without one,
    e.g. DenseNets); ``backbone_options`` are further backbone-builder keywords.
    """
    options = dict(backbone_options or {})
    if output_stride is not None:
        options["output_stride"] = output_stride
    net = build_backbone(backbone, pretrained=pretrained_backbone, freeze_bn=freeze_bn, **options)
    return SegToDepth(net, inputs=inputs, num_classes=num_classes)


def twopart_densenet121(*, num_classes: int, pretrained_backbone: Any = None, freeze_bn: bool = False,
                        hidden: int = 1000, grid_stride: int = 4, backbone: str = "densenet121",
                        backbone_options: Mapping[str, Any] | None = None, depth_input: str = "log",
                        normalize: bool = False) -> TwoPartModel:
    """§5.5.2.1's two-part model: two zoom-out DenseNet-121s (grid 1/4, 1000 hidden), both
    starting from ``pretrained_backbone``; part two's extra input channels start at zero.
    ``normalize``: fixed zoom-out feature normalisation in all four heads (``TwoPartModel.calibrate``)."""
    def part(in_channels: int) -> ZoomOutMultiTask:
        net = build_backbone(backbone, pretrained=pretrained_backbone, freeze_bn=freeze_bn,
                             **dict(backbone_options or {}))
        return ZoomOutMultiTask(net, num_classes, in_channels=in_channels, grid_stride=grid_stride, hidden=hidden,
                                normalize=normalize)

    return TwoPartModel(part(3), part(4 + num_classes), depth_input=depth_input)


DEPTH_MODELS: dict[str, Callable[..., nn.Module]] = {
    "seg2depth_resnet50": seg_to_depth,
    "twopart_densenet121": twopart_densenet121,
}


def build_depth_model(name: str, **options: Any) -> nn.Module:
    """Build ``DEPTH_MODELS[name](**options)`` (options: the builder's keywords)."""
    if name not in DEPTH_MODELS:
        raise ValueError(f"unknown depth model {name!r}; available: {', '.join(sorted(DEPTH_MODELS))}")
    return DEPTH_MODELS[name](**options)
