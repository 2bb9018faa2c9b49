"""The training engine: one loop (``fit``) for every task, its optimizers, its run directories.

- :mod:`labelreg.engine.loop`: ``LoopSpec`` (what a task hands the engine), ``fit``,
  ``train_one_epoch``, ``predict_batches``, ``autocast``;
- :mod:`labelreg.engine.optim`: optimizers, learning-rate schedules, ``optimizer_step``;
- :mod:`labelreg.engine.checkpoint`: checkpoints, RNG state, resume checks, repairs on resume;
- :mod:`labelreg.engine.rundir`: run directories, their lock and run marker, what ``--overwrite`` may delete.
"""
from labelreg.engine.checkpoint import (RESUME_CHANGEABLE, TrainState, capture_rng_state, checkpoint_payload,
                                        epoch_log_line, repair_run, repair_train_log, restore_rng_state,
                                        resume_changes, write_metrics_json)
from labelreg.engine.loop import (LoopSpec, NonFiniteLossError, autocast, check_resume, claim_for_training, fit,
                                  predict_batches, train_one_epoch, weighted_total)
from labelreg.engine.rundir import (LOCK_NAME, RUN_MARKER, RUN_OUTPUTS, RunDirectoryError, RunLock,
                                    claim_run_directory, is_run_directory, mark_run_directory,
                                    remove_run_outputs, remove_stale_temporaries, run_directory, run_outputs)
from labelreg.engine.optim import (EpochAwareLR, build_optimizer, build_scheduler, lr_factor, optimizer_step,
                                   parameter_groups)

__all__ = [
    "EpochAwareLR", "LOCK_NAME", "LoopSpec", "NonFiniteLossError", "RESUME_CHANGEABLE", "RUN_MARKER", "RUN_OUTPUTS",
    "RunDirectoryError", "RunLock", "TrainState", "autocast", "build_optimizer", "build_scheduler",
    "capture_rng_state", "check_resume", "checkpoint_payload", "claim_for_training", "claim_run_directory",
    "epoch_log_line", "fit", "is_run_directory", "lr_factor", "mark_run_directory", "optimizer_step",
    "parameter_groups", "predict_batches", "remove_run_outputs", "remove_stale_temporaries", "repair_run",
    "repair_train_log", "restore_rng_state", "resume_changes", "run_directory", "run_outputs", "train_one_epoch",
    "weighted_total", "write_metrics_json",
]
