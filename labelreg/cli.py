"""``labelreg <subcommand>``: synth, train-ae, train-seg, train-cls, train-depth, eval, export, demo."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from labelreg.config import ConfigError, config_from_dict, load_config


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 128x160), got {text!r}") from None
    return height, width


def cmd_synth(args: argparse.Namespace) -> None:
    from labelreg.data.synthetic import write_synthetic_dataset

    started = time.perf_counter()
    paths = write_synthetic_dataset(args.out, labeled=args.labeled, depth_only=args.depth_only, size=args.size,
                                    seed=args.seed, progress=True)
    print(f"wrote synthetic data set in {time.perf_counter() - started:.1f}s:")
    for name in ("nyu_mat", "splits", "mapping", "depth_only_dir", "voc_root"):
        print(f"  {name:15s} {getattr(paths, name)}")


def cmd_train(args: argparse.Namespace) -> None:
    """train-ae / train-seg / train-cls / train-depth: the same flow, different trainers and ``task``."""
    import importlib

    module, task = {"train-ae": ("labelreg.train_ae", "autoencoder"),
                    "train-seg": ("labelreg.train_seg", "segmentation"),
                    "train-cls": ("labelreg.train_cls", "classification"),
                    # the one place labelreg reaches into the depth package, and only when asked to
                    "train-depth": ("depth.train", "depth")}[args.command]
    cfg = load_config(args.config, args.overrides)
    if cfg.task != task:
        raise ConfigError(f"{args.config} has task={cfg.task!r}; labelreg {args.command} trains task={task!r}")
    train = importlib.import_module(module).train
    resume = args.resume_from
    if args.resume:
        candidate = cfg.run_dir / "checkpoints" / "last.pt"
        resume = candidate if candidate.is_file() else None
        if resume is None:
            print(f"no {candidate} yet: starting from scratch")
    train(cfg, resume=resume)
    print(f"run directory: {cfg.run_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    from labelreg.engine import load_checkpoint
    from labelreg.evaluation import evaluate_checkpoint, format_metrics

    checkpoint = load_checkpoint(args.checkpoint)
    cfg = config_from_dict(checkpoint["config"], args.overrides)
    split = args.split or cfg.data.val_split
    metrics = evaluate_checkpoint(cfg, checkpoint, split, save_predictions=args.save_predictions, aux=args.aux,
                                  figure=args.figure)
    print(format_metrics(metrics, title=f"{cfg.name} — {cfg.task} on {cfg.data.dataset} {split}"))
    protocol = None
    if cfg.task == "depth":
        protocol = (f"depth: valid ground truth in [{cfg.depth.min_depth}, {cfg.depth.max_depth}] m, Eigen crop "
                    f"{'on' if cfg.depth.eigen_crop else 'off'}; pixel_* = accumulated over all pixels, image_* = "
                    "mean of per-image values; relative errors divided by the ground truth; rmse in metres")
        print(protocol)
    folder = Path(args.checkpoint).resolve().parent
    folder = folder.parent if folder.name == "checkpoints" else folder  # the run directory
    out = Path(args.out) if args.out else folder / f"eval_{split}{'_aux' if args.aux else ''}.json"
    record = {"checkpoint": str(args.checkpoint), "split": split, "metrics": metrics}
    if protocol:
        record["protocol"] = protocol
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


def cmd_export(args: argparse.Namespace) -> None:
    """Write a regularized run's plain segmenter: same weights, auxiliary branch and decoder dropped."""
    from labelreg.config import to_dict
    from labelreg.engine import load_checkpoint, save_checkpoint
    from labelreg.models.regularizer import plain_segmenter_state

    checkpoint = load_checkpoint(args.checkpoint)
    cfg = config_from_dict(checkpoint["config"])
    if cfg.task != "segmentation":
        raise ConfigError(f"{args.checkpoint} is a {cfg.task!r} checkpoint; export is for segmenters")
    state = plain_segmenter_state(checkpoint["model"])
    cfg.regularizer.kind = "none"
    cfg.model.pretrained_backbone = cfg.model.init_from = None
    save_checkpoint(args.out, {"model": state, "config": to_dict(cfg), "exported_from": str(args.checkpoint),
                               "metrics": checkpoint.get("metrics", {})})
    dropped = len(checkpoint["model"]) - len(state)
    print(f"wrote {args.out}: {cfg.model.name}, {len(state)} tensors ({dropped} of the auxiliary branch dropped)")


def cmd_demo(args: argparse.Namespace) -> None:
    from labelreg.demo import run_demo

    run_demo(out=Path(args.out), data_root=Path(args.data), overrides=args.overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelreg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write the synthetic data set in the real NYUv2 / VOC formats")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--labeled", type=int, default=300, help="labeled scenes (default 300)")
    synth.add_argument("--depth-only", type=int, default=2000, help="depth-only frames (default 2000)")
    synth.add_argument("--size", type=parse_size, default=(128, 160), help="HxW, multiples of 16 (default 128x160)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=cmd_synth)

    for name, help_text, example in (
            ("train-ae", "phase one: train the label autoencoder", "configs/ae-128_voc12aug_256.yaml"),
            ("train-seg", "train a segmenter from labelreg.models.MODELS", "configs/zoomout-densenet121_voc12aug_256.yaml"),
            ("train-cls", "phase zero: train a SUNet classifier on an ImageFolder tree",
             "configs/sunet64_imagenet_224.yaml"),
            ("train-depth", "NYUv2 depth: seg→depth or the two-part depth + segmentation model",
             "configs/twopart-densenet121_nyu40.yaml")):
        trainer = commands.add_parser(name, help=help_text)
        trainer.add_argument("--config", required=True, help=f"YAML config, e.g. {example}")
        trainer.add_argument("--resume", action="store_true", help="continue from the run's checkpoints/last.pt if present")
        trainer.add_argument("--resume-from", default=None, metavar="CKPT", help="continue from this checkpoint")
        trainer.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=5")
        trainer.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a split of its data set")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--split", default=None, help="default: the config's data.val_split")
    evaluate.add_argument("--out", default=None, help="JSON output (default: <run>/eval_<split>.json)")
    evaluate.add_argument("--save-predictions", default=None, metavar="DIR",
                          help="write each prediction as DIR/<image id>.png (segmentation: VOC palette; depth: "
                               "16-bit millimetres plus a colour preview)")
    evaluate.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.root=/data/voc")
    evaluate.add_argument("--aux", action="store_true",
                          help="regularized segmenters: also score the auxiliary output through the decoder")
    evaluate.add_argument("--figure", default=None, metavar="PNG",
                          help="segmentation: picture of the first images, ground truth and predictions (with --aux: "
                               "the decoder's output beside the primary one)")
    evaluate.set_defaults(run=cmd_eval)

    export = commands.add_parser("export", help="write the plain segmenter of a regularized run (no decoder)")
    export.add_argument("--checkpoint", required=True)
    export.add_argument("--out", required=True, help="output .pt (loads with labelreg eval --checkpoint)")
    export.set_defaults(run=cmd_export)

    demo = commands.add_parser("demo", help="synthetic data → phase one, with a report in runs/demo")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--data", default="data/synthetic", help="synthetic data folder (written if absent)")
    demo.add_argument("overrides", nargs="*", help="overrides for the demo's autoencoder config")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"labelreg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labelreg {args.command}: interrupted; the last completed checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
