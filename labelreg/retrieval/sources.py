"""Feature sources (thesis §5.4.3): what describes a region, one feature vector per 16×16 cell.

- ``LabelFeatures``: a ground-truth label map through the phase-one encoder → its bottleneck
  (K × ⌈H/16⌉ × ⌈W/16⌉).
- ``ImageFeatures``: an image through a segmenter trained with the decoder regularizer → its
  predicted decoder input (``aux_code``, the same grid): a query from pixels alone.

``label_source`` and ``image_source`` build them from ``train-ae`` / ``train-seg`` checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.config import ConfigError, config_from_dict
from labelreg.data.transforms import normalize
from labelreg.models.autoencoder import LabelAutoencoder, one_hot_labels
from labelreg.palette import IGNORE_INDEX
from labelreg.retrieval.geometry import CELL, grid_shape
from labelreg.storage import load_checkpoint
from labelreg.tasks import model_from_checkpoint

FeatureSource = Callable[[dict], torch.Tensor]  # a sample → K×rows×cols features


class LabelFeatures:
    """Ground-truth label map → the encoder's bottleneck (K × ⌈H/16⌉ × ⌈W/16⌉)."""

    kind = "labels"

    def __init__(self, autoencoder: LabelAutoencoder, device: torch.device, *, name: str = "autoencoder") -> None:
        self.model, self.device, self.name = autoencoder.to(device).eval(), device, name

    @torch.inference_mode()
    def __call__(self, sample: dict) -> torch.Tensor:
        label = sample["label"].to(self.device)
        height, width = label.shape[-2:]
        rows, cols = grid_shape(height, width)
        # the encoder needs multiples of 16: pad with "ignore", which one-hot encodes to all-zero
        padded = F.pad(label[None], (0, cols * CELL - width, 0, rows * CELL - height), value=IGNORE_INDEX)
        return self.model.encoder(one_hot_labels(padded, self.model.num_classes))[0].float()


class ImageFeatures:
    """Image → a decoder-regularized segmenter's predicted decoder input (``aux_code``)."""

    kind = "images"

    def __init__(self, model: nn.Module, device: torch.device, *, name: str = "segmenter") -> None:
        self.model, self.device, self.name = model.to(device).eval(), device, name

    @torch.inference_mode()
    def _outputs(self, sample: dict) -> dict[str, torch.Tensor]:
        # normalisation only, no resizing: pixels must keep their cells
        return self.model(normalize(sample["image"][None].to(self.device)))

    def __call__(self, sample: dict) -> torch.Tensor:
        code = self._outputs(sample)["aux_code"][0].float()
        rows, cols = grid_shape(*sample["image"].shape[-2:])
        if tuple(code.shape[-2:]) != (rows, cols):
            raise RuntimeError(f"the segmenter's aux_code is {tuple(code.shape[-2:])}, expected {(rows, cols)} cells")
        return code

    def predict(self, sample: dict) -> torch.Tensor:
        """The segmenter's predicted label map (H×W, int64) — what the query's features were read from."""
        return self._outputs(sample)["seg"][0].argmax(0).cpu()


def label_source(checkpoint_path: str | Path, device: torch.device | str,
                 num_classes: int | None = None) -> LabelFeatures:
    """The encoder of a ``train-ae`` checkpoint as a feature source."""
    checkpoint = load_checkpoint(checkpoint_path)
    cfg = config_from_dict(checkpoint["config"])
    if cfg.task != "autoencoder":
        raise ConfigError(f"{checkpoint_path} is a {cfg.task!r} checkpoint; --autoencoder takes a train-ae checkpoint")
    model = model_from_checkpoint(checkpoint, num_classes=num_classes, source=str(checkpoint_path))
    return LabelFeatures(model, torch.device(device), name=str(checkpoint_path))


def image_source(checkpoint_path: str | Path, device: torch.device | str, num_classes: int) -> ImageFeatures:
    """A decoder-regularized ``train-seg`` checkpoint as a feature source (its predicted decoder input)."""
    checkpoint = load_checkpoint(checkpoint_path)
    cfg = config_from_dict(checkpoint["config"])
    if cfg.task != "segmentation" or cfg.regularizer.kind != "decoder":
        raise ConfigError(f"{checkpoint_path}: --segmenter needs a train-seg checkpoint trained with "
                          f"regularizer.kind=decoder (it predicts the decoder's input); this one has task={cfg.task!r}"
                          f", regularizer.kind={cfg.regularizer.kind!r}")
    model = model_from_checkpoint(checkpoint, with_regularizer=True, num_classes=num_classes)
    return ImageFeatures(model, torch.device(device), name=str(checkpoint_path))
