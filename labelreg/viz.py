"""Pictures for reports and TensorBoard: label overlays, image grids, training curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from labelreg.data.palette import colorize


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
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
    plt.close(figure)
    return path


def segmentation_figure(images: torch.Tensor, labels: torch.Tensor, predictions: Sequence[tuple[str, torch.Tensor]],
                        path: str | Path, rows: int = 6) -> Path:
    """PNG of rows [image, ground truth, each prediction]: ImageNet-normalised B×3×H×W images,
    B×H×W labels, and (title, B×H×W ids) predictions (e.g. primary and auxiliary outputs, Fig. 5.6)."""
    from labelreg.data.transforms import denormalize

    count = min(rows, len(images))
    shown = denormalize(images[:count])
    grid = [[to_uint8_image(shown[i]), label_image(labels[i]), *(label_image(p[i]) for _, p in predictions)]
            for i in range(count)]
    return save_png(image_grid(grid, titles=["image", "ground truth", *(title for title, _ in predictions)]), path)
