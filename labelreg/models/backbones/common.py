"""What every backbone offers: named multi-scale taps, a global feature, pretrained loading.

A backbone maps a B×3×H×W image to an ordered dict of *taps* (shallow → deep),
each B×C×h×w with h ≈ H/s for its nominal output stride s (the network's own
rounding: VGG's pools floor, strided convs ceil), so heads resize to their grid. ``tap_channels`` and
``tap_strides`` describe them without running the network, so heads can be built
before any forward pass. ``global_feature`` gives one B×G vector per image (the
zoom-out "scene" feature).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d  # safe: the labelreg package (_compat) is imported first

from labelreg.storage import safe_load


class Backbone(nn.Module):
    """Base class. Subclasses set ``tap_channels``, ``tap_strides``, ``global_channels`` and implement ``forward``."""

    tap_channels: dict[str, int]
    tap_strides: dict[str, int]
    global_channels: int
    # torchvision state-dict keys that belong to parts a backbone drops (e.g. the 1000-way classifier).
    ignored_pretrained_prefixes: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def tap_names(self) -> list[str]:
        return list(self.tap_channels)

    def global_feature(self, taps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """B×G scene feature; default: global average pool of the deepest tap."""
        return taps[self.tap_names[-1]].mean(dim=(2, 3))

    def drop_global_feature(self) -> None:
        """Free whatever only ``global_feature`` uses (a no-op unless a backbone has such parts, like VGG's fc6/fc7)."""

    def pretrained_target(self) -> nn.Module:
        """The module whose state dict matches the pretrained checkpoint (the wrapped torchvision model)."""
        return self

    def load_pretrained(self, source: str | Path | Mapping[str, Any]) -> None:
        """Load a torchvision-layout state dict (a path to a .pth file or the dict itself), strictly.

        Keys under ``ignored_pretrained_prefixes`` (the dropped classifier) are skipped;
        anything else missing or unexpected is an error naming the keys and the source.
        """
        load_checked(self.pretrained_target(), source, ignore_prefixes=self.ignored_pretrained_prefixes)


def read_state_dict(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """A state dict from a path (plain or wrapped in {"model"|"state_dict": ...}) or a mapping; plus its name."""
    if isinstance(source, Mapping):
        return dict(source), "<state dict>"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = safe_load(path, "pretrained backbone weights")
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(value) for value in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors (it holds a {type(state).__name__}); give the "
                         "backbone's weights as a .pth of name → tensor, e.g. torch.save(model.state_dict(), path)")
    return dict(state), str(path)


def load_checked(module: nn.Module, source: str | Path | Mapping[str, Any],
                 ignore_prefixes: tuple[str, ...] = ()) -> None:
    state, name = read_state_dict(source)
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel/DDP checkpoints
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{name} does not fit {type(module).__name__}: missing keys {result.missing_keys[:8]}"
                         f"{'…' if len(result.missing_keys) > 8 else ''}, unexpected keys "
                         f"{result.unexpected_keys[:8]}{'…' if len(result.unexpected_keys) > 8 else ''}")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a FrozenBatchNorm2d holding its statistics (§3.5.1)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight if child.affine else torch.ones_like(frozen.weight))
                frozen.bias.copy_(child.bias if child.affine else torch.zeros_like(frozen.bias))
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module
