"""Phase zero: train a SUNet classifier on an ImageFolder data set (ImageNet), to pretrain the
backbone of the zoom-out / dilated-SUNet segmenters (`labelreg train-cls`; SUNets paper, appendix A).

The data (folders, sizes, device augmentation) are ``labelreg.data.imagefolder``'s.

Metrics: ``top1``, ``top5`` and the mean cross-entropy ``loss``; with K < 5 classes top-5 is
replaced by ``top{K}`` (trivially 1, reported so the metric set stays "top-1 + top-min(5, K)"),
and with K = 1 only ``top1``. The best checkpoint is chosen by ``train.best_metric`` (``top1``
when the config leaves the segmentation default ``miou``).

Checkpoints are the engine's ``{"model": SUNet state dict, ...}``; ``best.pt`` loads directly as a
backbone: ``SUNET_BACKBONES[name](pretrained="runs/<name>/checkpoints/best.pt", output_stride=8)``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.config import Config, ConfigError, config_from_dict
from labelreg.data.imagefolder import (build_cls_augmentations, build_cls_dataset, check_class_names,
                                       check_same_classes, cls_sizes, list_classes)
from labelreg.data.loader import Batch, make_loader
from labelreg.engine import LoopSpec, claim_for_training, fit, predict_batches
from labelreg.runtime import resolve_device, seed_everything, training_device
from labelreg.storage import write_json
from labelreg.tasks.evaluate import refuse_options
from labelreg.models.backbones.sunet import SUNET_CLASSIFIERS, SUNet


def build_classifier(cfg: Config, num_classes: int) -> SUNet:
    """``SUNET_CLASSIFIERS[model.name](num_classes=K, **model.options)``."""
    if cfg.model.name not in SUNET_CLASSIFIERS:
        raise ConfigError(f"model.name={cfg.model.name!r}; train-cls trains one of {sorted(SUNET_CLASSIFIERS)}")
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the data set has {num_classes} classes")
    if cfg.model.pretrained_backbone or cfg.model.freeze_backbone or cfg.model.freeze_bn:
        raise ConfigError("model.pretrained_backbone / freeze_backbone / freeze_bn do not apply to train-cls, "
                          "which trains the classifier from scratch; resume with --resume-from instead")
    try:
        return SUNET_CLASSIFIERS[cfg.model.name](num_classes=num_classes, **cfg.model.options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model.options={cfg.model.options!r} for {cfg.model.name}: {error}") from error


def classifier_forward(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    return model(batch["image"])


def classification_losses(outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
    return {"ce": F.cross_entropy(outputs["logits"].float(), batch["target"])}


def topk_names(num_classes: int) -> list[tuple[str, int]]:
    """[("top1", 1), ("top5", 5)], or ("top{K}", K) for K < 5 classes (only top1 for K = 1)."""
    second = min(5, num_classes)
    return [("top1", 1)] + ([(f"top{second}", second)] if second > 1 else [])


def evaluate_classifier(model: nn.Module, loader: Iterable[Batch], device: torch.device, *, num_classes: int,
                        preprocess, amp: str = "none") -> dict[str, float]:
    """Top-1, top-min(5, K) accuracy and mean cross-entropy ``loss`` over the whole loader."""
    names = topk_names(num_classes)
    largest = max(k for _, k in names)
    correct = torch.zeros(len(names), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for batch, outputs in predict_batches(model, loader, device, preprocess, classifier_forward, amp):
        logits, target = outputs["logits"].float(), batch["target"]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        hits = logits.topk(largest, dim=1).indices == target[:, None]  # B×largest
        correct += torch.stack([hits[:, :k].any(dim=1).sum() for _, k in names]).double()
        count += len(target)
    if count == 0:
        raise ValueError("evaluation loader is empty")
    metrics = {name: value / count for (name, _), value in zip(names, correct.tolist())}
    metrics["loss"] = loss_sum.item() / count
    return metrics


def loop_spec(cfg: Config, model: SUNet, num_classes: int) -> LoopSpec:
    train_augment, eval_augment = build_cls_augmentations(cfg.data)

    def evaluate(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        return evaluate_classifier(model, loader, device, num_classes=num_classes, preprocess=eval_augment,
                                   amp=cfg.train.amp)

    return LoopSpec(model=model, augment=train_augment, eval_augment=eval_augment, forward=classifier_forward,
                losses=classification_losses, evaluate=evaluate, rank_generators=[train_augment.generator])


# ----------------------------------------------------------------------------- entry points


def _check_task(cfg: Config) -> Config:
    if cfg.task != "classification":
        raise ConfigError(f"task={cfg.task!r}; train-cls needs task: classification")
    if cfg.train.best_metric == "miou":  # the segmentation default: meaningless here
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, best_metric="top1", best_mode="max"))
    return cfg


def train(cfg: Config, resume: str | Path | None = None) -> dict:
    """Train per ``cfg``; returns the engine's final state as a dict (plus ``class_names``)."""
    cfg = _check_task(cfg)
    with claim_for_training(cfg.run_dir, resume, cfg=cfg):  # before classes.json: a refused run changes nothing
        return _train(cfg, resume)


