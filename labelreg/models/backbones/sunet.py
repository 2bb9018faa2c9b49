"""Stacked U-Nets (SUNets): classifiers, dilated backbones with named taps, de-gridding head.

Follows the SUNet paper (Shah et al., "Stacked U-Nets": Table 1, §3.1, §4, §5) and,
where it is silent, the structure of its official code.

Structure
---------
* Pre-activation everywhere: every convolution is preceded by BatchNorm + ReLU
  and has a bias (the BN in front normalises the conv's *input*, so the bias is
  not redundant).
* :class:`UNetModule` (Figure 1): BN+ReLU → 1×1 conv to width N → ``levels``
  down levels (3×3 conv stride 2, 3×3 conv) → ``levels`` up levels (3×3
  transposed conv stride 2, 3×3 conv; below the top level the result is
  concatenated with that level's down input, so 2N channels enter the next up
  level) → 1×1 conv to O, added to the module input (through a 1×1 conv on the
  activated input when M ≠ O, as in pre-activation ResNets).
* :class:`SUNet`: 7×7 conv stride 2 (3→64) → pre-activation residual block
  64→128 stride 2 → four blocks of (2, d, d, 1) U-Net modules with 2×2 average
  pooling between blocks → BN, ReLU → global average pool → FC.

Odd sizes
---------
Every stride-2 operation maps a size h to ⌈h/2⌉ (7×7/3×3 convs with padding
3/1, 1×1 stride-2 shortcut, ``AvgPool2d(2, 2, ceil_mode=True)`` whose partial
last window averages only the real elements), so a tap of nominal stride s is
⌈H/s⌉×⌈W/s⌉, e.g. 97×129 → 25×33 (s=4), 13×17 (8), 7×9 (16), 4×5 (32).
Inside a module each transposed conv is told the exact size of the skip it
joins (``output_size=``), so a module's output always has its input's size.

Dilation (multigrid, SUNet paper §5.1, §5.2)
--------------------------------------------
In a module with dilation a > 1 nothing is strided; level i (i = 0 is the
outermost level, E1/D1 in Figure 1) uses dilations

    down conv a·2^i, second down conv 2a·2^i, up (transposed, stride 1) conv 2a·2^i, second up conv a·2^i,

with padding = dilation, so sizes are preserved. Reading: i starts at 0, so for
block 3 (a = 2) the 3×3 layers run at 2, 4 (E1) · 4, 8 (E2) · 8, 4 (D2) · 4, 2
(D1). The inset of the paper's Figure 2 (block 3) lists 1, 2, 4, 8, 8, 4, 4, 2:
the undilated 1×1, then 2 = a for E1's first conv and a peak of 8 = 2a·2¹; were
i to start at 1, the first 3×3 would be at 2a = 4 and the peak at 16. It also
makes each conv's dilation a times its sampling step in the strided module
(E1's first conv reads full resolution → a, its second half resolution → 2a, …),
which is the stated purpose of multigrid, and matches "the u-net+ [block 4,
a = 4] dilation is twice that of the corresponding layers in block 3". The 1×1 convs are never
dilated. a = 1 means the ordinary strided module.

Output stride 16 drops the pooling before block 4 and runs block 4 at a = 2;
output stride 8 drops the pooling before blocks 3 and 4 and runs them at
a = 2 and a = 4. Parameter shapes do not depend on the output stride, so a
classifier trained at OS 32 loads into a backbone at any output stride.

Parameter counts (1000 classes; trainable parameters incl. BN affine and FC;
BN running statistics are buffers and not counted)
------------------------------------------------------------------------------
SUNet-64: 6,910,248 (paper 6.9M, +0.1%); SUNet-128: 24,704,360 (paper 24.6M,
+0.4%); SUNet-7-128: 39,113,832 (paper 37.7M, +3.7%). Parts of SUNet-64: stem
conv 9,472; residual block 230,144; blocks 758,912 / 1,717,504 / 2,114,048 /
1,053,120; final BN 2,048; FC 1,025,000. The SUNet-7-128 gap is the paper's, not
a structural difference: its 37.7M (Tables 1–2) and the 35.4M it quotes for the
OS-16 segmentation model (§6.2.2, no FC) are both reproduced exactly by block
outputs 512/1280/**1792**/2304 (37,731,944 and 35,426,944), whereas Table 1 and
the official code give 2048 for block 3. We follow Table 1 (2048); ``SUNet(128, 7,
(512, 1280, 1792, 2304))`` builds the variant the paper evidently counted.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from labelreg.models.backbones.common import Backbone, freeze_batchnorm

__all__ = [
    "UNetModule", "PreActResidualBlock", "SUNet", "SUNetBackbone", "DegriddingHead",
    "sunet64", "sunet128", "sunet7128",
    "sunet64_backbone", "sunet128_backbone", "sunet7128_backbone",
    "SUNET_CLASSIFIERS", "SUNET_BACKBONES",
]

# Modules per block is (2, d, d, 1); levels per module is 2 except the 1-level "u-net+" of block 4.
BLOCK_LEVELS = (2, 2, 2, 1)
STEM_CHANNELS = 64
RESIDUAL_CHANNELS = 128


class PreActConv(nn.Module):
    """BN → ReLU → conv (or transposed conv): the unit every SUNet layer is made of.

    B×C_in×H×W → B×C_out×H'×W'. A transposed conv takes ``output_size`` so its
    output matches the skip it joins exactly (odd sizes are ambiguous otherwise).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, transposed: bool = False) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        conv_type = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, bias=True)

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        x = self.relu(self.norm(x))
        if isinstance(self.conv, nn.ConvTranspose2d):
            return self.conv(x, output_size=list(output_size) if output_size is not None else None)
        return self.conv(x)


