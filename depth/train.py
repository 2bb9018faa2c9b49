"""Moved to ``depth.task``; re-exported here while importers move."""
from depth.task import (DEPTH_TASK, EVAL_PROTOCOLS, SEG_TERMS, UPSAMPLED_OUTPUTS, PhasedBatchSampler, at_input_size,
                        build_model, build_train_loader, calibrate_feature_normalisation, checkpoint_num_classes,
                        depth_task, eval_input_size, evaluate_checkpoint, evaluate_depth, labeled_samples, loss_terms,
                        make_dynamic_weights, make_forward, make_losses, metrics_protocol, model_from_checkpoint,
                        train)
from labelreg.storage import load_checkpoint

__all__ = ["DEPTH_TASK", "EVAL_PROTOCOLS", "SEG_TERMS", "UPSAMPLED_OUTPUTS", "PhasedBatchSampler", "at_input_size",
           "build_model", "build_train_loader", "calibrate_feature_normalisation", "checkpoint_num_classes",
           "depth_task", "eval_input_size", "evaluate_checkpoint", "evaluate_depth", "labeled_samples",
           "load_checkpoint", "loss_terms", "make_dynamic_weights", "make_forward", "make_losses", "metrics_protocol",
           "model_from_checkpoint", "train"]
