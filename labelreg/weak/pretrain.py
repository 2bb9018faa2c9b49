"""Tags-only pretraining of the backbone: ``labelreg weak pretrain`` (off unless ``weak.pretrain_epochs > 0``).

The thesis extracts its features with ImageNet-pretrained VGG-16. Offline, with no
weights to load, a random-init backbone gives features that do not localize the
synthetic scenes at all. This step trains the backbone first as a multi-label tag
classifier on the training split, using only the image-level tags the weak pipeline
is already given (``labelreg.weak.tags``). No pixel label is used except to derive
those tags, as the features step does. Validation tags only score the classifier.

Model (``weak.pretrain_head``):

- ``zoomout`` (default): the taps the pipeline will use, resized to the feature grid
  and concatenated (the zoom-out map, D channels), scored per location by a 1×1 conv
  (D → C) and pooled over the image (``weak.pretrain_pool``: ``avg``, or ``lse``, a
  log-sum-exp with r = 5 between average and max pooling). With ``avg`` this is
  exactly global average pooling of the zoom-out map followed by a linear layer,
  since averaging commutes with a linear map. With ``weak.global_feature``, a linear
  term on the backbone's global feature is added.
- ``global``: a linear layer on the backbone's global feature (DenseNet: global
  average pooling of the deepest tap; VGG-16: fc7).

C = the number of foreground classes (20 for VOC). The loss is per-class binary
cross-entropy with logits. Training uses AdamW (``weak.pretrain_lr``,
``weak.pretrain_weight_decay``) with a one-cycle schedule (15 % linear warm-up, then
cosine decay), batches of ``weak.pretrain_batch_size`` images, and random crops
(area fraction in ``weak.pretrain_crop_area``, aspect 3/4..4/3) resized back to
``weak.image_size``, plus horizontal flips (``labelreg.data.transforms.JointAugment``).
A crop keeps the whole image's tags. All randomness is seeded by ``train.seed``.

Output ``<run_dir>/pretrain/backbone.pt``: ``state_dict`` (the backbone, in the layout
``weak.pretrained`` files use), ``head`` (the classifier), ``settings`` (what it was
trained with, checked by the features step) and ``metrics``. Training images are held
in memory as uint8 at ``weak.image_size`` (N·3·H·W bytes).
"""
from __future__ import annotations

import math
import time
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from labelreg.config import Config, ConfigError
from labelreg.data.build import dataset_class_names, dataset_num_classes
from labelreg.data.transforms import JointAugment, normalize
from labelreg.engine import optimizer_step
from labelreg.models.zoomout import grid_size, resize_to_grid
from labelreg.storage import save_checkpoint
from labelreg.weak.features import ZoomOutExtractor, extractor_from_config
from labelreg.weak.store import pretrain_signature, pretrained_backbone_path, split_dataset
from labelreg.weak.tags import tag_matrix, tags_from_label

HEADS = ("zoomout", "global")
POOLS = ("avg", "lse")
LSE_SHARPNESS = 5.0  # r of the log-sum-exp pooling: (1/r)·log mean_i exp(r·s_i)
WARMUP_FRACTION = 0.15


class TagClassifier(nn.Module):
    """Backbone → per-class image logits (B×C), for training the backbone from image tags (module docstring)."""

    def __init__(self, extractor: ZoomOutExtractor, num_tags: int, *, head: str = "zoomout",
                 pool: str = "avg") -> None:
        super().__init__()
        if head not in HEADS:
            raise ConfigError(f"weak.pretrain_head={head!r}; choose one of {', '.join(HEADS)}")
        if pool not in POOLS:
            raise ConfigError(f"weak.pretrain_pool={pool!r}; choose one of {', '.join(POOLS)}")
        self.backbone = extractor.backbone
        self.taps = list(extractor.taps)
        self.grid_stride = extractor.grid_stride
        self.head, self.pool = head, pool
        if head == "global":
            self.local = None
            self.scene = nn.Linear(self.backbone.global_channels, num_tags)
        else:
            self.local = nn.Conv2d(extractor.dim, num_tags, 1)
            self.scene = nn.Linear(extractor.global_dim, num_tags, bias=False) if extractor.global_dim else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        taps = self.backbone(images)
        if self.local is None:
            return self.scene(self.backbone.global_feature(taps))
        grid = grid_size(tuple(images.shape[-2:]), self.grid_stride)
        zoomout = torch.cat([resize_to_grid(taps[name], grid) for name in self.taps], dim=1)
        scores = self.local(zoomout).flatten(2)  # B×C×(h·w)
        if self.pool == "avg":
            logits = scores.mean(dim=2)
        else:
            logits = (torch.logsumexp(LSE_SHARPNESS * scores, dim=2) - math.log(scores.shape[2])) / LSE_SHARPNESS
        if self.scene is not None:
            logits = logits + self.scene(self.backbone.global_feature(taps))
        return logits


