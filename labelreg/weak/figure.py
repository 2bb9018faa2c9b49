"""Pictures of the weak pipeline: sampled points over images (cf. thesis Figs. 4.1, 4.3) and predictions."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from labelreg.palette import voc_palette
from labelreg.viz import image_grid, label_image, overlay, save_png

POINT_RADIUS = 2


def resize_rgb(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """H×W×3 uint8 → size (bilinear), so panels of differently sized images tile."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_labels(label: np.ndarray | torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """H×W ids → size (nearest)."""
    tensor = torch.as_tensor(np.asarray(label)).float()[None, None]
    return F.interpolate(tensor, size=tuple(size), mode="nearest")[0, 0].to(torch.int64).numpy()


def draw_points(image: np.ndarray, points: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """Dots at grid points (y, x, class) over an H×W×3 image: class colour (VOC palette), outlined so that
    background points (black) and dark classes stay visible."""
    height, width = image.shape[:2]
    palette = voc_palette()
    picture = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(picture)
    for y, x, c in np.asarray(points).reshape(-1, 3):
        cy, cx = (y + 0.5) * height / grid[0], (x + 0.5) * width / grid[1]  # centre of the grid cell
        outline = (255, 255, 255) if c == 0 else (0, 0, 0)
        draw.ellipse([cx - POINT_RADIUS, cy - POINT_RADIUS, cx + POINT_RADIUS, cy + POINT_RADIUS],
                     fill=tuple(int(v) for v in palette[int(c)]), outline=outline)
    return np.asarray(picture)


def heat(score: np.ndarray | None, size: Sequence[int]) -> np.ndarray:
    """h×w scores in [0, 1] → size×3 uint8 grey image (white = high); None → black."""
    if score is None:
        return np.zeros((*size, 3), np.uint8)
    up = F.interpolate(torch.as_tensor(score, dtype=torch.float32)[None, None], size=tuple(size), mode="bilinear",
                       align_corners=False)[0, 0].clamp(0, 1)
    return (up[..., None].expand(-1, -1, 3) * 255).round().to(torch.uint8).numpy()


def points_figure(rows: Sequence[dict], path: str | Path, *, size: Sequence[int], grid: Sequence[int]) -> Path:
    """One row per training image: image | ground truth (never seen by the method) | localization score
    (highest over its tagged classes) | the sampled points. Each row dict: ``image`` H×W×3 uint8,
    ``label`` H×W ids, ``score`` h×w in [0, 1] or None, ``points`` P×3 (y, x, class)."""
    panels = []
    for row in rows:
        image = resize_rgb(row["image"], size)
        label = resize_labels(row["label"], size)
        panels.append([image, overlay(image, label), heat(row["score"], size), draw_points(image, row["points"], grid)])
    titles = ["image", "ground truth", "localization", "sampled points"]
    return save_png(image_grid(panels, titles=titles), path)


def predictions_figure(rows: Sequence[dict], path: str | Path, *, size: Sequence[int]) -> Path:
    """One row per validation image: image | ground truth | each named prediction (``predictions``: {title: ids})."""
    panels, titles = [], ["image", "ground truth"]
    for row in rows:
        image = resize_rgb(row["image"], size)
        panels.append([image, label_image(resize_labels(row["label"], size)),
                       *(label_image(resize_labels(p, size)) for p in row["predictions"].values())])
        titles = ["image", "ground truth", *row["predictions"]]
    return save_png(image_grid(panels, titles=titles), path)
