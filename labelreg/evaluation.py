"""Moved to ``labelreg.tasks``: the shared loop and table to ``labelreg.tasks.evaluate``, each task's
``evaluate_checkpoint`` and ``model_from_checkpoint`` to its module, looked up in ``labelreg.tasks.TASKS``.
This module keeps the old names working during the move."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from labelreg.config import Config
from labelreg.tasks import segmentation, task_entry
from labelreg.tasks.evaluate import evaluate_segmentation, format_metrics

__all__ = ["evaluate_segmentation", "format_metrics", "segmenter_from_checkpoint", "evaluate_checkpoint"]


def segmenter_from_checkpoint(cfg: Config, checkpoint: dict, num_classes: int, *, with_regularizer: bool) -> nn.Module:
    """Old signature of ``labelreg.tasks.segmentation.model_from_checkpoint``."""
    return segmentation.model_from_checkpoint(checkpoint, with_regularizer=with_regularizer, num_classes=num_classes,
                                              cfg=cfg)


def evaluate_checkpoint(cfg: Config, checkpoint: dict, split: str, save_predictions: str | Path | None = None,
                        aux: bool = False, figure: str | Path | None = None) -> dict[str, float]:
    """Old entry point: the task's ``evaluate_checkpoint`` from ``labelreg.tasks.TASKS``."""
    return task_entry(cfg.task).evaluate_checkpoint(cfg, checkpoint, split, save_predictions=save_predictions,
                                                    aux=aux, figure=figure)