def _collate(samples: list[dict], *, size: Sequence[int], num_classes: int) -> dict:
    images = []
    for sample in samples:
        x = sample["image"][None].float()
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        images.append(x[0].clamp(0, 255).round().to(torch.uint8))
    return {"image": torch.stack(images), "tags": [tags_from_label(s["label"], num_classes) for s in samples]}


def tagged_images(cfg: Config, role: str, *, progress: bool = False) -> dict[str, Any]:
    """One split's images as uint8 N×3×H×W at ``weak.image_size`` and its tags as an N×(C) float matrix
    (foreground classes only: column j is class j + 1), plus the class names."""
    dataset = split_dataset(cfg, role)
    if len(dataset) == 0:
        raise ValueError(f"split {role!r} of {cfg.data.root} is empty")
    num_classes = dataset_num_classes(dataset)
    loader = DataLoader(dataset, batch_size=cfg.weak.feature_batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers,
                        collate_fn=partial(_collate, size=tuple(cfg.weak.image_size), num_classes=num_classes))
    images, tags = [], []
    for batch in tqdm(loader, desc=f"pretrain: read {role}", disable=not progress, leave=False):
        images.append(batch["image"])
        tags.extend(batch["tags"])
    return {"images": torch.cat(images), "tags": torch.from_numpy(tag_matrix(tags, num_classes)[:, 1:]).float(),
            "class_names": dataset_class_names(dataset)}


def average_precision(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-column AP (mean precision at each positive, ties broken by order); NaN where a column has no positive."""
    result = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        positives = truth[:, c].sum()
        if positives == 0:
            continue
        hits = truth[np.argsort(-scores[:, c], kind="stable"), c]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        result[c] = float((precision * hits).sum() / positives)
    return result


def tag_scores(model: TagClassifier, images: torch.Tensor, tags: torch.Tensor, *, batch_size: int,
               device: torch.device) -> dict[str, Any]:
    """BCE, mean AP (classes with a positive), chance mAP (their mean prevalence) and micro tag F1 at p = 0.5."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(normalize(images[i:i + batch_size]).to(device)).cpu()
                            for i in range(0, len(images), batch_size)])
    truth = tags.numpy().astype(bool)
    ap = average_precision(logits.numpy(), truth)
    present = ~np.isnan(ap)
    said = logits.numpy() > 0
    tp, fp, fn = (said & truth).sum(), (said & ~truth).sum(), (~said & truth).sum()
    return {"bce": float(F.binary_cross_entropy_with_logits(logits, tags)),
            "map": float(ap[present].mean()) if present.any() else None,
            "chance_map": float(truth[:, present].mean(axis=0).mean()) if present.any() else None,
            "tag_f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else None,
            "per_class_ap": {int(c) + 1: float(ap[c]) for c in np.flatnonzero(present)}}


