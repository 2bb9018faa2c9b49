"""Train a segmenter from ``labelreg.models.MODELS`` (`labelreg train-seg`), no regularizer yet."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from labelreg.config import Config, ConfigError
from labelreg.data.transforms import denormalize
from labelreg.data.build import build_augmentations, build_dataset, dataset_class_names, dataset_num_classes
from labelreg.engine import Batch, Task, fit, make_loader, resolve_device, seed_everything, to_device
from labelreg.evaluation import evaluate_segmentation
from labelreg.inference import predict_probabilities
from labelreg.losses import class_frequencies, inverse_frequency_weights, masked_cross_entropy
from labelreg.models import MODELS, build_segmenter
from labelreg.viz import image_grid, label_image, to_uint8_image


def segmenter_forward(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    return model(batch["image"])


def make_losses(class_weights: torch.Tensor | None):
    """Loss terms: ``ce`` on the main output, ``psp_aux`` on PSPNet's auxiliary head when present."""

    def losses(outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        weight = class_weights.to(outputs["seg"].device) if class_weights is not None else None
        terms = {"ce": masked_cross_entropy(outputs["seg"], batch["label"], weight=weight)}
        if "aux_seg" in outputs:
            terms["psp_aux"] = masked_cross_entropy(outputs["aux_seg"], batch["label"], weight=weight)
        return terms

    return losses


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    if cfg.model.name not in MODELS:
        raise ConfigError(f"model.name={cfg.model.name!r}; available segmenters: {', '.join(sorted(MODELS))}")
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the dataset has {num_classes} classes")
    try:
        model = build_segmenter(cfg.model.name, num_classes=num_classes, pretrained_backbone=cfg.model.pretrained_backbone,
                                freeze_bn=cfg.model.freeze_bn, **cfg.model.options)
    except TypeError as error:  # an unknown builder keyword in model.options
        raise ConfigError(f"model.options for {cfg.model.name}: {error}") from error
    if cfg.model.init_from:
        from labelreg.engine import load_checkpoint

        model.load_state_dict(load_checkpoint(cfg.model.init_from)["model"])
    if cfg.model.freeze_backbone:
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
    return model


def segmentation_task(cfg: Config, model: nn.Module, class_names: list[str],
                      class_weights: torch.Tensor | None = None, save_predictions: str | Path | None = None) -> Task:
    train_augment, eval_augment = build_augmentations(cfg.data)

    def predict(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return {"seg": predict_probabilities(model, batch["image"], scales=cfg.eval.scales,
                                             short_sides=cfg.eval.short_sides, flip=cfg.eval.flip)}

    def evaluate(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        return evaluate_segmentation(model, loader, device, num_classes=len(class_names), preprocess=eval_augment,
                                     forward=predict, amp=cfg.train.amp, class_names=class_names,
                                     save_predictions=save_predictions)

    def visualize(model: nn.Module, batch: Batch) -> torch.Tensor:
        prediction = predict(model, batch)["seg"].argmax(1)
        rows = [[to_uint8_image(denormalize(batch["image"][i:i + 1])[0]), label_image(batch["label"][i]),
                 label_image(prediction[i])] for i in range(min(cfg.train.images_to_log, len(prediction)))]
        return torch.from_numpy(image_grid(rows)).permute(2, 0, 1).float() / 255

    return Task(model=model, augment=train_augment, eval_augment=eval_augment, forward=segmenter_forward,
                losses=make_losses(class_weights), evaluate=evaluate, visualize=visualize,
                generators=[train_augment.generator])


def asymmetric_weights(cfg: Config, train_set, num_classes: int) -> torch.Tensor:
    """Inverse class frequencies of the training labels, computed once and stored in the run directory."""
    path = cfg.run_dir / "class_frequencies.json"
    if path.is_file():
        frequencies = torch.tensor(json.loads(path.read_text())["frequencies"], dtype=torch.float64)
    else:
        loader = make_loader(train_set, batch_size=cfg.data.eval_batch_size, shuffle=False,
                             num_workers=cfg.data.num_workers)
        frequencies = class_frequencies((batch["label"] for batch in loader), num_classes)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"frequencies": frequencies.tolist()}, indent=1))
    return inverse_frequency_weights(frequencies)


def calibrate_feature_normalisation(cfg: Config, model: nn.Module, loader, task: Task, device: torch.device) -> None:
    """Zoom-out models with ``normalize``: estimate per-channel mean/std from a few training batches."""
    head = getattr(model, "head", None)
    if not getattr(head, "normalize", False):
        return
    batches = []
    for index, batch in enumerate(loader):
        if index >= cfg.model.calibration_batches:
            break
        batches.append(task.eval_augment(to_device(batch, device))["image"])
    model.calibrate(batches)
    print(f"[{cfg.name}] zoom-out feature normalisation estimated from {len(batches)} batches")


def train(cfg: Config, resume: str | Path | None = None) -> dict:
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    train_set = build_dataset(cfg.data, cfg.data.train_split, limit=cfg.data.train_limit)
    val_set = build_dataset(cfg.data, cfg.data.val_split, limit=cfg.data.val_limit)
    num_classes = dataset_num_classes(train_set)
    model = build_model(cfg, num_classes).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if getattr(model, "aux_head", None) is not None:
        cfg.train.loss_weights = {"psp_aux": 0.4, **cfg.train.loss_weights}  # PSPNet's auxiliary weight
    if cfg.train.loss not in ("ce", "asymmetric"):
        raise ConfigError(f"train.loss={cfg.train.loss!r}; choose 'ce' or 'asymmetric'")
    weights = asymmetric_weights(cfg, train_set, num_classes) if cfg.train.loss == "asymmetric" else None
    task = segmentation_task(cfg, model, dataset_class_names(train_set), weights)
    train_loader = make_loader(train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                               num_workers=cfg.data.num_workers, seed=cfg.train.seed, device=device)
    val_loader = make_loader(val_set, batch_size=cfg.data.eval_batch_size, shuffle=False,
                             num_workers=cfg.data.num_workers, device=device)
    if resume is None and cfg.model.init_from is None:  # a started model keeps its statistics
        calibrate_feature_normalisation(cfg, model, train_loader, task, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"[{cfg.name}] {cfg.model.name} on {cfg.data.dataset} ({num_classes} classes): {len(train_set)} train / "
          f"{len(val_set)} val, {sum(p.numel() for p in model.parameters()):,} parameters ({trainable:,} trainable), "
          f"device {device}")
    state = fit(cfg, task, train_loader, val_loader, device=device, resume=resume)
    return {"epoch": state.epoch, "step": state.step, "best_value": state.best_value, "best_epoch": state.best_epoch,
            "history": state.history}
