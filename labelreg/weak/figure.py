"""Pictures of the weak pipeline: sampled points over images (cf. thesis Figs. 4.1, 4.3) and predictions, each
with a legend of the classes shown and a colour bar for the localization score."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from labelreg.data.voc import VOC_CLASSES
from labelreg.viz import ClassColours, ScalarMap, class_colours, overlay, panel_figure, save_figure

POINT_SIZE = 30  # points² (matplotlib scatter): a dot about 7 px across at the saved size
SCORE_LABEL = "localization score (grey: none)"


def resize_rgb(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """H×W×3 uint8 → size (bilinear), so panels of differently sized images tile."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_labels(label: np.ndarray | torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """H×W ids → size (nearest)."""
    tensor = torch.as_tensor(np.asarray(label)).float()[None, None]
    return F.interpolate(tensor, size=tuple(size), mode="nearest")[0, 0].to(torch.int64).numpy()


def upsample_score(score: np.ndarray | None, size: Sequence[int]) -> np.ndarray:
    """h×w scores in [0, 1] → size (bilinear, clamped); None (no localizer for the image's tags) → all NaN."""
    if score is None:
        return np.full(tuple(size), np.nan, np.float32)
    up = F.interpolate(torch.as_tensor(score, dtype=torch.float32)[None, None], size=tuple(size), mode="bilinear",
                       align_corners=False)[0, 0].clamp(0, 1)
    return up.numpy()


def point_centres(points: np.ndarray, size: Sequence[int], grid: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (y, x) centres of grid cells (y, x, class) in a ``size`` picture (pixel centres at integers)."""
    points = np.asarray(points).reshape(-1, 3)
    return ((points[:, 0] + 0.5) * size[0] / grid[0] - 0.5, (points[:, 1] + 0.5) * size[1] / grid[1] - 0.5)


def points_plot(rows: Sequence[dict], *, size: Sequence[int], grid: Sequence[int],
                colours: ClassColours | None = None, title: str | None = None) -> Figure:
    """One row per training image: image | ground truth (never seen by the method) | localization score (a
    colour bar) | the sampled points in their class colours. Each row dict: ``image`` H×W×3 uint8, ``label``
    H×W ids, ``score`` h×w in [0, 1] or None, ``points`` P×3 (y, x, class). ``colours``: the data set's
    (default VOC's, the weak demo's data). The legend lists the classes in the ground truth and the points."""
    colours = colours or class_colours(VOC_CLASSES, "voc")
    panels, maps = [], []
    for row in rows:
        image, label = resize_rgb(row["image"], size), resize_labels(row["label"], size)
        maps += [label, np.asarray(row["points"]).reshape(-1, 3)[:, 2]]
        faded = (0.45 * image.astype(np.float32) + 140).astype(np.uint8)  # so that the points stand out
        panels.append([image, overlay(image, label, colours=colours),
                       ScalarMap(upsample_score(row["score"], size), SCORE_LABEL), faded])
    title = title or ("Weak supervision from image tags: how strongly each image's tagged classes are localized "
                      "(highest score over its tags; grey: no localizer for them) and the point labels sampled "
                      "from that. The ground truth is shown, never used.")
    figure, axes = panel_figure(panels, column_titles=["image", "ground truth", "localization", "sampled points"],
                                title=title, legend=colours.legend(maps))
    for axis, row in zip(axes[:, 3], rows):
        ys, xs = point_centres(row["points"], size, grid)
        classes = np.asarray(row["points"]).reshape(-1, 3)[:, 2].astype(np.int64)
        axis.scatter(xs, ys, s=POINT_SIZE, c=colours.palette[classes] / 255, edgecolors="black", linewidths=0.8)
    return figure


def points_figure(rows: Sequence[dict], path: str | Path, *, size: Sequence[int], grid: Sequence[int],
                  colours: ClassColours | None = None) -> Path:
    """PNG of ``points_plot``."""
    return save_figure(points_plot(rows, size=size, grid=grid, colours=colours), path)


def predictions_plot(rows: Sequence[dict], *, size: Sequence[int], colours: ClassColours | None = None,
                     title: str | None = None) -> Figure:
    """One row per validation image: image | ground truth | each named prediction (``predictions``: {title:
    ids}), with a legend of the classes shown; ``colours`` as in ``points_plot``."""
    colours = colours or class_colours(VOC_CLASSES, "voc")
    panels, maps = [], []
    for row in rows:
        labels = [resize_labels(row["label"], size), *(resize_labels(p, size) for p in row["predictions"].values())]
        maps += labels
        panels.append([resize_rgb(row["image"], size), *(colours.colorize(label) for label in labels)])
    names = list(rows[0]["predictions"]) if rows else []
    title = title or ("Weak supervision: held-out images segmented by the head trained on the sampled points "
                      "and by the same head trained on dense labels")
    figure, _ = panel_figure(panels, column_titles=["image", "ground truth", *names], title=title,
                             legend=colours.legend(maps))
    return figure


def predictions_figure(rows: Sequence[dict], path: str | Path, *, size: Sequence[int],
                       colours: ClassColours | None = None) -> Path:
    """PNG of ``predictions_plot``."""
    return save_figure(predictions_plot(rows, size=size, colours=colours), path)