class _DownLevel(nn.Module):
    """Encoder level: 3×3 conv (stride 2, or stride 1 dilated) then 3×3 conv.

    B×N×h×w → B×N×⌈h/2⌉×⌈w/2⌉ (strided) or B×N×h×w (dilated).
    """

    def __init__(self, width: int, *, dilation: int, level: int) -> None:
        super().__init__()
        if dilation == 1:
            self.conv1 = PreActConv(width, width, 3, stride=2)
            self.conv2 = PreActConv(width, width, 3)
        else:
            step = 2 ** level
            self.conv1 = PreActConv(width, width, 3, dilation=dilation * step)
            self.conv2 = PreActConv(width, width, 3, dilation=2 * dilation * step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _UpLevel(nn.Module):
    """Decoder level: 3×3 transposed conv (stride 2, or stride 1 dilated) then 3×3 conv.

    B×C_in×h×w → B×N×output_size (the size of the skip this level's output joins).
    """

    def __init__(self, in_channels: int, width: int, *, dilation: int, level: int) -> None:
        super().__init__()
        if dilation == 1:
            self.deconv = PreActConv(in_channels, width, 3, stride=2, transposed=True)
            self.conv = PreActConv(width, width, 3)
        else:
            step = 2 ** level
            self.deconv = PreActConv(in_channels, width, 3, dilation=2 * dilation * step, transposed=True)
            self.conv = PreActConv(width, width, 3, dilation=dilation * step)

    def forward(self, x: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
        return self.conv(self.deconv(x, output_size=output_size))


class UNetModule(nn.Module):
    """One u-net module with outer residual connection (SUNet paper Figure 1, §3.1).

    Args:
        in_channels: M, channels of the input.
        width: N, channels of every inner layer.
        levels: L, number of down/up levels (2, or 1 for the "u-net+" of block 4).
        out_channels: O, channels of the output.
        dilation: a; 1 for the strided module, > 1 for the multigrid-dilated one (see module docstring).

    Shape: B×M×H×W → B×O×H×W for any H, W.
    """

    def __init__(self, in_channels: int, width: int, levels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"a u-net module needs at least one level, got {levels}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.in_channels, self.width, self.levels, self.out_channels = in_channels, width, levels, out_channels
        self.dilation = dilation
        # The input's BN+ReLU is shared by the 1×1 reduction and (when M ≠ O) the projection shortcut,
        # as in pre-activation ResNets; with M = O the shortcut is the identity on the raw input.
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.reduce = nn.Conv2d(in_channels, width, 1, bias=True)
        self.down = nn.ModuleList(_DownLevel(width, dilation=dilation, level=i) for i in range(levels))
        # The deepest up level sees the deepest down output (N channels); the others see the up output
        # concatenated with that level's down input (2N).
        self.up = nn.ModuleList(
            _UpLevel(width if i == levels - 1 else 2 * width, width, dilation=dilation, level=i) for i in range(levels))
        self.expand = PreActConv(width, out_channels, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=True) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu(self.norm(x))  # in place on the BN output; the raw x stays intact for the sum
        h = self.reduce(activated)
        skips = [h]  # skips[i]: the input of down level i (B×N at level i's resolution)
        for level in self.down:
            h = level(h)
            skips.append(h)
        for i in reversed(range(self.levels)):
            h = self.up[i](h, output_size=skips[i].shape[-2:])
            if i > 0:
                h = torch.cat([h, skips[i]], dim=1)
        identity = x if self.shortcut is None else self.shortcut(activated)
        return self.expand(h) + identity

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, width={self.width}, levels={self.levels}, "
                f"out_channels={self.out_channels}, dilation={self.dilation}")


class PreActResidualBlock(nn.Module):
    """Pre-activation residual block replacing the max-pool (Table 1): B×C_in×H×W → B×C_out×⌈H/s⌉×⌈W/s⌉.

    BN+ReLU → 3×3 conv stride s → BN+ReLU → 3×3 conv, plus a 1×1 stride-s conv shortcut on the activated input.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 2) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=True)
        self.conv2 = PreActConv(out_channels, out_channels, 3)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu(self.norm(x))
        return self.conv2(self.conv1(activated)) + self.shortcut(activated)


def _pool(keep: bool) -> nn.Module:
    # ceil_mode so odd sizes give ⌈h/2⌉; with no padding the partial window averages only real pixels.
    return nn.AvgPool2d(2, stride=2, ceil_mode=True) if keep else nn.Identity()


def _block_dilations(output_stride: int) -> tuple[int, int, int, int]:
    """Dilation a of the modules of blocks 1–4 for an output stride (SUNet paper §5.1, §5.2)."""
    table = {32: (1, 1, 1, 1), 16: (1, 1, 1, 2), 8: (1, 1, 2, 4)}
    if output_stride not in table:
        raise ValueError(f"output_stride must be one of {sorted(table)}, got {output_stride}")
    return table[output_stride]


class SUNet(nn.Module):
    """Stacked U-Net classifier (Table 1) that also exposes its multi-scale taps.

    Args:
        width: N, width of every u-net module.
        depth: d, modules in blocks 2 and 3 (blocks 1 and 4 have 2 and 1).
        block_outputs: output channels of blocks 1–4.
        num_classes: size of the FC classifier; ``None`` builds no FC (backbone use).
        output_stride: 32, 16 or 8 (dilated SUNet, §5).

    ``forward``: B×3×H×W → {"logits": B×num_classes}.
    ``forward_taps``: B×3×H×W → {"stem", "block1", …, "block4"} (see :attr:`tap_channels`,
    :attr:`tap_strides`); "block4" is after the final BN+ReLU, the others are the raw
    (pre-activation) residual streams, which the next layer normalises itself.
    """

    def __init__(self, width: int, depth: int, block_outputs: Sequence[int], *, num_classes: int | None = 1000,
                 output_stride: int = 32) -> None:
        super().__init__()
        if len(block_outputs) != 4:
            raise ValueError(f"block_outputs needs 4 widths, got {block_outputs}")
        dilations = _block_dilations(output_stride)
        modules_per_block = (2, depth, depth, 1)
        self.output_stride = output_stride

        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3, bias=True)
        self.residual = PreActResidualBlock(STEM_CHANNELS, RESIDUAL_CHANNELS, stride=2)
        in_channels, stride = RESIDUAL_CHANNELS, 4
        channels, strides = {"stem": in_channels}, {"stem": stride}
        for b in range(4):
            name = f"block{b + 1}"
            if b > 0:
                keep_pool = dilations[b] == 1  # a dilated block replaces its preceding pooling
                setattr(self, f"pool{b + 1}", _pool(keep_pool))
                stride *= 2 if keep_pool else 1
            out = block_outputs[b]
            setattr(self, name, nn.Sequential(*(
                UNetModule(in_channels if k == 0 else out, width, BLOCK_LEVELS[b], out, dilations[b])
                for k in range(modules_per_block[b]))))
            channels[name], strides[name] = out, stride
            in_channels = out
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(in_channels, num_classes) if num_classes is not None else None
        self.tap_channels: dict[str, int] = channels
        self.tap_strides: dict[str, int] = strides
        self.num_features = in_channels
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. (2015) initialisation, as in the paper's appendix A.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps: dict[str, torch.Tensor] = OrderedDict()
        x = self.residual(self.conv1(x))
        taps["stem"] = x
        x = self.block1(x)
        taps["block1"] = x
        x = self.block2(self.pool2(x))
        taps["block2"] = x
        x = self.block3(self.pool3(x))
        taps["block3"] = x
        x = self.block4(self.pool4(x))
        taps["block4"] = self.relu(self.norm(x))
        return taps

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.fc is None:
            raise RuntimeError("this SUNet was built without a classifier (num_classes=None); use forward_taps")
        features = self.forward_taps(x)["block4"].mean(dim=(2, 3))
        return {"logits": self.fc(features)}


class SUNetBackbone(Backbone):
    """A :class:`SUNet` without its FC as a zoom-out / segmentation backbone.

    Taps "stem" (stride 4, 128 ch), "block1" (4), "block2" (8), "block3" (16; 8 at OS 8),
    "block4" (32 / 16 / 8 at OS 32 / 16 / 8, after the final BN+ReLU); each B×C×⌈H/s⌉×⌈W/s⌉.
    The network sits under ``body`` with the classifier's module names, so a classifier's
    state dict (or a training checkpoint {"model": state_dict, ...}) loads into ``body``
    with only the ``fc.`` keys ignored. ``freeze_bn`` freezes BN *after* loading so the
    frozen statistics are the pretrained ones.
    """

    ignored_pretrained_prefixes = ("fc.",)

    def __init__(self, width: int, depth: int, block_outputs: Sequence[int], *, output_stride: int = 32,
                 pretrained: str | Path | Mapping[str, Any] | None = None, freeze_bn: bool = False) -> None:
        super().__init__()
        self.body = SUNet(width, depth, block_outputs, num_classes=None, output_stride=output_stride)
        self.output_stride = output_stride
        self.tap_channels = dict(self.body.tap_channels)
        self.tap_strides = dict(self.body.tap_strides)
        self.global_channels = self.body.num_features
        if pretrained is not None:
            self.load_pretrained(pretrained)
        if freeze_bn:
            freeze_batchnorm(self)

    def pretrained_target(self) -> nn.Module:
        return self.body

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body.forward_taps(x)


class DegriddingHead(nn.Sequential):
    """De-gridding layers + classifier for OS-8 SUNets (SUNet paper §5.3).

    3×3 conv dilation 2 → 512, BN, ReLU; 3×3 conv dilation 1 → 512, BN, ReLU; 1×1 conv → classes.
    B×C×h×w → B×num_classes×h×w. The 3×3 convs have no bias (the BN right after them makes it redundant).
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 512) -> None:
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, width, 3, padding=2, dilation=2, bias=False)),
            ("norm1", nn.BatchNorm2d(width)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(width, width, 3, padding=1, bias=False)),
            ("norm2", nn.BatchNorm2d(width)),
            ("relu2", nn.ReLU(inplace=True)),
            ("classifier", nn.Conv2d(width, num_classes, 1)),
        ]))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.classifier.bias)


