"""Depth predictions on disk: 16-bit PNGs in millimetres (the NYUv2 / KITTI convention; ``PIL.Image.open``
reads them back, divided by ``MILLIMETRES``) and colour previews."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

MILLIMETRES = 1000.0


def save_depth_png(depth: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """H×W metres → 16-bit PNG of millimetres (0 = invalid; values clipped to 65.535 m)."""
    depth = depth.detach().cpu().numpy() if torch.is_tensor(depth) else np.asarray(depth)
    millimetres = np.clip(np.nan_to_num(depth, nan=0.0) * MILLIMETRES, 0, 65535).round().astype(np.uint16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(millimetres).save(path)
    return path


def colorize_depth(depth: torch.Tensor | np.ndarray, max_depth: float | None = None) -> np.ndarray:
    """H×W metres → H×W×3 uint8 (plasma colours, near = bright; invalid = black)."""
    depth = depth.detach().cpu().numpy() if torch.is_tensor(depth) else np.asarray(depth)
    valid = np.isfinite(depth) & (depth > 0)
    top = max_depth or (float(depth[valid].max()) if valid.any() else 1.0)
    scaled = 1.0 - np.clip(np.where(valid, depth, 0) / max(top, 1e-6), 0, 1)
    colours = (matplotlib.colormaps["plasma"](scaled)[..., :3] * 255).astype(np.uint8)
    colours[~valid] = 0
    return colours
