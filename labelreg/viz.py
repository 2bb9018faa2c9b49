"""Pictures for reports and TensorBoard: label overlays, image grids, training curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import matplotlib
from matplotlib.figure import Figure  # pyplot-free: files only, no backend or window state
from PIL import Image, ImageDraw

from labelreg.data.transforms import denormalize
from labelreg.palette import colorize


def to_uint8_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """3×H×W float in [0, 1] or uint8 tensor, or H×W×3 array → H×W×3 uint8."""
    if torch.is_tensor(image):
        image = image.detach().cpu()
        if image.dtype != torch.uint8:
            image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
        image = image.permute(1, 2, 0).numpy()
    return np.ascontiguousarray(image)


def label_image(label: torch.Tensor | np.ndarray) -> np.ndarray:
    """H×W ids → H×W×3 uint8 in the VOC palette (255 = void colour)."""
    if torch.is_tensor(label):
        label = label.detach().cpu().numpy()
    return colorize(label)


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a label map's colours over an RGB image; ignore (255) pixels keep the image."""
    colours = label_image(label).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    keep = (np.asarray(label) == 255)[..., None]
    return np.where(keep, image, blended).round().astype(np.uint8)


def image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None, gap: int = 4) -> np.ndarray:
    """Tile H×W×3 uint8 panels (all the same size) into one image, optional column titles on top."""
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    title_height = 14 if titles else 0
    canvas = np.full((title_height + len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            y, x = title_height + gap + r * (height + gap), gap + c * (width + gap)
            canvas[y:y + height, x:x + width] = panel
    if titles:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        for c, title in enumerate(titles):
            draw.text((gap + c * (width + gap), 1), title, fill=(0, 0, 0))
        canvas = np.asarray(picture)
    return canvas


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def plot_curves(history: list[dict[str, float]], keys: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Line plot of ``keys`` from an engine history (one entry per epoch) to a PNG."""
    figure = Figure(figsize=(4 * len(keys), 3))
    axes = figure.subplots(1, len(keys), squeeze=False)
    for axis, key in zip(axes[0], keys):
        points = [(entry["epoch"], entry[key]) for entry in history if key in entry]
        if points:
            epochs, values = zip(*points)
            axis.plot(epochs, values, marker="o", markersize=3)
        axis.set_title(key)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def segmentation_figure(images: torch.Tensor, labels: torch.Tensor, predictions: Sequence[tuple[str, torch.Tensor]],
                        path: str | Path, rows: int = 6) -> Path:
    """PNG of rows [image, ground truth, each prediction]: ImageNet-normalised B×3×H×W images,
    B×H×W labels, and (title, B×H×W ids) predictions (e.g. primary and auxiliary outputs, Fig. 5.6)."""
    count = min(rows, len(images))
    shown = denormalize(images[:count])
    grid = [[to_uint8_image(shown[i]), label_image(labels[i]), *(label_image(p[i]) for _, p in predictions)]
            for i in range(count)]
    return save_png(image_grid(grid, titles=["image", "ground truth", *(title for title, _ in predictions)]), path)


def depth_figure(images: torch.Tensor, depths: torch.Tensor, predictions: Sequence[tuple[str, torch.Tensor]],
                 path: str | Path, *, rows: int = 6, max_depth: float | None = None,
                 min_depth: float = 1e-3) -> dict:
    """PNG of rows [image, ground-truth depth, each prediction, each |prediction − ground truth|]
    (thesis §5.5, cf. Fig. 5.9).

    ``images``: B×3×H×W in [0, 1]; ``depths``: B×H×W metres (≤ 0 or non-finite: no ground truth);
    predictions: (title, B×H×W metres) at the ground truth's size. Every depth panel shares one colour
    scale (plasma, near = bright, 0 to the largest valid ground truth shown, at most ``max_depth``) with a
    colour bar in metres; the error panels share their own scale and bar (0 to the 99th percentile of the
    shown errors); pixels without ground truth are grey in the error maps. Returns the layout: ``path``,
    ``size`` (width, height in px), ``columns`` (titles, left to right), ``colorbars`` (their labels),
    ``depth_range`` and ``error_range`` (metres).
    """
    count = min(rows, len(images))
    truth = depths[:count].detach().float().cpu().numpy()
    valid = np.isfinite(truth) & (truth > min_depth)
    if max_depth is not None:
        valid &= truth <= max_depth
    top = float(truth[valid].max()) if valid.any() else (max_depth or 1.0)
    predicted = [(title, p[:count].detach().float().cpu().numpy()) for title, p in predictions]
    errors = [(f"|{title} − truth|", np.where(valid, np.abs(p - truth), np.nan)) for title, p in predicted]
    finite = np.concatenate([e[np.isfinite(e)] for _, e in errors]) if errors else np.zeros(1)
    error_top = max(float(np.percentile(finite, 99)) if finite.size else 1.0, 1e-3)
    titles = ["image", "ground truth", *(title for title, _ in predicted), *(title for title, _ in errors)]

    height, width = truth.shape[-2:]
    panel_w, gap, margin, title_h, bar_h = 1.8, 0.06, 0.1, 0.3, 0.75  # inches; saved at 100 dpi
    panel_h = panel_w * height / width
    columns = len(titles)
    fig_w = 2 * margin + columns * panel_w + (columns - 1) * gap
    fig_h = title_h + count * panel_h + (count - 1) * gap + bar_h
    figure = Figure(figsize=(fig_w, fig_h))
    grid = figure.add_gridspec(count + 1, columns, left=margin / fig_w, right=1 - margin / fig_w,
                               top=1 - title_h / fig_h, bottom=0.45 / fig_h, wspace=gap / panel_w,
                               hspace=gap / panel_h, height_ratios=[panel_h] * count + [0.1])
    axes = np.array([[figure.add_subplot(grid[r, c]) for c in range(columns)] for r in range(count)])
    depth_map = matplotlib.colormaps["plasma_r"].with_extremes(bad="black")
    error_map = matplotlib.colormaps["magma"].with_extremes(bad="0.6")
    depth_shown = error_shown = None
    for r in range(count):
        axes[r, 0].imshow(to_uint8_image(images[r]))
        for c, panel in enumerate([np.where(valid[r], truth[r], np.nan), *(p[r] for _, p in predicted)], start=1):
            depth_shown = axes[r, c].imshow(panel, cmap=depth_map, vmin=0.0, vmax=top)
        for c, (_, error) in enumerate(errors, start=2 + len(predicted)):
            error_shown = axes[r, c].imshow(error[r], cmap=error_map, vmin=0.0, vmax=error_top)
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=9, pad=3)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    colorbars = []
    for shown, first, last, label in ((depth_shown, 1, 2 + len(predicted), "depth (m)"),
                                      (error_shown, 2 + len(predicted), columns, "|error| (m)")):
        if shown is None or first >= last:
            continue
        cax = figure.add_subplot(grid[count, first:last])
        box = cax.get_position()  # a little space between neighbouring bars, so their end labels do not touch
        cax.set_position([box.x0 + 0.02 * box.width, box.y0, 0.96 * box.width, box.height])
        bar = figure.colorbar(shown, cax=cax, orientation="horizontal")
        bar.set_label(label, fontsize=9)
        bar.ax.tick_params(labelsize=8)
        colorbars.append(label)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    size = tuple(int(v) for v in figure.get_size_inches() * 100)
    return {"path": path, "size": size, "columns": titles, "colorbars": colorbars, "depth_range": (0.0, top),
            "error_range": (0.0, error_top)}
