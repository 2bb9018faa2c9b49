"""What training on label maps starts from, shared by the autoencoder and segmentation tasks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from labelreg.config import Config
from labelreg.data.build import build_train_val_loaders, dataset_num_classes
from labelreg.runtime import seed_everything, training_device


@dataclass
class LabelMapRun:
    device: torch.device
    train_set: Dataset
    val_set: Dataset
    train_loader: DataLoader
    val_loader: DataLoader
    num_classes: int
    model: nn.Module  # on ``device``, channels-last if ``train.channels_last``


def start_label_map_run(cfg: Config, build_model: Callable[[Config, int], nn.Module]) -> LabelMapRun:
    """Seed, pick the device, build the train / val loaders of ``cfg.data``, and ``build_model(cfg, num_classes)``
    with the number of classes the data has (in this order, so a seed gives the same run)."""
    seed_everything(cfg.train.seed)
    device = training_device(cfg)
    train_set, val_set, train_loader, val_loader = build_train_val_loaders(cfg.data, seed=cfg.train.seed, device=device)
    num_classes = dataset_num_classes(train_set)
    model = build_model(cfg, num_classes).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return LabelMapRun(device, train_set, val_set, train_loader, val_loader, num_classes, model)
