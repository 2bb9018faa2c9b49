"""Evaluation loops shared by the trainers, and ``labelreg eval``: rebuild a checkpoint's model
and data from its stored config and score it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from labelreg.config import Config, ConfigError
from labelreg.data.build import build_dataset, dataset_class_names, dataset_num_classes
from labelreg.engine import Batch, make_loader, predict_batches, resolve_device, to_device
from labelreg.inference import save_label_pngs
from labelreg.metrics import SegMetrics


def evaluate_segmentation(model: nn.Module, loader: Iterable[Batch], device: torch.device, *, num_classes: int,
                          preprocess: Callable[[Batch], Batch], forward: Callable[[nn.Module, Batch], dict],
                          output_key: str = "seg", amp: str = "none", class_names: list[str] | None = None,
                          save_predictions: str | Path | None = None,
                          extra_outputs: dict[str, str] | None = None) -> dict[str, float]:
    """Confusion-matrix metrics of ``outputs[output_key]`` against ``batch['label']`` over the whole loader.

    ``extra_outputs`` maps further output names to a metric prefix (``{"aux_seg": "aux_"}`` adds
    ``aux_miou``…), scored in the same pass. With ``save_predictions`` every prediction is also
    written there as ``<name>.png`` (VOC palette), cropped back to the original size when padded.
    """
    metrics = SegMetrics(num_classes, device=device)
    extra = {key: SegMetrics(num_classes, device=device) for key in (extra_outputs or {})}
    for batch, outputs in predict_batches(model, loader, device, preprocess, forward, amp):
        metrics.update(outputs[output_key], batch["label"])
        for key, extra_metrics in extra.items():
            extra_metrics.update(outputs[key], batch["label"])
        if save_predictions is not None:
            prediction = outputs[output_key].argmax(1)
            padded_only = "size" in batch and tuple(prediction.shape[-2:]) == tuple(batch["size"].max(0).values.tolist())
            save_label_pngs(prediction, batch["name"], save_predictions, batch["size"] if padded_only else None)
    result = metrics.compute()
    flat = {key: value for key, value in result.items() if isinstance(value, float)}
    for key, extra_metrics in extra.items():
        flat.update({f"{extra_outputs[key]}{name}": value for name, value in extra_metrics.compute().items()
                     if isinstance(value, float)})
    names = class_names or [str(index) for index in range(num_classes)]
    for name, iou in zip(names, result["per_class_iou"]):
        flat[f"iou/{name}"] = iou
    return flat


def segmenter_from_checkpoint(cfg: Config, checkpoint: dict, num_classes: int, *, with_regularizer: bool) -> nn.Module:
    """The segmenter of a ``train-seg`` checkpoint with its weights loaded.

    ``with_regularizer`` keeps the auxiliary branch (the decoder weights come from the
    checkpoint, so the phase-one file is not needed); otherwise the plain segmenter is
    returned. ``cfg`` (the checkpoint's config) is adjusted in place: no pretrained downloads.
    """
    from labelreg.models.regularizer import plain_segmenter_state
    from labelreg.train_seg import build_model

    regularized = any(key.startswith("segmenter.") for key in checkpoint["model"])
    if with_regularizer and not regularized:
        raise ConfigError("this needs a checkpoint trained with a regularizer (regularizer.kind decoder/encoder); "
                          f"{cfg.name} was trained without one")
    if with_regularizer:
        cfg.regularizer.random_init = True
    cfg.model.pretrained_backbone = cfg.model.init_from = None  # weights come from the checkpoint
    model = build_model(cfg, num_classes, with_regularizer=with_regularizer)
    state = checkpoint["model"] if with_regularizer else plain_segmenter_state(checkpoint["model"])
    model.load_state_dict(state)
    return model


def evaluate_checkpoint(cfg: Config, checkpoint: dict, split: str, save_predictions: str | Path | None = None,
                        aux: bool = False, figure: str | Path | None = None) -> dict[str, float]:
    """Rebuild the model of ``cfg.task`` from ``checkpoint`` and evaluate it on ``split``.

    A regularized segmenter is evaluated as the plain segmenter (its auxiliary branch is
    dropped, so no autoencoder is needed) unless ``aux``: then the auxiliary output through
    the decoder is scored as well (``aux_miou``…), with the decoder weights from the checkpoint.
    ``figure``: also write a PNG of the first images with their predictions (and auxiliary outputs).
    """
    if cfg.task == "classification":
        from labelreg.train_cls import evaluate_classifier_checkpoint

        return evaluate_classifier_checkpoint(cfg, checkpoint, split)
    if cfg.task == "depth":  # lives in the depth package, imported only for depth checkpoints
        from depth.train import evaluate_checkpoint as evaluate_depth_checkpoint

        if aux or figure is not None:
            raise ConfigError("--aux and --figure are for segmentation checkpoints")
        return evaluate_depth_checkpoint(cfg, checkpoint, split, save_predictions=save_predictions)
    device = resolve_device(cfg.train.device)
    dataset = build_dataset(cfg.data, split, limit=cfg.data.val_limit)
    loader = make_loader(dataset, batch_size=cfg.data.eval_batch_size, shuffle=False,
                         num_workers=cfg.data.num_workers, device=device)
    num_classes, class_names = dataset_num_classes(dataset), dataset_class_names(dataset)
    if cfg.task == "autoencoder":
        from labelreg.train_ae import build_autoencoder, build_task

        model = build_autoencoder(cfg, num_classes)
        task = build_task(cfg, model, class_names)
        model.load_state_dict(checkpoint["model"])
    elif cfg.task == "segmentation":
        from labelreg.train_seg import segmentation_task

        if aux and not any(key.startswith("segmenter.") for key in checkpoint["model"]):
            raise ConfigError("--aux needs a checkpoint trained with a regularizer (regularizer.kind decoder/encoder)")
        model = segmenter_from_checkpoint(cfg, checkpoint, num_classes, with_regularizer=aux)
        task = segmentation_task(cfg, model, class_names, save_predictions=save_predictions)
    else:
        raise ConfigError(f"task={cfg.task!r}: labelreg eval knows autoencoder, segmentation, classification, depth")
    if save_predictions is not None and cfg.task != "segmentation":
        raise ConfigError("--save-predictions is for segmentation checkpoints")
    if figure is not None and cfg.task != "segmentation":
        raise ConfigError("--figure is for segmentation checkpoints")
    metrics = task.evaluate(model.to(device), loader, device)
    if figure is not None:
        from labelreg.viz import segmentation_figure

        batch = task.eval_augment(to_device(next(iter(loader)), device))
        with torch.inference_mode():
            outputs = model.eval()(batch["image"])
        columns = [("prediction", outputs["seg"].argmax(1))]
        if "aux_seg" in outputs:
            columns.append(("auxiliary (decoder)", outputs["aux_seg"].argmax(1)))
        segmentation_figure(batch["image"], batch["label"], columns, figure)
    return metrics


def format_metrics(metrics: dict[str, float], title: str = "") -> str:
    """Headline metrics first, then per-class IoU, as an aligned text table."""
    lines = [title, "-" * max(len(title), 32)] if title else []
    headline = [key for key in metrics if "/" not in key]
    per_class = [key for key in metrics if key.startswith("iou/")]
    for key in headline:  # fractions shown as percentages; losses and depth errors as they are
        raw = "loss" in key or key.split("_", 1)[-1] in ("rmse", "rmse_log", "abs_rel", "sq_rel")
        value = metrics[key] if raw else 100 * metrics[key]
        lines.append(f"{key:24s} {value:7.3f}" if raw else f"{key:24s} {value:7.2f}")
    if per_class:
        lines.append("per-class IoU:")
        for key in per_class:
            value = metrics[key]
            lines.append(f"  {key[4:]:22s} {'   n/a' if value != value else f'{100 * value:7.2f}'}")
    return "\n".join(lines)
