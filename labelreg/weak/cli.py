"""``labelreg weak <step> --config CFG [section.key=value ...]``: weak supervision from image tags (thesis ch. 4).

Steps (each reads the previous one's files from the config's run directory):

- ``pretrain``: only with ``weak.pretrain_epochs > 0``: train the backbone as a tag classifier
  (image tags only; a stand-in for ImageNet weights offline); later steps use its weights;
- ``features``: zoom-out (+ global) features of both splits, tags, statistics;
- ``localize [--classes C[,C...]]``: one localization net per class (only the listed ones);
- ``sample``: points on the training images with ``weak.sampler``;
- ``train [--no-dense]``: the 1×1 head on the points (and on dense labels), validation mIoU;
- ``run``: all of them in order (``pretrain`` only when ``weak.pretrain_epochs > 0``).

``register(commands)`` adds the ``weak`` subcommand to ``labelreg``'s subparsers;
errors are raised as ConfigError / ValueError / FileNotFoundError for its main to report.
"""
from __future__ import annotations

import argparse

from labelreg.cli_args import add_weak_parser
from labelreg.config import load_config
from labelreg.weak import pipeline

def cmd_weak(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)  # every step checks it before writing anything
    progress = not args.no_progress
    log = pipeline.make_log(cfg)
    if args.step == "pretrain":
        pipeline.step_pretrain(cfg, log=log, progress=progress)
    elif args.step == "features":
        pipeline.step_features(cfg, log=log, progress=progress)
    elif args.step == "localize":
        pipeline.step_localize(cfg, classes=args.classes, log=log, progress=progress)
    elif args.step == "sample":
        pipeline.step_sample(cfg, log=log, progress=progress)
    elif args.step == "train":
        pipeline.step_train(cfg, dense=False if args.no_dense else None, log=log, progress=progress)
    else:
        results = pipeline.run_all(cfg, log=log, progress=progress)
        trained = results["train"]
        points = trained[f"points_{cfg.weak.sampler}"]
        line = (f"weak run: {cfg.weak.sampler} points ({points['points_per_image']:.1f} per image) → val mIoU "
                f"{100 * points['miou']:.1f}")
        if "dense" in trained:
            line += f"; same head on dense labels: {100 * trained['dense']['miou']:.1f}"
        log(line)
    print(f"run directory: {cfg.run_dir} (metrics.json, weak.log)")


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``labelreg weak <step>`` to ``commands`` (the subparsers of a parser), each step running ``cmd_weak``."""
    weak, steps = add_weak_parser(commands)
    for step in steps:
        step.set_defaults(run=cmd_weak)
    return weak