def _train(cfg: Config, resume: str | Path | None) -> dict:
    seed_everything(cfg.train.seed)
    device = training_device(cfg)
    crop, evaluation = cls_sizes(cfg.data)
    train_set = build_cls_dataset(cfg.data, cfg.data.train_split, train=True, limit=cfg.data.train_limit)
    val_set = build_cls_dataset(cfg.data, cfg.data.val_split, train=False, limit=cfg.data.val_limit)
    check_same_classes(train_set, val_set)
    num_classes = train_set.num_classes
    model = build_classifier(cfg, num_classes).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    spec = loop_spec(cfg, model, num_classes)
    train_loader = make_loader(train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                               num_workers=cfg.data.num_workers, seed=cfg.train.seed, device=device)
    val_loader = make_loader(val_set, batch_size=cfg.data.eval_batch_size, shuffle=False,
                             num_workers=cfg.data.num_workers, device=device)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg.run_dir / "classes.json", train_set.class_names)
    print(f"[{cfg.name}] {cfg.model.name} classifier on {train_set.root} ({num_classes} classes): "
          f"{len(train_set)} train / {len(val_set)} val, train {train_set.size[0]}×{train_set.size[1]} → crop "
          f"{crop[0]}×{crop[1]}, eval {evaluation[0]}×{evaluation[1]}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, device {device}")
    return {**fit(cfg, spec, train_loader, val_loader, device=device, resume=resume).as_dict(),
            "class_names": train_set.class_names}


def model_from_checkpoint(checkpoint: dict, *, with_regularizer: bool = False, cfg: Config | None = None,
                          num_classes: int | None = None) -> SUNet:
    """The classifier of a train-cls checkpoint (``{"model": state dict, "config": ...}``) with its weights.

    ``cfg``: the configuration to build with (default: the checkpoint's own); ``num_classes``: K, by
    default read off the checkpoint's ``fc`` layer. Raises ValueError when the two disagree.
    """
    if with_regularizer:
        raise ConfigError("a classifier checkpoint has no regularizer branch")
    cfg = _check_task(cfg if cfg is not None else config_from_dict(checkpoint["config"]))
    fc_weight = checkpoint["model"].get("fc.weight")
    if num_classes is None:
        if fc_weight is None:
            raise ValueError("the checkpoint has no classifier (fc.weight): give num_classes")
        num_classes = fc_weight.shape[0]
    elif fc_weight is not None and fc_weight.shape[0] != num_classes:
        raise ValueError(f"the checkpoint's classifier has {fc_weight.shape[0]} classes, not {num_classes}")
    model = build_classifier(cfg, num_classes)
    model.load_state_dict(checkpoint["model"])
    return model


def evaluate_checkpoint(cfg: Config, checkpoint: dict, split: str, *, save_predictions: str | Path | None = None,
                        aux: bool = False, figure: str | Path | None = None,
                        resolved: dict | None = None) -> dict[str, float]:
    """Score a train-cls checkpoint (``{"model": state dict, ...}``) on ``split`` of ``data.root``.

    The split's classes must be the training split's when that folder exists, and their number
    must match the checkpoint's classifier. ``save_predictions``, ``aux`` and ``figure`` are for
    dense tasks: any of them raises ConfigError. ``resolved``: unused (classification derives nothing
    from its data that evaluation needs besides the class folders).
    """
    refuse_options(cfg.task, supported="segmentation and depth", save_predictions=save_predictions)
    refuse_options(cfg.task, aux=aux, figure=figure)
    cfg = _check_task(cfg)
    device = resolve_device(cfg.train.device)
    dataset = build_cls_dataset(cfg.data, split, train=False, limit=cfg.data.val_limit)
    if split != cfg.data.train_split and (Path(cfg.data.root) / cfg.data.train_split).is_dir():
        train_folder = Path(cfg.data.root) / cfg.data.train_split
        check_class_names(list_classes(train_folder), train_folder, dataset.class_names, dataset.folder)
    fc_weight = checkpoint["model"].get("fc.weight")
    if fc_weight is not None and fc_weight.shape[0] != dataset.num_classes:
        raise ValueError(f"the checkpoint's classifier has {fc_weight.shape[0]} classes but {dataset.folder} "
                         f"has {dataset.num_classes}")
    model = model_from_checkpoint(checkpoint, cfg=cfg, num_classes=dataset.num_classes).to(device)
    _, eval_augment = build_cls_augmentations(cfg.data)
    loader = make_loader(dataset, batch_size=cfg.data.eval_batch_size, shuffle=False,
                         num_workers=cfg.data.num_workers, device=device)
    return evaluate_classifier(model, loader, device, num_classes=dataset.num_classes, preprocess=eval_augment,
                               amp=cfg.train.amp)
