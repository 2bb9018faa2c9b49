"""Inference options (thesis §3.5.1): multi-scale and flip averaging, prediction PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from labelreg.palette import voc_palette


def inference_sizes(height: int, width: int, scales: Sequence[float] = (1.0,),
                    short_sides: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Input sizes to run: each relative scale, and each absolute shorter-side length (aspect kept)."""
    sizes = [(max(1, round(height * s)), max(1, round(width * s))) for s in scales]
    for side in short_sides:
        factor = side / min(height, width)
        sizes.append((max(1, round(height * factor)), max(1, round(width * factor))))
    unique = list(dict.fromkeys(sizes))
    if not unique:
        raise ValueError("multi-scale inference needs at least one scale or shorter side")
    return unique


@torch.no_grad()
def predict_probabilities(model: nn.Module, image: torch.Tensor, *, scales: Sequence[float] = (1.0,),
                          short_sides: Sequence[int] = (), flip: bool = False, output_key: str = "seg") -> torch.Tensor:
    """B×3×H×W normalised images → B×C×H×W class probabilities, softmax-averaged over sizes and flips
    at the original size."""
    height, width = image.shape[-2:]
    total = None
    count = 0
    for size in inference_sizes(height, width, scales, short_sides):
        x = image if size == (height, width) else F.interpolate(image, size=size, mode="bilinear",
                                                                align_corners=False)
        for flipped in ((False, True) if flip else (False,)):
            logits = model(x.flip(-1) if flipped else x)[output_key]
            if flipped:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probs = logits.float().softmax(dim=1)
            total = probs if total is None else total + probs
            count += 1
    return total / count


def save_label_pngs(prediction: torch.Tensor, names: Sequence[str], out_dir: str | Path,
                    sizes: torch.Tensor | None = None) -> list[Path]:
    """B×H×W class ids → ``out_dir/<name>.png`` palette images (VOC colours), cropped to ``sizes`` (B×2)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    palette = voc_palette().flatten().tolist()
    written = []
    for index, name in enumerate(names):
        label = prediction[index]
        if sizes is not None:
            label = label[: int(sizes[index, 0]), : int(sizes[index, 1])]
        picture = Image.fromarray(label.to(torch.uint8).cpu().numpy().astype(np.uint8), mode="P")
        picture.putpalette(palette)
        path = out_dir / f"{name}.png"
        picture.save(path)
        written.append(path)
    return written
