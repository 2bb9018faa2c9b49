"""Picture grids of queries and their matches, like thesis Fig. 5.7 (§5.4.3)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from labelreg.retrieval.index import QueryResult
from labelreg.viz import image_grid, overlay, save_png, to_uint8_image

PANEL = (144, 192)  # every panel is letterboxed into H×W so images of any size line up
QUERY_COLOUR, MATCH_COLOUR = (0, 200, 0), (255, 215, 0)


def _panel(sample: dict, box: Sequence[int], colour: tuple[int, int, int], caption: str, border: bool,
           labels: torch.Tensor) -> np.ndarray:
    """One letterboxed panel: the image with ``labels`` over it, ``box`` framed in ``colour``, a caption."""
    image = to_uint8_image(sample["image"])
    picture = Image.fromarray(overlay(image, labels.numpy(), alpha=0.45))
    draw = ImageDraw.Draw(picture)
    y0, x0, y1, x1 = box
    for inset in range(2):
        draw.rectangle([x0 + inset, y0 + inset, x1 - 1 - inset, y1 - 1 - inset], outline=colour)
    height, width = PANEL[0] - 14, PANEL[1]
    scale = min(height / picture.height, width / picture.width)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.NEAREST)
    canvas = Image.new("RGB", (PANEL[1], PANEL[0]), colour if border else (255, 255, 255))
    inner = Image.new("RGB", (PANEL[1] - 6, PANEL[0] - 6), (255, 255, 255))
    canvas.paste(inner, (3, 3))
    canvas.paste(picture, ((PANEL[1] - picture.width) // 2, (height - picture.height) // 2 + 2))
    ImageDraw.Draw(canvas).text((4, PANEL[0] - 14), caption[:30], fill=(0, 0, 0))
    return np.asarray(canvas)


def query_figure(results: Sequence[tuple[QueryResult, dict]], reference: Dataset, path: str | Path,
                 titles: Sequence[str] | None = None,
                 labels_of: Callable[[dict], torch.Tensor] | None = None) -> Path:
    """PNG grid like thesis Fig. 5.7: per row the query image with its box (green frame), then its
    matches from ``reference`` with their boxes; label overlays in the VOC palette.

    ``results``: (result, query sample) pairs; ``titles``: a caption per row (e.g. the feature source);
    ``labels_of``: the label map to overlay for a sample (default its ground truth; e.g.
    ``ImageFeatures.predict`` shows what the segmenter saw in each region).
    """
    labels_of = labels_of or (lambda sample: sample["label"])
    rows = []
    for row, (result, sample) in enumerate(results):
        caption = f"{titles[row]}: " if titles else ""
        panels = [_panel(sample, result.box, QUERY_COLOUR, f"{caption}{result.query_id}", border=True,
                         labels=labels_of(sample))]
        for match in result.matches:
            match_sample = reference[match.dataset_index]
            panels.append(_panel(match_sample, match.box, MATCH_COLOUR, f"{match.image_id}  d={match.distance:.3f}",
                                 border=False, labels=labels_of(match_sample)))
        rows.append(panels)
    columns = max(len(row) for row in rows)
    blank = np.full((*PANEL, 3), 255, np.uint8)
    rows = [row + [blank] * (columns - len(row)) for row in rows]
    return save_png(image_grid(rows, titles=["query (green box)", *(f"match {i}" for i in range(1, columns))]), path)
