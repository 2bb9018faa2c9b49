"""Phase one (thesis §5.3.1): train the label-map autoencoder on ground-truth label maps
(``labelreg train-ae``), score its checkpoints, rebuild it from them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelreg.config import Config, ConfigError
from labelreg.data.build import build_augmentations, dataset_class_names, dataset_num_classes
from labelreg.data.loader import Batch
from labelreg.engine import LoopSpec, fit
from labelreg.losses import masked_cross_entropy
from labelreg.models.autoencoder import DOWNSAMPLING, LabelAutoencoder, autoencoder_from_checkpoint, one_hot_labels
from labelreg.runtime import resolve_device
from labelreg.tasks.evaluate import evaluate_segmentation, evaluation_loader, refuse_options
from labelreg.tasks.start import start_label_map_run
from labelreg.viz import ClassColours, class_colours, image_grid, label_image


def autoencoder_forward(model: LabelAutoencoder, batch: Batch) -> dict[str, torch.Tensor]:
    """Reconstruct ``batch['label']``; pads with ignore to a multiple of 16 and crops back."""
    label = batch["label"]
    height, width = label.shape[-2:]
    pad_h, pad_w = -height % DOWNSAMPLING, -width % DOWNSAMPLING
    if pad_h or pad_w:
        label = F.pad(label, (0, pad_w, 0, pad_h), value=255)
    outputs = model(one_hot_labels(label, model.num_classes))
    outputs["seg"] = outputs["seg"][..., :height, :width]
    return outputs


def reconstruction_losses(outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
    return {"ce": masked_cross_entropy(outputs["seg"], batch["label"])}


def build_autoencoder(cfg: Config, num_classes: int) -> LabelAutoencoder:
    if cfg.model.name != "label_autoencoder":
        raise ConfigError(f"model.name={cfg.model.name!r}; train-ae trains 'label_autoencoder'")
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the dataset has {num_classes} classes")
    return LabelAutoencoder(num_classes, cfg.model.variant)


def reconstruction_panels(model: LabelAutoencoder, batch: Batch, count: int,
                          colours: ClassColours | None = None) -> list[list[np.ndarray]]:
    """Rows of [input labels, reconstruction] panels for the first ``count`` samples, in ``colours``."""
    outputs = autoencoder_forward(model, batch)
    prediction = outputs["seg"].argmax(1)
    return [[label_image(batch["label"][i], colours), label_image(prediction[i], colours)]
            for i in range(min(count, len(prediction)))]


def loop_spec(cfg: Config, model: LabelAutoencoder, class_names: list[str]) -> LoopSpec:
    """The engine's view of phase one: labels in, reconstructed labels out, scored like a segmentation."""
    train_augment, eval_augment = build_augmentations(cfg.data)

    def evaluate(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        return evaluate_segmentation(model, loader, device, num_classes=model.num_classes, preprocess=eval_augment,
                                     forward=autoencoder_forward, amp=cfg.train.amp, class_names=class_names)

    def visualize(model: nn.Module, batch: Batch) -> torch.Tensor:
        grid = image_grid(reconstruction_panels(model, batch, cfg.train.images_to_log,
                                                class_colours(class_names, cfg.data.dataset)))
        return torch.from_numpy(grid).permute(2, 0, 1).float() / 255

    return LoopSpec(model=model, augment=train_augment, eval_augment=eval_augment, forward=autoencoder_forward,
                losses=reconstruction_losses, evaluate=evaluate, visualize=visualize,
                rank_generators=[train_augment.generator])


def train(cfg: Config, resume: str | Path | None = None) -> dict:
    """Train per ``cfg``; returns the engine's final state as a dict."""
    run = start_label_map_run(cfg, build_autoencoder)
    spec = loop_spec(cfg, run.model, dataset_class_names(run.train_set))
    print(f"[{cfg.name}] autoencoder-{cfg.model.variant} on {cfg.data.dataset} ({run.num_classes} classes): "
          f"{len(run.train_set)} train / {len(run.val_set)} val, "
          f"{sum(p.numel() for p in run.model.parameters()):,} parameters, device {run.device}")
    return fit(cfg, spec, run.train_loader, run.val_loader, device=run.device, resume=resume).as_dict()


def model_from_checkpoint(checkpoint: dict, *, with_regularizer: bool = False, num_classes: int | None = None,
                          source: str = "the checkpoint") -> LabelAutoencoder:
    """The autoencoder of a ``train-ae`` checkpoint with its weights (``num_classes``: checked against them)."""
    if with_regularizer:
        raise ConfigError(f"{source} is a label autoencoder: it has no regularizer branch")
    return autoencoder_from_checkpoint(checkpoint, source, num_classes)


def evaluate_checkpoint(cfg: Config, checkpoint: dict, split: str, *, save_predictions: str | Path | None = None,
                        aux: bool = False, figure: str | Path | None = None,
                        resolved: dict | None = None) -> dict[str, float]:
    """Reconstruction metrics of a ``train-ae`` checkpoint on ``split`` (ground-truth labels in, labels out)."""
    refuse_options(cfg.task, save_predictions=save_predictions, aux=aux, figure=figure)
    device = resolve_device(cfg.train.device)
    dataset, loader = evaluation_loader(cfg, split, device)
    model = build_autoencoder(cfg, dataset_num_classes(dataset))
    spec = loop_spec(cfg, model, dataset_class_names(dataset))
    model.load_state_dict(checkpoint["model"])
    return spec.evaluate(model.to(device), loader, device)
