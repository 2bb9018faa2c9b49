"""Evaluation shared by the tasks: the confusion-matrix loop their ``LoopSpec.evaluate`` runs, the
evaluation loader of a checkpoint's config, and the text table ``labelreg eval`` prints.

Each task scores its own checkpoints (``labelreg.tasks.<task>.evaluate_checkpoint``); the application
layer picks the task from ``labelreg.tasks.TASKS``, so nothing here knows which tasks exist."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from labelreg.config import Config, ConfigError
from labelreg.data.build import build_dataset, evaluation_subsets
from labelreg.data.loader import Batch, make_loader
from labelreg.engine import predict_batches
from labelreg.metrics import SegMetrics
from labelreg.tasks.inference import save_label_pngs


def evaluate_segmentation(model: nn.Module, loader: Iterable[Batch], device: torch.device, *, num_classes: int,
                          preprocess: Callable[[Batch], Batch], forward: Callable[[nn.Module, Batch], dict],
                          output_key: str = "seg", amp: str = "none", class_names: list[str] | None = None,
                          save_predictions: str | Path | None = None,
                          extra_outputs: dict[str, str] | None = None) -> dict[str, float]:
    """Confusion-matrix metrics of ``outputs[output_key]`` against ``batch['label']`` over the whole loader.

    ``extra_outputs`` maps further output names to a metric prefix (``{"aux_seg": "aux_"}`` adds
    ``aux_miou``…), scored in the same pass. With ``save_predictions`` every prediction is also
    written there as ``<name>.png`` (VOC palette), cropped back to the original size when padded.
    A data set with evaluation subsets (``data.build.evaluation_subsets``; CamVid test: its unseen drive
    Seq05VD) also gets each subset's metrics, the subset's name before the metric: ``Seq05VD_miou``
    (``aux_Seq05VD_miou`` for an extra output).
    """
    subsets = evaluation_subsets(loader.dataset) if isinstance(getattr(loader, "dataset", None), Dataset) else {}
    metrics = SegMetrics(num_classes, device=device)
    extra = {key: SegMetrics(num_classes, device=device) for key in (extra_outputs or {})}
    # (output key, metric prefix) → metrics of each subset; every rank holds every subset (compute all-reduces)
    parts = {(key, prefix): {name: SegMetrics(num_classes, device=device) for name in subsets}
             for key, prefix in [(output_key, ""), *(extra_outputs or {}).items()]}
    for batch, outputs in predict_batches(model, loader, device, preprocess, forward, amp):
        metrics.update(outputs[output_key], batch["label"])
        for key, extra_metrics in extra.items():
            extra_metrics.update(outputs[key], batch["label"])
        for name, sequences in subsets.items():
            members = [i for i, sequence in enumerate(batch["sequence"]) if sequence in sequences]
            if members:
                rows = torch.tensor(members, device=batch["label"].device)
                for (key, _), part_metrics in parts.items():
                    part_metrics[name].update(outputs[key][rows], batch["label"][rows])
        if save_predictions is not None:
            prediction = outputs[output_key].argmax(1)
            padded_only = "size" in batch and tuple(prediction.shape[-2:]) == tuple(batch["size"].max(0).values.tolist())
            save_label_pngs(prediction, batch["name"], save_predictions, batch["size"] if padded_only else None)
    result = metrics.compute()
    flat = {key: value for key, value in result.items() if isinstance(value, float)}
    for key, extra_metrics in extra.items():
        flat.update({f"{extra_outputs[key]}{name}": value for name, value in extra_metrics.compute().items()
                     if isinstance(value, float)})
    for (_, prefix), part_metrics in parts.items():
        for name, part in part_metrics.items():
            flat.update({f"{prefix}{name}_{metric}": value for metric, value in part.compute().items()
                         if isinstance(value, float)})
    names = class_names or [str(index) for index in range(num_classes)]
    for name, iou in zip(names, result["per_class_iou"]):
        flat[f"iou/{name}"] = iou
    return flat


def predict_at_size(model: nn.Module, image: torch.Tensor, size: tuple[int, int],
                    keys: tuple[str, ...] = ("seg", "aux_seg")) -> dict[str, torch.Tensor]:
    """One forward of B×3×H×W ``image`` resized to ``size`` (bilinear, as ``inference.predict_probabilities``
    resizes), its ``keys`` outputs (B×C×h×w logits) upsampled bilinearly back to H×W; other outputs as they are.
    At ``size`` = H×W this is ``model(image)``: the protocol that scores a model on labels larger than its input
    (CamVid's 360×480 with ``eval.short_sides``) at one input size, primary and auxiliary output alike."""
    height, width = image.shape[-2:]
    if tuple(size) == (height, width):
        return model(image)
    outputs = dict(model(F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False)))
    for key in keys:
        if key in outputs:
            outputs[key] = F.interpolate(outputs[key], size=(height, width), mode="bilinear", align_corners=False)
    return outputs


OPTION_FLAGS = {"save_predictions": "--save-predictions", "aux": "--aux", "figure": "--figure"}


def refuse_options(task: str, supported: str = "segmentation", **options) -> None:
    """A ``ConfigError`` for the first evaluation option given (truthy) that ``task`` has no meaning for."""
    for name, value in options.items():
        if value:
            raise ConfigError(f"{OPTION_FLAGS.get(name, name)} is for {supported} checkpoints, not {task!r} ones")


def evaluation_loader(cfg: Config, split: str, device: torch.device) -> tuple[Dataset, DataLoader]:
    """The data set of ``split`` (limited by ``data.val_limit``) and its evaluation loader."""
    dataset = build_dataset(cfg.data, split, limit=cfg.data.val_limit)
    loader = make_loader(dataset, batch_size=cfg.data.eval_batch_size, shuffle=False,
                         num_workers=cfg.data.num_workers, device=device)
    return dataset, loader

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
