"""The final segmentation model: a 1×1 head on the features, trained on sampled points (thesis §4.3.3, §4.4.1).

§4.3.3 trains a per-pixel classifier with receptive field 1×1 "with zero-masking
applied to the loss in locations where no labels are available". With a 1×1 head
every location is independent, so the masked per-pixel loss over feature maps
equals the plain cross-entropy over the gathered point features (the tests check
this), and training can pool the points of all images and draw batches of 100
*points* (§4.4.1) — :func:`fit_points`. :func:`masked_cross_entropy` is the map form,
used by the fully supervised counterpart (:func:`fit_dense`: the same head on every
labeled grid location) and to state the masking.

Evaluation (:func:`evaluate`) upsamples the grid logits bilinearly to each image's
original label size and accumulates ``labelreg.metrics.SegMetrics``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from labelreg import losses
from labelreg.config import ConfigError, OptimConfig
from labelreg.engine import build_optimizer, optimizer_step
from labelreg.metrics import SegMetrics
from labelreg.palette import IGNORE_INDEX
from labelreg.storage import load_checkpoint, save_checkpoint
from labelreg.weak.store import FeatureStore


class PointHead(nn.Module):
    """1×1 conv D→hidden, ReLU, 1×1 conv hidden→C (§4.4.1: 8320 → 512 → 21); hidden = 0: one 1×1 conv.

    ``forward``: B×D×h×w → B×C×h×w logits, or N×D point features → N×C logits.
    """

    def __init__(self, in_channels: int, num_classes: int, *, hidden: int = 512) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.hidden = in_channels, num_classes, hidden
        if hidden > 0:
            self.body = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(hidden, num_classes, 1))
        else:
            self.body = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            return self.body(x)
        # Point features: the same 1×1 convolutions as matrix products (conv2d on N×D×1×1 is much slower).
        for layer in (self.body if isinstance(self.body, nn.Sequential) else [self.body]):
            x = F.linear(x, layer.weight.flatten(1), layer.bias) if isinstance(layer, nn.Conv2d) else layer(x)
        return x


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over the locations where ``mask`` is True and the target is not void.

    logits B×C×h×w, target B×h×w int, mask B×h×w bool (None: every non-void location).
    Everything outside the mask contributes nothing to the value or the gradient.
    With no labelled location the result is a zero that still has a graph.
    """
    if mask is not None:  # outside the mask counts as void, which the shared loss skips
        target = torch.where(mask, target, torch.full_like(target, IGNORE_INDEX))
    return losses.masked_cross_entropy(logits, target.long())


def save_head(path: Path, head: PointHead, *, sampler: str | None) -> Path:
    """The head's weights (on the CPU, so loadable without a GPU), its shape and the sampler it was trained on
    (None: dense labels)."""
    state = {key: value.detach().cpu() for key, value in head.state_dict().items()}
    save_checkpoint(path, {"state_dict": state, "in_channels": head.in_channels, "hidden": head.hidden,
                           "num_classes": head.num_classes, "sampler": sampler})
    return Path(path)


def load_head(path: Path) -> PointHead:
    """Inverse of :func:`save_head`: the head in eval mode, on the CPU."""
    stored = load_checkpoint(path)
    head = PointHead(stored["in_channels"], stored["num_classes"], hidden=stored["hidden"])
    head.load_state_dict(stored["state_dict"])
    return head.eval()


