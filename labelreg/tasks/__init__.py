"""The tasks: what ``cfg.task`` names, each a module of plain functions over the engine.

Each task module builds its model, its loss terms and its ``LoopSpec`` for the engine, trains
(``train(cfg, resume=None)``), scores a checkpoint (``evaluate_checkpoint``) and rebuilds a model
from a checkpoint (``model_from_checkpoint``). ``TASKS`` maps each value of ``cfg.task`` to those
three functions; only the application layer (``labelreg.cli``, ``labelreg.demo``) reads it, and
merges in the entries of packages built on top of labelreg (``depth``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from labelreg.config import Config, ConfigError
from labelreg.tasks import autoencoder, classification, segmentation
from labelreg.tasks.checks import autoencoder_metrics, classification_metrics, segmentation_metrics


@dataclass(frozen=True)
class TaskEntry:
    """What the application layer needs to know about one value of ``cfg.task``.

    - ``train(cfg, resume=None) -> dict``: trains in ``cfg.run_dir``; the engine's final state.
    - ``evaluate_checkpoint(cfg, checkpoint, split, *, save_predictions=None, aux=False, figure=None,
      resolved=None) -> metrics``: scores a loaded checkpoint on ``split``; a task refuses the options
      it has no meaning for with a ``ConfigError``.
    - ``model_from_checkpoint(checkpoint, *, with_regularizer=False, **options) -> nn.Module``: the
      model of a loaded checkpoint with its weights in place; nothing is downloaded or read besides it.
    - ``best_metrics(cfg) -> names``: the metrics its evaluation reports, which ``train.best_metric`` may
      name (checked at load by ``checks.check_training_config``); None: not checked.
    """

    train: Callable[..., dict]
    evaluate_checkpoint: Callable[..., dict]
    model_from_checkpoint: Callable[..., nn.Module]
    best_metrics: Callable[[Config], tuple[str, ...]] | None = None


TASKS: dict[str, TaskEntry] = {
    "autoencoder": TaskEntry(train=autoencoder.train, evaluate_checkpoint=autoencoder.evaluate_checkpoint,
                             model_from_checkpoint=autoencoder.model_from_checkpoint,
                             best_metrics=autoencoder_metrics),
    "segmentation": TaskEntry(train=segmentation.train, evaluate_checkpoint=segmentation.evaluate_checkpoint,
                              model_from_checkpoint=segmentation.model_from_checkpoint,
                              best_metrics=segmentation_metrics),
    "classification": TaskEntry(train=classification.train, evaluate_checkpoint=classification.evaluate_checkpoint,
                                model_from_checkpoint=classification.model_from_checkpoint,
                                best_metrics=classification_metrics),
}


def task_entry(task: str, table: dict[str, TaskEntry] | None = None) -> TaskEntry:
    """The entry of ``task`` in ``table`` (default ``TASKS``), or a ``ConfigError`` naming the known tasks."""
    table = TASKS if table is None else table
    if task not in table:
        raise ConfigError(f"task={task!r}; known tasks: {', '.join(sorted(table))}")
    return table[task]


def model_from_checkpoint(checkpoint: dict, *, with_regularizer: bool = False,
                          table: dict[str, TaskEntry] | None = None, **options) -> nn.Module:
    """The model of any loaded checkpoint, rebuilt by its task's entry with its weights loaded.

    ``with_regularizer``: a regularized segmenter keeps its auxiliary branch (the decoder's weights come
    from the checkpoint). ``options`` go to the task's builder (e.g. ``num_classes``); ``table`` adds
    tasks outside labelreg (the application layer passes depth's).
    """
    task = checkpoint.get("config", {}).get("task") if isinstance(checkpoint, dict) else None
    if task is None:
        raise ConfigError("this checkpoint stores no config.task: it was not written by a labelreg trainer")
    return task_entry(task, table).model_from_checkpoint(checkpoint, with_regularizer=with_regularizer, **options)
