"""``labelreg <command>``: the command line (the ``labelreg`` console script and ``python -m labelreg.cli``).

Layout rule (checked by tests/test_layout.py through scripts/import_graph.py): this module builds the parser
from the standard library and ``labelreg.cli_args`` only, so ``labelreg --help`` and every ``--help`` start
without torch. What a command needs (torch, the tasks, the demo, the study…) is imported inside that
command's function, one of the functions the ``COMMANDS`` table names, and only when the command runs.
Those imports are edges of the import graph like any other, so the layering and cycle checks see them.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from importlib import metadata
from pathlib import Path

from labelreg import __version__
from labelreg.cli_args import (DEMO_STAGES, NO_PROGRESS_ENV, add_bench_arguments, add_data_parser, add_no_progress,
                               add_query_parser, add_weak_parser, parse_size, progress_wanted, study_protocols)

DESCRIPTION = """\
Label-structure regularization for semantic segmentation: train a label autoencoder on ground-truth
label maps (phase one), then segmenters with its frozen decoder as a regularizer (phase two); joint
depth and segmentation; label-space queries; weak supervision from image tags; benchmarks; a demo
on synthetic scenes and a study of whether the regularizer helps.

Start with:  labelreg demo          (every stage on synthetic scenes, about 8 minutes on a CPU)
Then:        labelreg <command> --help"""


def cmd_synth(args: argparse.Namespace) -> None:
    import time

    from labelreg.data.synthetic import write_synthetic_dataset

    started = time.perf_counter()
    paths = write_synthetic_dataset(args.out, labeled=args.labeled, depth_only=args.depth_only, size=args.size,
                                    seed=args.seed, progress=progress_wanted())
    print(f"wrote synthetic data set in {time.perf_counter() - started:.1f}s:")
    for name in ("nyu_mat", "splits", "mapping", "depth_only_dir", "voc_root"):
        print(f"  {name:15s} {getattr(paths, name)}")


TRAIN_COMMANDS = {"train-ae": "autoencoder", "train-seg": "segmentation", "train-cls": "classification",
                  "train-depth": "depth"}  # subcommand → the cfg.task it trains


def cmd_train(args: argparse.Namespace) -> None:
    """train-ae / train-seg / train-cls / train-depth: the same flow, the task's ``train`` from its entry."""
    from depth.task import DEPTH_TASK
    from labelreg.config import ConfigError, load_config
    from labelreg.engine import claim_run_directory, run_directory
    from labelreg.storage import TRAINING_STATE_KEYS, load_run_checkpoint
    from labelreg.tasks import TASKS, task_entry
    from labelreg.tasks.checks import check_start_checkpoints, check_training_config

    task = TRAIN_COMMANDS[args.command]
    cfg = load_config(args.config, args.overrides)
    if cfg.task != task:
        raise ConfigError(f"{args.config} has task={cfg.task!r}; labelreg {args.command} trains task={task!r}")
    # --resume-from a checkpoint of another run starts this run from it (so this folder must be free, or --overwrite)
    resume_here = args.resume or (args.resume_from is not None
                                  and run_directory(args.resume_from) == cfg.run_dir.resolve())
    if args.overwrite and resume_here:
        raise ConfigError("--overwrite deletes the run's checkpoints, --resume continues from them: give one of them")
    entry = task_entry(task, {**TASKS, "depth": DEPTH_TASK})  # the application layer is the one place that knows depth
    check_training_config(cfg, entry.best_metrics)  # values only the task can judge, before anything is read
    check_start_checkpoints(cfg)  # model.init_from / regularizer.autoencoder of the right kind
    if args.resume_from is not None:  # the kind of file is checked before the run directory is claimed
        load_run_checkpoint(args.resume_from, purpose="--resume-from", tasks=(task,), keys=TRAINING_STATE_KEYS)
    # held until the run ends: refuses a second process, and a finished run unless --resume or --overwrite
    with claim_run_directory(cfg.run_dir, resume=resume_here, overwrite=args.overwrite):
        resume = args.resume_from
        if args.resume:
            candidate = cfg.run_dir / "checkpoints" / "last.pt"
            resume = candidate if candidate.is_file() else None
            if resume is None:
                print(f"no {candidate} yet: starting from scratch")
        entry.train(cfg, resume=resume)
    print(f"run directory: {cfg.run_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    """Score a checkpoint with its task's ``evaluate_checkpoint``, reading back its run's resolved record."""
    from depth.task import DEPTH_TASK, metrics_protocol
    from labelreg.config import config_from_dict
    from labelreg.engine import run_directory
    from labelreg.storage import load_run_checkpoint, write_json
    from labelreg.tasks import TASKS, task_entry
    from labelreg.tasks.evaluate import format_metrics
    from labelreg.tasks.resolved import resolved_for_checkpoint

    checkpoint = load_run_checkpoint(args.checkpoint, purpose="labelreg eval")
    cfg = config_from_dict(checkpoint["config"], args.overrides)
    split = args.split or cfg.data.val_split
    evaluate = task_entry(cfg.task, {**TASKS, "depth": DEPTH_TASK}).evaluate_checkpoint
    metrics = evaluate(cfg, checkpoint, split, save_predictions=args.save_predictions, aux=args.aux,
                       figure=args.figure, resolved=resolved_for_checkpoint(args.checkpoint))
    print(format_metrics(metrics, title=f"{cfg.name} — {cfg.task} on {cfg.data.dataset} {split}"))
    protocol = metrics_protocol(cfg) if cfg.task == "depth" else None  # how depth's metrics were computed
    if protocol:
        print(protocol)
    out = Path(args.out) if args.out else run_directory(args.checkpoint) / f"eval_{split}{'_aux' if args.aux else ''}.json"
    record = {"checkpoint": str(args.checkpoint), "split": split, "metrics": metrics}
    if protocol:
        record["protocol"] = protocol
    write_json(out, record)
    print(f"wrote {out}")


def cmd_export(args: argparse.Namespace) -> None:
    """Write a regularized run's plain segmenter: same weights, auxiliary branch and decoder dropped.

    Its config is the run's with ``regularizer.kind: none`` and no backbone or start weights to read
    (a new config; the run's is left as it was loaded)."""
    import dataclasses

    from labelreg.config import config_from_dict, to_dict
    from labelreg.models.regularizer import plain_segmenter_state
    from labelreg.storage import load_run_checkpoint, save_checkpoint

    checkpoint = load_run_checkpoint(args.checkpoint, purpose="labelreg export", tasks=("segmentation",))
    cfg = config_from_dict(checkpoint["config"])
    state = plain_segmenter_state(checkpoint["model"])
    exported = dataclasses.replace(cfg, regularizer=dataclasses.replace(cfg.regularizer, kind="none"),
                                   model=dataclasses.replace(cfg.model, pretrained_backbone=None, init_from=None))
    save_checkpoint(args.out, {"model": state, "config": to_dict(exported), "exported_from": str(args.checkpoint),
                               "metrics": checkpoint.get("metrics", {})})
    dropped = len(checkpoint["model"]) - len(state)
    print(f"wrote {args.out}: {cfg.model.name}, {len(state)} tensors ({dropped} of the auxiliary branch dropped)")


def cmd_query(args: argparse.Namespace) -> None:
    """Nearest regions in label space (thesis §5.4.3): table on stdout, JSON and a picture grid."""
    from labelreg.retrieval import query_checkpoints

    run = query_checkpoints(args.image, autoencoder=args.autoencoder, segmenter=args.segmenter,
                            reference_from=args.reference_from, boxes=args.box or [], classes=args.class_name or [],
                            dataset=args.dataset, root=args.root, overrides=args.overrides, split=args.split,
                            reference_split=args.reference_split, reference_limit=args.reference_limit, k=args.k,
                            metric=args.metric, pooling=args.pooling, include_self=args.include_self,
                            index_folder=args.index, rebuild=args.rebuild, index_dtype=args.index_dtype,
                            overlay=args.overlay, device=args.device, json_path=args.json, figure_path=args.figure)
    print(run.report())


def cmd_weak(args: argparse.Namespace) -> None:
    from labelreg.weak.cli import cmd_weak as run_weak_step

    run_weak_step(args)


def cmd_bench(args: argparse.Namespace) -> None:
    from labelreg.bench.cli import run_from_args

    run_from_args(args)


def cmd_data(args: argparse.Namespace) -> None:
    from labelreg.data.download.cli import run as run_data_step

    run_data_step(args)


def cmd_demo(args: argparse.Namespace) -> None:
    from labelreg.demo import run_demo

    run_demo(out=args.out and Path(args.out), data_root=args.data and Path(args.data), overrides=args.overrides,
             stages=args.stages, skip=args.skip, fresh=args.fresh, dataset=args.dataset)


def cmd_study(args: argparse.Namespace) -> None:
    """Does the regularizer help? Every arm × seed of a protocol, paired, with a report (thesis §5.4)."""
    from labelreg.study import run_study

    summary = run_study(args.protocol, out=args.out, jobs=args.jobs, launcher=args.launcher)
    failed = [run["name"] for run in summary["runs"] if run["status"] != "ok"]
    failed += [f"phase one {name}" for name, run in summary["autoencoders"].items() if run["status"] != "ok"]
    if failed:  # the report is written; the exit status says it is incomplete
        raise RuntimeError(f"{len(failed)} run(s) failed: {', '.join(failed)} (their logs are listed in report.md)")


# every subcommand → the function that runs it; their imports are the only ones inside functions here
COMMANDS = {"synth": cmd_synth, "train-ae": cmd_train, "train-seg": cmd_train, "train-cls": cmd_train,
            "train-depth": cmd_train, "eval": cmd_eval, "export": cmd_export, "query": cmd_query, "weak": cmd_weak,
            "bench": cmd_bench, "demo": cmd_demo, "study": cmd_study,
            "data": cmd_data}


class VersionAction(argparse.Action):
    """``--version``: the installed package's version (its metadata), read only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            version = metadata.version("labelreg")
        except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
            version = __version__
        print(f"labelreg {version}")  # on stdout, like argparse's own version action
        parser.exit()


def add_command(commands: argparse._SubParsersAction, name: str, help_text: str, description: str,
                **kwargs) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help_text, description=description, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelreg", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=VersionAction, help="print the installed version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    synth = add_command(commands, "synth", "write the synthetic data set in the real NYUv2 / VOC formats",
                        "Write synthetic indoor scenes in the real NYUv2 (.mat, splits, depth-only .h5) and "
                        "PASCAL VOC layouts, so every command runs without downloading data.")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--labeled", type=int, default=300, help="labeled scenes (default 300)")
    synth.add_argument("--depth-only", type=int, default=2000, help="depth-only frames (default 2000)")
    synth.add_argument("--size", type=parse_size, default=(128, 160), help="HxW, multiples of 16 (default 128x160)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_no_progress(synth)

    for name, help_text, example in (
            ("train-ae", "phase one: train the label autoencoder on ground-truth label maps",
             "configs/ae-128_voc12aug_256.yaml"),
            ("train-seg", "phase two: train a segmenter, with or without the label-structure regularizer",
             "configs/zoomout-densenet121_voc12aug_256.yaml"),
            ("train-cls", "phase zero: train a SUNet classifier on an ImageFolder tree",
             "configs/sunet64_imagenet_224.yaml"),
            ("train-depth", "NYUv2 depth: seg→depth or the two-part depth + segmentation model",
             "configs/twopart-densenet121_nyu40.yaml")):
        trainer = add_command(commands, name, help_text,
                              f"{help_text[0].upper()}{help_text[1:]}. Reads a YAML config (overridable with "
                              "section.key=value) and writes a run directory <output_dir>/<name> with config.yaml, "
                              "checkpoints/, TensorBoard logs and metrics.json.")
        trainer.add_argument("--config", required=True, help=f"YAML config, e.g. {example}")
        trainer.add_argument("--resume", action="store_true", help="continue from the run's checkpoints/last.pt if present")
        trainer.add_argument("--resume-from", default=None, metavar="CKPT", help="continue from this checkpoint")
        trainer.add_argument("--overwrite", action="store_true",
                             help="replace the run directory's earlier checkpoints, metrics and logs (without it "
                                  "a run directory holding checkpoints needs --resume)")
        add_no_progress(trainer)
        trainer.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=5")

    evaluate = add_command(commands, "eval", "evaluate a checkpoint on a split of its data set",
                           "Evaluate a checkpoint (of any task, or an exported segmenter) on a split of its data "
                           "set; prints the metrics and writes them as JSON.")
    evaluate.add_argument("--checkpoint", required=True, help="a .pt written by a train-* command or by export")
    evaluate.add_argument("--split", default=None, help="default: the config's data.val_split")
    evaluate.add_argument("--out", default=None, help="JSON output (default: <run>/eval_<split>.json)")
    evaluate.add_argument("--save-predictions", default=None, metavar="DIR",
                          help="write each prediction as DIR/<image id>.png (segmentation: VOC palette; depth: "
                               "16-bit millimetres plus a colour preview)")
    evaluate.add_argument("--aux", action="store_true",
                          help="regularized segmenters: also score the auxiliary output through the decoder")
    evaluate.add_argument("--figure", default=None, metavar="PNG",
                          help="segmentation: picture of the first images, ground truth and predictions (with --aux: "
                               "the decoder's output beside the primary one)")
    add_no_progress(evaluate)
    evaluate.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.root=/data/voc")

    export = add_command(commands, "export", "write the plain segmenter of a regularized run (no decoder)",
                         "Write the plain segmenter of a regularized run: the same weights without the auxiliary "
                         "branch and the decoder, with its config, source and metrics, in one .pt file.")
    export.add_argument("--checkpoint", required=True, help="a train-seg checkpoint")
    export.add_argument("--out", required=True, help="output .pt (loads with labelreg eval --checkpoint)")

    add_query_parser(commands)

    add_weak_parser(commands)
    add_data_parser(commands)
    bench = add_command(commands, "bench", "throughput and memory of models, and data-loading speed",
                        "Throughput and peak memory of the models' training step and inference, for every "
                        "combination of the chosen options, or (--data nyu) the NYUv2 readers' images/s. "
                        "See docs/bench.md.")
    add_bench_arguments(bench)

    demo = add_command(
        commands, "demo", "every stage on synthetic scenes, with a report in runs/demo",
        "Runs every stage on synthetic scenes (a training stage in its own folder under --out),\n"
        "then writes report.md and metrics.json to --out:\n"
        + "\n".join(f"  {name:8s} {text}" for name, text in DEMO_STAGES.items())
        + "\n\nA re-run reads back the stages that finished with the same config (--fresh trains them\n"
          "again). The demo writes only into stage folders it made; anything else is refused.\n"
          "--dataset camvid: phase one, both segmenters and the queries on CamVid's real street scenes\n"
          "(stages ae, seg, seg_reg, queries; about 7 minutes on a 2-core CPU), into runs/demo-camvid.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--dataset", choices=("synthetic", "camvid"), default="synthetic",
                      help="synthetic scenes (default) or CamVid's real street scenes")
    demo.add_argument("--out", default=None, help="run directories, figures, report.md and metrics.json (default "
                                                  "runs/demo; with --dataset camvid runs/demo-camvid)")
    demo.add_argument("--data", default=None, help="synthetic data folder, written if absent (default "
                                                   "data/synthetic); with --dataset camvid the CamVid folder or its "
                                                   "parent (default ../shared/data/camvid)")
    demo.add_argument("--stages", action="append", metavar="A,B", help="run only these stages (default: all)")
    demo.add_argument("--skip", action="append", metavar="A,B", help="run every stage but these")
    demo.add_argument("--fresh", "--overwrite", dest="fresh", action="store_true",
                      help="train every selected stage again, even one that finished earlier with the same config")
    add_no_progress(demo)
    demo.add_argument("overrides", nargs="*",
                      help="section.key=value overrides, applied to every stage's config that reads the section "
                           "(train.epochs=1 shortens every stage, the weak one too); STAGE:section.key=value for "
                           "one stage, e.g. seg:optim.lr=0.01")

    study = add_command(
        commands, "study", "does the regularizer help? arms × paired seeds, report and plot",
        "Does the label-structure regularizer help (thesis §5.4)? Trains the protocol's phase-one "
        "autoencoder once, then every arm × seed, and writes report.md, results.json and study.png "
        "with the paired differences to --out.", epilog=study_protocols())
    study.add_argument("protocol", help="a protocol file, or the name of one in configs/study (listed below)")
    study.add_argument("--out", default=None, help="study folder (default runs/study/<protocol name>)")
    study.add_argument("--jobs", type=int, default=None, help="runs at a time (default: the protocol's jobs)")
    study.add_argument("--launcher", choices=("local", "submitit"), default="local",
                       help="local worker processes, or submitit (Slurm when available, else local)")
    add_no_progress(study)
    for name, sub in commands.choices.items():
        sub.set_defaults(run=COMMANDS[name])  # what main runs for it
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like ``parser.parse_args``, but ``key=value`` overrides may come before and after options
    (``--config c.yaml a=1 --resume b=2``): a subcommand with overrides is parsed intermixed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    subcommands = next((action for action in parser._actions if isinstance(action, argparse._SubParsersAction)), None)
    command = argv[0] if argv else None
    sub = subcommands.choices.get(command) if subcommands is not None and command else None
    if sub is not None and any(action.dest == "overrides" for action in sub._actions) and not any(
            isinstance(action, argparse._SubParsersAction) for action in sub._actions):
        args = sub.parse_intermixed_args(argv[1:])
        args.command = command
        return args
    return parser.parse_args(argv)


# where each command's output goes when it is not a config's output_dir= (the hint a disk error gives)
OUTPUT_OPTIONS = {"synth": "--out", "eval": "--out", "export": "--out", "demo": "--out", "study": "--out",
                  "query": "--json/--figure", "bench": "--json"}


def error_message(error: BaseException, command: str | None = None) -> str:
    """One line for an expected failure: the message, and for file-system errors the path and what to do
    (pointing at ``command``'s own output option: ``output_dir=`` for trainers, ``--out`` for most others)."""
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.filename is not None:
        path, option = error.filename, OUTPUT_OPTIONS.get(command, "output_dir=")
        if error.errno == errno.ENOSPC:
            return f"no space left on device writing {path}; free some space or set {option} to another disk"
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return (f"permission denied or read-only file system: {path}; make it writable/readable or set "
                    f"{option} to a writable folder")
        return f"{path}: {error.strerror or error}"
    message = str(error)
    if "\nOriginal Traceback" in message:  # raised in a DataLoader worker: the original error is the last line
        last = message.strip().splitlines()[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return message


# what a command may raise for bad input (config, files, data, disk): one line and exit code 2, no traceback
# (labelreg.config.ConfigError is a ValueError)
EXPECTED_ERRORS = (ValueError, RuntimeError, OSError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.command is None:  # bare `labelreg`: the overview, not an error
        parser.print_help()
        return 0
    if getattr(args, "no_progress", False):
        os.environ[NO_PROGRESS_ENV] = "1"  # read by every progress bar, here and in the study's subprocesses
    try:
        args.run(args)
    except EXPECTED_ERRORS as error:
        runtime = sys.modules.get("labelreg.runtime")  # under torchrun: a collective that timed out names this rank
        message = (runtime and runtime.collective_failure(error)) or error_message(error, args.command)
        print(f"labelreg {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labelreg {args.command}: interrupted; the last completed checkpoint is kept", file=sys.stderr)
        return 130
    finally:
        runtime = sys.modules.get("labelreg.runtime")
        if runtime is not None:  # a command that never loaded it joined no torchrun process group
            runtime.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