# name: (width N, depth d, block outputs)
_CONFIGS: dict[str, tuple[int, int, tuple[int, int, int, int]]] = {
    "sunet64": (64, 4, (256, 512, 768, 1024)),
    "sunet128": (128, 4, (512, 1024, 1536, 2048)),
    "sunet7128": (128, 7, (512, 1280, 2048, 2304)),
}


def sunet64(*, num_classes: int = 1000, output_stride: int = 32) -> SUNet:
    """SUNet-64 classifier (N=64, d=4; 6.9M parameters with 1000 classes)."""
    return SUNet(*_CONFIGS["sunet64"], num_classes=num_classes, output_stride=output_stride)


def sunet128(*, num_classes: int = 1000, output_stride: int = 32) -> SUNet:
    """SUNet-128 classifier (N=128, d=4; 24.7M parameters with 1000 classes, paper: 24.6M)."""
    return SUNet(*_CONFIGS["sunet128"], num_classes=num_classes, output_stride=output_stride)


def sunet7128(*, num_classes: int = 1000, output_stride: int = 32) -> SUNet:
    """SUNet-7-128 classifier (N=128, d=7; 39.1M parameters with 1000 classes, paper: 37.7M, see module doc)."""
    return SUNet(*_CONFIGS["sunet7128"], num_classes=num_classes, output_stride=output_stride)


