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

from labelreg.config import load_config
from labelreg.weak import pipeline

STEPS = {
    "pretrain": "train the backbone as a multi-label tag classifier (image tags only) into <run>/pretrain/backbone.pt; "
                "needs weak.pretrain_epochs > 0",
    "features": "extract zoom-out features, tags and statistics of both splits into <run>/features",
    "localize": "train the per-class localization nets from image tags (MIL loss)",
    "sample": "sample labelled points on the training images from the localization maps",
    "train": "train the 1×1 segmentation head on the points (and the dense baseline); validation mIoU",
    "run": "all of the above, in order (pretrain only when weak.pretrain_epochs > 0)",
}


def parse_classes(text: str) -> list[int]:
    """``7`` or ``7,12`` → [7, 12] (comma-separated, so the list cannot swallow the overrides after it)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes takes class ids like 7 or 7,12, got {text!r}") from None


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
    """Add ``labelreg weak <step>`` to ``commands`` (the subparsers of ``labelreg``'s parser)."""
    weak = commands.add_parser("weak", help="weakly supervised segmentation from image tags (thesis ch. 4)",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = weak.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, help_text in STEPS.items():
        step = steps.add_parser(name, help=help_text, description=help_text)
        step.add_argument("--config", required=True, help="YAML config with task: weak, e.g. "
                                                           "configs/demo/weak-tiny_synth-voc.yaml")
        step.add_argument("--no-progress", action="store_true", help="no progress bars (the log is still written)")
        if name == "localize":
            step.add_argument("--classes", type=parse_classes, default=None, metavar="C[,C...]",
                              help="train only these classes' nets, e.g. 7 or 7,12 (default: weak.classes, else every "
                                   "tagged class); the other classes' nets are left as they are")
        if name == "train":
            step.add_argument("--no-dense", action="store_true", help="skip the fully supervised baseline")
        step.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. weak.k=10")
        step.set_defaults(run=cmd_weak)
    return weak
