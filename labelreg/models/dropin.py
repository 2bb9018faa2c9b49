"""The label-structure regularizer as a drop-in for any segmenter (thesis §5.3.3, §5.4).

``regularize(segmenter, autoencoder)`` adds phase two's auxiliary branch to an arbitrary
``nn.Module`` — a torchvision DeepLabV3/FCN/LR-ASPP, a U-Net of one's own — without editing it:
a forward hook reads the feature map of one named module (the *tap*), a new 1×1 conv predicts
the phase-one decoder's input (the label code, 1/16 of the image) from it, and the frozen
decoder turns that prediction into an auxiliary segmentation (thesis Fig. 5.1). As in
``DecoderRegularized``: the decoder gets no parameter updates and its BatchNorm keeps phase one's
running statistics (eval mode, also while the wrapper trains), yet gradients flow through it
into the tapped module and everything below it. At any H×W a code cell covers the 16×16 pixels it
covers in phase one: the tap is put on the code grid by ``align_to_code_grid`` (cell for cell at 1/16,
edge-padded where the backbone rounded down; resampled with cell centres matched at another stride)
and the decoded map is cropped to the input's size, not resized.

The hook is registered for the duration of each forward only, so the user's model is never
changed: same class, same state-dict keys, same outputs, no hooks left behind. ``export()``
hands it back once training is done (the branch exists only to shape the features, §5.3.3).

Default tap: the deepest module whose output is a B×C×⌈H/16⌉×⌈W/16⌉ tensor — "selected because
its spatial resolution matches that of the expected decoder input" (§5.3.3) — found by one
probing forward; "deepest" is the last to finish in execution order. Dilated networks (output
stride 8, e.g. torchvision's DeepLabV3 and FCN) have nothing at 1/16; the error then lists the
candidates per stride, and a tap given explicitly (for DeepLabV3 its ASPP output
``classifier.0``, the counterpart of PSPNet's pyramid pooling that §5.4.2 reads) is resampled
onto the code grid.
"""
from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labelreg.losses import masked_cross_entropy, masked_one_hot_mse
from labelreg.models.autoencoder import DOWNSAMPLING, LabelAutoencoder, autoencoder_from_checkpoint
from labelreg.models.regularizer import align_to_code_grid
from labelreg.storage import load_checkpoint

PROBE_SIZE = (64, 96)  # small (one cheap forward) and H ≠ W, so a transposed map cannot pass for the code's grid
LOSSES = ("ce", "mse")


def code_size(height: int, width: int) -> tuple[int, int]:
    """The decoder input's grid for an H×W image: ⌈H/16⌉×⌈W/16⌉."""
    return math.ceil(height / DOWNSAMPLING), math.ceil(width / DOWNSAMPLING)


def as_autoencoder(autoencoder: LabelAutoencoder | str | Path) -> LabelAutoencoder:
    """A ``LabelAutoencoder`` as given, or the one in a phase-one (``labelreg train-ae``) checkpoint file."""
    if isinstance(autoencoder, LabelAutoencoder):
        return autoencoder
    if isinstance(autoencoder, (str, Path)):
        return autoencoder_from_checkpoint(load_checkpoint(autoencoder), str(autoencoder))
    raise TypeError(f"autoencoder must be a LabelAutoencoder or a phase-one checkpoint path, "
                    f"got {type(autoencoder).__name__}")


def _describe(output: Any) -> str:
    if torch.is_tensor(output):
        return f"a {output.dim()}-D tensor of shape {tuple(output.shape)}"
    return f"a value of type {type(output).__name__}"


@torch.no_grad()
def probe_modules(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, Any]], Any]:
    """One eval-mode forward of ``model`` on ``example``: every named submodule's output in the order the
    modules finished (a container after its children), and the model's own output."""
    finished: list[tuple[str, Any]] = []
    handles = [module.register_forward_hook(lambda _module, _inputs, output, name=name: finished.append((name, output)))
               for name, module in model.named_modules() if name]
    was_training = model.training
    model.eval()
    try:
        output = model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return finished, output