def sunet64_backbone(*, output_stride: int = 32, pretrained: str | Path | Mapping[str, Any] | None = None,
                     freeze_bn: bool = False) -> SUNetBackbone:
    """SUNet-64 backbone; ``pretrained`` is a classifier checkpoint (path or state dict) or None."""
    return SUNetBackbone(*_CONFIGS["sunet64"], output_stride=output_stride, pretrained=pretrained,
                         freeze_bn=freeze_bn)


def sunet128_backbone(*, output_stride: int = 32, pretrained: str | Path | Mapping[str, Any] | None = None,
                      freeze_bn: bool = False) -> SUNetBackbone:
    """SUNet-128 backbone; ``pretrained`` is a classifier checkpoint (path or state dict) or None."""
    return SUNetBackbone(*_CONFIGS["sunet128"], output_stride=output_stride, pretrained=pretrained,
                         freeze_bn=freeze_bn)


def sunet7128_backbone(*, output_stride: int = 32, pretrained: str | Path | Mapping[str, Any] | None = None,
                       freeze_bn: bool = False) -> SUNetBackbone:
    """SUNet-7-128 backbone; ``pretrained`` is a classifier checkpoint (path or state dict) or None."""
    return SUNetBackbone(*_CONFIGS["sunet7128"], output_stride=output_stride, pretrained=pretrained,
                         freeze_bn=freeze_bn)


SUNET_CLASSIFIERS: dict[str, Callable[..., SUNet]] = {
    "sunet64": sunet64, "sunet128": sunet128, "sunet7128": sunet7128,
}
SUNET_BACKBONES: dict[str, Callable[..., SUNetBackbone]] = {
    "sunet64": sunet64_backbone, "sunet128": sunet128_backbone, "sunet7128": sunet7128_backbone,
}