def gather_points(store: FeatureStore, points: Sequence[np.ndarray], *, batch_images: int = 8,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Segmentation-input features at every sampled point of every image: (N×(D+G) float32, N int64 classes)."""
    if len(points) != len(store):
        raise ValueError(f"{len(points)} point sets for {len(store)} images")
    features, classes = [], []
    for start in tqdm(range(0, len(store), batch_images), desc="gather points", disable=not progress, leave=False):
        indices = list(range(start, min(start + batch_images, len(store))))
        maps = store.segmentation_input(indices)
        for row, i in enumerate(indices):
            pts = torch.as_tensor(np.asarray(points[i], dtype=np.int64)).view(-1, 3)
            features.append(maps[row][:, pts[:, 0], pts[:, 1]].t())
            classes.append(pts[:, 2])
    return torch.cat(features), torch.cat(classes)


def make_optimizer(name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The engine's optimizer over ``model``'s parameters: Adam (the thesis' update rule, §4.4.1; its
    "momentum 0.9" read as β1, Adam's default betas (0.9, 0.999)) or SGD with momentum 0.9; no weight decay."""
    if name not in ("adam", "sgd"):
        raise ConfigError(f"weak.seg_optimizer={name!r}; choose 'adam' or 'sgd'")
    return build_optimizer(OptimConfig(optimizer=name, lr=lr, momentum=0.9, weight_decay=0.0), model)


def fit_points(head: PointHead, features: torch.Tensor, classes: torch.Tensor, *, epochs: int, batch_size: int,
               lr: float, optimizer: str = "adam", seed: int = 0, device: torch.device | None = None,
               progress: bool = False) -> list[dict]:
    """Cross-entropy on the pooled points in shuffled batches of ``batch_size`` points; per-epoch history."""
    if len(classes) == 0:
        raise ValueError("no sampled points to train on")
    device = device or torch.device("cpu")
    head.to(device).train()
    opt = make_optimizer(optimizer, head, lr)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=epochs * -(-len(classes) // batch_size), desc="train on points", disable=not progress, leave=False)
    return _shuffled_epochs(opt, len(classes), batch_size=batch_size, epochs=epochs, generator=generator, bar=bar,
                            loss_of=lambda batch: F.cross_entropy(head(features[batch].to(device)),
                                                                  classes[batch].to(device)))


def fit_dense(head: PointHead, store: FeatureStore, *, epochs: int, batch_size: int, lr: float, optimizer: str = "adam",
              seed: int = 0, device: torch.device | None = None, progress: bool = False) -> list[dict]:
    """The fully supervised counterpart: the same head on every non-void grid location of the training labels."""
    device = device or torch.device("cpu")
    head.to(device).train()
    opt = make_optimizer(optimizer, head, lr)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.from_numpy(store.labels.astype(np.int64))
    bar = tqdm(total=epochs * -(-len(store) // batch_size), desc="train on dense labels", disable=not progress,
               leave=False)
    return _shuffled_epochs(opt, len(store), batch_size=batch_size, epochs=epochs, generator=generator, bar=bar,
                            loss_of=lambda batch: masked_cross_entropy(
                                head(store.segmentation_input(batch.tolist()).to(device)), labels[batch].to(device)))


def _shuffled_epochs(opt: torch.optim.Optimizer, count: int, *, batch_size: int, epochs: int,
                     generator: torch.Generator, bar, loss_of: Callable[[torch.Tensor], torch.Tensor]) -> list[dict]:
    """``epochs`` passes over ``count`` items in shuffled batches: one optimizer step on ``loss_of(batch
    indices)`` per batch; returns the per-epoch mean loss."""
    history = []
    for epoch in range(epochs):
        order = torch.randperm(count, generator=generator)
        total = 0.0
        for start in range(0, count, batch_size):
            bar.update()
            batch = order[start:start + batch_size]
            loss = loss_of(batch)
            optimizer_step(loss, opt)
            total += loss.item() * len(batch)
        history.append({"epoch": epoch + 1, "loss": total / count})
    bar.close()
    return history


@torch.no_grad()
def evaluate(head: PointHead, store: FeatureStore, label: Callable[[int], torch.Tensor], *, batch_images: int = 8,
             device: torch.device | None = None, progress: bool = False) -> dict:
    """SegMetrics at label resolution: grid logits upsampled bilinearly to each ``label(i)`` (H×W int)."""
    device = device or torch.device("cpu")
    head.to(device).eval()
    metrics = SegMetrics(head.num_classes, device=device)
    for start in tqdm(range(0, len(store), batch_images), desc="evaluate", disable=not progress, leave=False):
        indices = list(range(start, min(start + batch_images, len(store))))
        logits = head(store.segmentation_input(indices).to(device))
        for row, i in enumerate(indices):
            target = label(i).to(device)
            up = F.interpolate(logits[row:row + 1], size=tuple(target.shape), mode="bilinear", align_corners=False)
            metrics.update(up, target[None])
    return metrics.compute()


def point_accuracy(points: Sequence[np.ndarray], grid_labels: np.ndarray) -> dict:
    """How often a sampled label matches the ground truth at its grid cell (void cells not counted):
    over all points, foreground points and background points."""
    right = {"all": 0, "foreground": 0, "background": 0}
    counted = dict.fromkeys(right, 0)
    for i, pts in enumerate(points):
        pts = np.asarray(pts, dtype=np.int64).reshape(-1, 3)
        truth = grid_labels[i][pts[:, 0], pts[:, 1]].astype(np.int64)
        valid = truth != IGNORE_INDEX
        for group, keep in (("all", valid), ("foreground", valid & (pts[:, 2] != 0)),
                            ("background", valid & (pts[:, 2] == 0))):
            right[group] += int((truth == pts[:, 2])[keep].sum())
            counted[group] += int(keep.sum())
    return {"point_accuracy" if group == "all" else f"{group}_point_accuracy": right[group] / max(counted[group], 1)
            for group in right}