def _stride(size: tuple[int, int], shape: torch.Size) -> str:
    """Nominal output stride of a feature map, e.g. ``1/16`` (``~`` for a map off every power of two)."""
    ratio = size[0] / shape[-2]
    nearest = 2 ** round(math.log2(ratio)) if ratio > 0 else 0
    if nearest and tuple(shape[-2:]) == (math.ceil(size[0] / nearest), math.ceil(size[1] / nearest)):
        return f"1/{nearest}"
    return f"~1/{ratio:.3g}"


def tap_stride(size: tuple[int, int], shape: torch.Size) -> tuple[float, float]:
    """Pixels per cell of a feature map of ``shape`` for an H×W ``size`` input, per axis: the power of two
    whose rounded-up or rounded-down grid the map has (16 for a 1/16 map at any size), else the plain ratio."""
    strides = []
    for pixels, cells in zip(size, shape[-2:]):
        nearest = 2 ** round(math.log2(pixels / cells))
        strides.append(float(nearest) if cells in (pixels // nearest, -(-pixels // nearest)) else pixels / cells)
    return strides[0], strides[1]


def candidate_summary(finished: list[tuple[str, Any]], size: tuple[int, int], per_stride: int = 10) -> str:
    """A few modules with a B×C×h×w output per stride, deepest stride first; per stride the outermost
    names (fewest dots) first, deepest first among equals. Global (1×1) outputs are left out."""
    by_stride: dict[str, list[str]] = {}
    for name, output in reversed(finished):
        if torch.is_tensor(output) and output.dim() == 4 and tuple(output.shape[-2:]) != (1, 1):
            names = by_stride.setdefault(_stride(size, output.shape), [])
            if name not in names:
                names.append(name)
    lines = []
    for stride, names in by_stride.items():
        shown = sorted(names, key=lambda name: (name.count("."), names.index(name)))[:per_stride]
        lines.append(f"  {stride}: {', '.join(shown)}{' …' if len(names) > per_stride else ''}")
    return "\n".join(lines) if lines else "  (no module returns a B×C×h×w tensor)"


def choose_tap(model: nn.Module, finished: list[tuple[str, Any]], size: tuple[int, int], tap: str | None) -> str:
    """``tap`` checked against the model's modules, or the deepest module at 1/16 (see the module docstring)."""
    modules = dict(model.named_modules())
    if tap is not None:
        if tap not in modules or not tap:
            names = [name for name in modules if name]
            prefix = tap.rsplit(".", 1)[0] if "." in tap else ""
            nearby = difflib.get_close_matches(tap, names, n=6, cutoff=0.5)
            nearby += [name for name in names if prefix and name.startswith(prefix + ".") and name.count(".") ==
                       tap.count(".") and name not in nearby][:6]
            raise ValueError(f"tap={tap!r} is not a module of this {type(model).__name__}; nearby names: "
                             f"{', '.join(nearby) or '(none)'} (all names: dict(model.named_modules()))")
        outputs = [output for name, output in finished if name == tap]
        if not outputs:
            raise ValueError(f"tap={tap!r} did not run in a forward pass of this {type(model).__name__}")
        if not (torch.is_tensor(outputs[-1]) and outputs[-1].dim() == 4):
            raise ValueError(f"tap={tap!r} returns {_describe(outputs[-1])}, not a B×C×h×w feature map; tap one of "
                             f"its submodules. Candidates (deepest first, by stride):\n"
                             f"{candidate_summary([(n, o) for n, o in finished if n.startswith(tap + '.')], size)}")
        return tap
    grid = code_size(*size)
    at_code = [name for name, output in finished
               if torch.is_tensor(output) and output.dim() == 4 and tuple(output.shape[-2:]) == grid]
    if not at_code:
        raise ValueError(f"no module of this {type(model).__name__} returns a feature map at 1/16 of the input "
                         f"({grid[0]}×{grid[1]} for a {size[0]}×{size[1]} probe), the decoder input's resolution; "
                         f"pass tap=NAME (a map at another stride is resampled onto the 1/16 code grid). Candidates "
                         f"(deepest first, by stride):\n{candidate_summary(finished, size)}")
    return at_code[-1]


def _output_channels(output: Any) -> int | None:
    """Class count of a segmenter's output: a B×C×H×W tensor, or the ``"out"``/``"seg"`` entry of a dict."""
    if isinstance(output, dict):
        output = output.get("out", output.get("seg"))
    return output.shape[1] if torch.is_tensor(output) and output.dim() == 4 else None


class RegularizedSegmenter(nn.Module):
    """``forward(x)`` → ``(output, aux)``: the segmenter's own output, untouched (a tensor, torchvision's
    ``{"out", "aux"}`` dict, …), and the auxiliary segmentation through the frozen decoder, B×C×H×W logits
    at the input's size. ``loss(aux, target)`` is the weighted auxiliary term; ``export()`` returns the
    segmenter. Built by ``regularize``; state-dict keys: ``segmenter.*``, ``to_code.*``, ``decoder.*``."""

    def __init__(self, segmenter: nn.Module, autoencoder: LabelAutoencoder, *, tap: str | None = None,
                 weight: float = 0.5, loss: str = "ce", frozen: bool = True,
                 example_input: torch.Tensor | None = None) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}; choose one of {LOSSES}")
        if not isinstance(segmenter, nn.Module):
            raise TypeError(f"segmenter must be an nn.Module, got {type(segmenter).__name__}")
        parameter = next(segmenter.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
        example = example_input if example_input is not None else torch.zeros(1, 3, *PROBE_SIZE, device=device,
                                                                               dtype=dtype)
        size = tuple(example.shape[-2:])
        finished, output = probe_modules(segmenter, example)
        self.tap = choose_tap(segmenter, finished, size, tap)
        classes = _output_channels(output)
        if classes is not None and classes != autoencoder.num_classes:
            raise ValueError(f"the segmenter predicts {classes} classes, the autoencoder's decoder "
                             f"{autoencoder.num_classes}")
        tap_output = [o for name, o in finished if name == self.tap][-1]
        channels = tap_output.shape[1]
        self.tap_stride = tap_stride(size, tap_output.shape)
        self.segmenter = segmenter
        self.num_classes = autoencoder.num_classes
        self.weight = float(weight)
        self.loss_kind = loss
        self.frozen = frozen
        self.to_code = nn.Conv2d(channels, autoencoder.code_channels, 1).to(device=device, dtype=dtype)
        self.decoder = copy.deepcopy(autoencoder.decoder).to(device=device, dtype=dtype)  # the caller's stays as is
        if frozen:
            for p in self.decoder.parameters():
                p.requires_grad_(False)
        self.train(segmenter.training)

    def train(self, mode: bool = True) -> "RegularizedSegmenter":
        super().train(mode)
        if self.frozen:
            self.decoder.eval()  # BatchNorm keeps phase one's running statistics (§5.3.3: the decoder is fixed)
        return self

    def _run(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(segmenter output, auxiliary logits at the input's size, predicted code)."""
        grid = code_size(*x.shape[-2:])
        codes: list[torch.Tensor] = []

        def read_tap(_module: nn.Module, _inputs: Any, feature: Any) -> None:
            if not (torch.is_tensor(feature) and feature.dim() == 4):
                raise RuntimeError(f"tap {self.tap!r} returned {_describe(feature)}, not a B×C×h×w feature map")
            aligned = align_to_code_grid(feature, self.tap_stride, grid)
            if aligned.untyped_storage().data_ptr() == feature.untyped_storage().data_ptr():
                # a copy, so a later in-place op on the feature (e.g. a ReLU(inplace=True)) cannot change it
                aligned = aligned.clone()
            codes[:] = [self.to_code(aligned)]  # a module run twice: its last output counts

        handle = self.segmenter.get_submodule(self.tap).register_forward_hook(read_tap)
        try:
            output = self.segmenter(x, *args, **kwargs)
        finally:
            handle.remove()
        if not codes:
            raise RuntimeError(f"tap {self.tap!r} did not run in this forward pass")
        code = codes[0]
        # contiguous, as the wrapped model's own outputs: a user's loss may .view() it
        aux = self.decoder.decode_to(code, x.shape[-2:]).contiguous()
        return output, aux, code

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, torch.Tensor]:
        output, aux, _ = self._run(x, *args, **kwargs)
        return output, aux

    def loss(self, aux: torch.Tensor | tuple, target: torch.Tensor) -> torch.Tensor:
        """``weight`` × the auxiliary loss of ``aux`` (or of a ``forward`` result) against B×H×W labels (255
        ignored): cross-entropy (thesis §5.4.2, best at weight 0.5) or the "†" softmax-vs-one-hot MSE (§5.4.1)."""
        if isinstance(aux, tuple):
            aux = aux[1]
        term = masked_cross_entropy(aux, target) if self.loss_kind == "ce" else masked_one_hot_mse(aux, target)
        return self.weight * term

    def export(self) -> nn.Module:
        """The user's segmenter, without the branch: same object, same state-dict keys, no hooks of ours."""
        return self.segmenter

    def extra_repr(self) -> str:
        return f"tap={self.tap!r}, weight={self.weight}, loss={self.loss_kind!r}, frozen={self.frozen}"


class RegularizedOutputs(RegularizedSegmenter):
    """The same branch for segmenters in labelreg's output convention (``{"seg": …}``; what ``labelreg
    train-seg`` trains): ``forward`` adds ``aux_seg`` and ``aux_code`` to the segmenter's dict, as
    ``DecoderRegularized`` does, so the trainer's losses, evaluation and export apply unchanged."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> dict:
        output, aux, code = self._run(x, *args, **kwargs)
        return {**output, "aux_seg": aux, "aux_code": code}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The segmenter's groups (one ``all`` group if it has none); the 1×1 conv joins its ``head``."""
        groups = (self.segmenter.param_groups() if hasattr(self.segmenter, "param_groups")
                  else {"all": list(self.segmenter.parameters())})
        head = "head" if "head" in groups or "all" not in groups else "all"
        own = [p for name, p in self.named_parameters() if not name.startswith("segmenter.")]
        return {**groups, head: groups.get(head, []) + own}

    @property
    def backbone(self) -> nn.Module:
        return self.segmenter.backbone


def regularize(segmenter: nn.Module, autoencoder: LabelAutoencoder | str | Path, *, tap: str | None = None,
               weight: float = 0.5, loss: str = "ce",
               example_input: torch.Tensor | None = None) -> RegularizedSegmenter:
    """Wrap any segmenter in the phase-two decoder regularizer (thesis §5.3.3).

    Args:
        segmenter: any ``nn.Module`` mapping a B×3×H×W image to its output (left unchanged).
        autoencoder: a ``LabelAutoencoder`` or a phase-one checkpoint path (``labelreg train-ae``'s
            ``checkpoints/best.pt``); its decoder is copied and frozen.
        tap: name of the module whose output feeds the branch (``dict(segmenter.named_modules())``);
            default: the deepest one at 1/16 of the input.
        weight: factor of ``loss`` (0.5: the thesis' best for cross-entropy, §5.4.2).
        loss: ``"ce"`` or ``"mse"`` (the "†" variant of §5.4.1).
        example_input: an input for the probing forward (default 1×3×64×96 zeros).

    Returns:
        a module whose ``forward(x)`` gives ``(segmenter(x), aux)``, with ``loss(aux, target)`` and ``export()``.
    """
    return RegularizedSegmenter(segmenter, as_autoencoder(autoencoder), tap=tap, weight=weight, loss=loss,
                                example_input=example_input)
