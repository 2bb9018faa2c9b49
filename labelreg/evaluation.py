"""Evaluation loops shared by the trainers, and ``labelreg eval``: rebuild a checkpoint's model
and data from its stored config and score it."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from labelreg.config import Config, ConfigError
from labelreg.data.build import build_dataset, dataset_class_names, dataset_num_classes
from labelreg.engine import Batch, make_loader, predict_batches, resolve_device
from labelreg.metrics import SegMetrics


def evaluate_segmentation(model: nn.Module, loader: Iterable[Batch], device: torch.device, *, num_classes: int,
                          preprocess: Callable[[Batch], Batch], forward: Callable[[nn.Module, Batch], dict],
                          output_key: str = "seg", amp: str = "none",
                          class_names: list[str] | None = None) -> dict[str, float]:
    """Confusion-matrix metrics of ``outputs[output_key]`` against ``batch['label']`` over the whole loader."""
    metrics = SegMetrics(num_classes, device=device)
    for batch, outputs in predict_batches(model, loader, device, preprocess, forward, amp):
        metrics.update(outputs[output_key], batch["label"])
    result = metrics.compute()
    flat = {key: value for key, value in result.items() if isinstance(value, float)}
    names = class_names or [str(index) for index in range(num_classes)]
    for name, iou in zip(names, result["per_class_iou"]):
        flat[f"iou/{name}"] = iou
    return flat


def evaluate_checkpoint(cfg: Config, checkpoint: dict, split: str) -> dict[str, float]:
    device = resolve_device(cfg.train.device)
    dataset = build_dataset(cfg.data, split, limit=cfg.data.val_limit)
    loader = make_loader(dataset, batch_size=cfg.data.eval_batch_size, shuffle=False,
                         num_workers=cfg.data.num_workers, device=device)
    num_classes = dataset_num_classes(dataset)
    if cfg.task == "autoencoder":
        from labelreg.train_ae import build_autoencoder, build_task

        model = build_autoencoder(cfg, num_classes)
        model.load_state_dict(checkpoint["model"])
        task = build_task(cfg, model.to(device), dataset_class_names(dataset))
        with torch.inference_mode():
            return task.evaluate(model, loader, device)
    raise ConfigError(f"task={cfg.task!r}: labelreg eval knows 'autoencoder'")


def format_metrics(metrics: dict[str, float], title: str = "") -> str:
    """Headline metrics first, then per-class IoU, as an aligned text table."""
    lines = [title, "-" * max(len(title), 32)] if title else []
    headline = [key for key in metrics if "/" not in key]
    per_class = [key for key in metrics if key.startswith("iou/")]
    for key in headline:
        lines.append(f"{key:24s} {100 * metrics[key]:7.2f}")
    if per_class:
        lines.append("per-class IoU:")
        for key in per_class:
            value = metrics[key]
            lines.append(f"  {key[4:]:22s} {'   n/a' if value != value else f'{100 * value:7.2f}'}")
    return "\n".join(lines)
