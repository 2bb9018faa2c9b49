"""The training engine: one loop (``fit``) for every task, its optimizers, its run directories.

- :mod:`labelreg.engine.loop`: ``LoopSpec`` (what a task hands the engine), ``fit``,
  ``train_one_epoch``, ``predict_batches``, ``autocast``;
- :mod:`labelreg.engine.optim`: optimizers, learning-rate schedules, ``optimizer_step``;
- :mod:`labelreg.engine.checkpoint`: run directories and their lock, checkpoints, RNG state, resume checks.
"""
from labelreg.engine.checkpoint import (LOCK_NAME, RESUME_CHANGEABLE, RunDirectoryError, RunLock, TrainState,
                                        capture_rng_state, checkpoint_payload, claim_run_directory,
                                        remove_stale_temporaries, repair_run, restore_rng_state, resume_changes,
                                        run_directory, write_metrics_json)
from labelreg.engine.loop import (LoopSpec, NonFiniteLossError, autocast, claim_for_training, fit, predict_batches,
                                  train_one_epoch, weighted_total)
from labelreg.engine.optim import (EpochAwareLR, build_optimizer, build_scheduler, lr_factor, optimizer_step,
                                   parameter_groups)

__all__ = [
    "EpochAwareLR", "LOCK_NAME", "LoopSpec", "NonFiniteLossError", "RESUME_CHANGEABLE", "RunDirectoryError",
    "RunLock", "TrainState", "autocast", "build_optimizer", "build_scheduler", "capture_rng_state",
    "checkpoint_payload", "claim_for_training", "claim_run_directory", "fit", "lr_factor", "optimizer_step",
    "parameter_groups", "predict_batches", "remove_stale_temporaries", "repair_run", "restore_rng_state", "resume_changes",
    "run_directory", "train_one_epoch", "weighted_total", "write_metrics_json",
]