def pretrain_backbone(cfg: Config, *, device: torch.device, log: Callable[[str], None] = print,
                      progress: bool = True) -> dict[str, Any]:
    """Train the backbone as a tag classifier on the training split; write ``<run_dir>/pretrain/backbone.pt``."""
    weak = cfg.weak
    if weak.pretrain_epochs < 1:
        raise ConfigError(f"weak.pretrain_epochs={weak.pretrain_epochs}: pretraining is off; set "
                          "weak.pretrain_epochs to a positive number of epochs to run `labelreg weak pretrain`")
    train = tagged_images(cfg, "train", progress=progress)
    n = len(train["images"])
    if n < 2:
        raise ValueError(f"pretraining needs at least 2 training images (BatchNorm statistics), got {n}")
    if not train["tags"].any():
        raise ValueError(f"no training image of {cfg.data.train_split} has a tag: nothing to pretrain on")
    val = tagged_images(cfg, "val", progress=progress)
    # The network every later step would otherwise use (random init seeded by train.seed, or weak.pretrained).
    extractor = extractor_from_config(weak, seed=cfg.train.seed)
    extractor.requires_grad_(True)
    torch.manual_seed(cfg.train.seed)
    model = TagClassifier(extractor, train["tags"].shape[1], head=weak.pretrain_head, pool=weak.pretrain_pool)
    model.to(device)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    augment = JointAugment(tuple(weak.image_size), crop_area=tuple(weak.pretrain_crop_area), hflip=True,
                           generator=generator)
    # Near-equal batches of at most pretrain_batch_size (never a lone image: BatchNorm needs two).
    batches = max(1, min(math.ceil(n / weak.pretrain_batch_size), n // 2))
    # AdamW and a one-cycle schedule: neither is among the engine's optimizers and schedules (optim.optimizer,
    # optim.schedule), so torch's own; the step itself is the engine's.
    optimizer = torch.optim.AdamW(model.parameters(), lr=weak.pretrain_lr, weight_decay=weak.pretrain_weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=weak.pretrain_lr,
                                                   total_steps=weak.pretrain_epochs * batches,
                                                   pct_start=WARMUP_FRACTION, anneal_strategy="cos")
    before = tag_scores(model, val["images"], val["tags"], batch_size=weak.feature_batch_size, device=device)
    history = []
    began = time.perf_counter()
    for epoch in tqdm(range(weak.pretrain_epochs), desc="pretrain", disable=not progress, leave=False):
        model.train()
        total = 0.0
        for indices in torch.tensor_split(torch.randperm(n, generator=generator), batches):
            images = augment({"image": train["images"][indices].to(device)})["image"]
            loss = F.binary_cross_entropy_with_logits(model(images), train["tags"][indices].to(device))
            optimizer_step(loss, optimizer)
            schedule.step()
            total += loss.item() * len(indices)
        history.append({"epoch": epoch + 1, "loss": total / n})
    seconds = time.perf_counter() - began
    after = tag_scores(model, val["images"], val["tags"], batch_size=weak.feature_batch_size, device=device)
    model.cpu()
    path = pretrained_backbone_path(cfg)
    summary = {"epochs": weak.pretrain_epochs, "train_images": n, "val_images": len(val["images"]),
               "head": weak.pretrain_head, "pool": weak.pretrain_pool, "steps": weak.pretrain_epochs * batches,
               "train_bce": history[-1]["loss"], "history": history,
               "val_bce": after["bce"], "val_map": after["map"], "val_chance_map": after["chance_map"],
               "val_tag_f1": after["tag_f1"], "val_per_class_ap": after["per_class_ap"],
               "init_val_bce": before["bce"], "init_val_map": before["map"],
               "train_seconds": round(seconds, 2), "weights": str(path)}
    save_checkpoint(path, {"state_dict": model.backbone.pretrained_target().state_dict(), "head": {
                        k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")},
                    "settings": pretrain_signature(cfg), "class_names": train["class_names"][1:],
                    "metrics": {k: v for k, v in summary.items() if k not in ("history", "val_per_class_ap")}})
    log(f"pretrain: {weak.pretrain_epochs} epochs on {n} {cfg.data.train_split} images (image tags only, "
        f"{weak.pretrain_head} head): train BCE {history[0]['loss']:.4f} → {history[-1]['loss']:.4f}; validation "
        f"BCE {before['bce']:.4f} → {after['bce']:.4f}, mAP {percent(before['map'])} → {percent(after['map'])} "
        f"(chance {percent(after['chance_map'])}), tag F1 {percent(after['tag_f1'])}; {seconds:.1f} s → {path}")
    return summary


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal; None (undefined) as n/a."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


__all__ = ["HEADS", "POOLS", "TagClassifier", "average_precision", "percent", "pretrain_backbone", "tag_scores",
           "tagged_images"]
