"""The command line's larger argument definitions, those more than one module needs, and its value parsers.

``labelreg.cli`` builds every subcommand's parser, the larger ones from here (``add_query_parser``,
``add_weak_parser``, ``add_bench_arguments``, ``add_data_parser``); ``labelreg.weak.cli`` and
``labelreg.bench.cli`` build theirs from the same definitions for their own entry points.
A leaf that imports neither torch nor the rest of the package, so ``labelreg --help`` starts fast: the
constants the parsers need (the demo's stages, the benchmark's precisions and presets) live here, and the
modules that run them import them from here.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# set to "1" by `--no-progress` (and inherited by the study's training subprocesses): no progress bars
NO_PROGRESS_ENV = "LABELREG_NO_PROGRESS"
STUDY_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "study"

DEMO_STAGES = {  # labelreg demo's stages, in order (labelreg.demo.stages runs them)
    "data": "write the synthetic NYUv2 / VOC scenes if absent",
    "ae": "phase one: train the label autoencoder on label maps",
    "seg": "train a tiny zoom-out segmenter (baseline)",
    "seg_reg": "phase two: the same segmenter with the decoder regularizer",
    "twopart": "joint depth and segmentation: a tiny two-part model",
    "single": "its single-part baseline",
    "queries": "label-space queries, from a label map and from an image",
    "weak": "weak supervision: image tags to points to a segmentation head",
}

WEAK_STEPS = {  # labelreg weak's steps, in order (labelreg.weak.pipeline runs them)
    "pretrain": "train the backbone as a multi-label tag classifier (image tags only) into <run>/pretrain/backbone.pt; "
                "needs weak.pretrain_epochs > 0",
    "features": "extract zoom-out features, tags and statistics of both splits into <run>/features",
    "localize": "train the per-class localization nets from image tags (MIL loss)",
    "sample": "sample labelled points on the training images from the localization maps",
    "train": "train the 1×1 segmentation head on the points (and the dense baseline); validation mIoU",
    "run": "all of the above, in order (pretrain only when weak.pretrain_epochs > 0)",
}
WEAK_DESCRIPTION = """\
Weakly supervised segmentation from image tags (thesis ch. 4). Each step reads the previous step's
files from the config's run directory:

  pretrain   optional (weak.pretrain_epochs > 0): the backbone as a tag classifier, an offline
             stand-in for ImageNet weights; later steps use its weights
  features   zoom-out (+ global) features of both splits, image tags, statistics
  localize   one localization net per class (--classes C[,C...] trains only those)
  sample     labelled points on the training images, with weak.sampler
  train      the 1x1 head on the points (and on dense labels unless --no-dense); validation mIoU
  run        all of them in order

Example: labelreg weak run --config configs/demo/weak-tiny_synth-voc.yaml"""

BENCH_PRECISIONS = ("fp32", "bf16", "fp16")
BENCH_PRESETS = ("regularizer-overhead", "zoomout-vs-dilated")  # the names of labelreg.bench.cases.PRESETS
BENCH_DESCRIPTION = ("Throughput and peak memory of the models' training step and inference, for every combination "
                     "of the chosen options, or (--data nyu) the NYUv2 readers' images/s. See docs/bench.md.")


def parse_size(text: str) -> tuple[int, int]:
    """``"128x160"`` → ``(128, 160)`` (height, width); anything else is an ``argparse`` error naming the value."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 128x160), got {text!r}") from None
    return height, width


def parse_classes(text: str) -> list[int]:
    """``7`` or ``7,12`` → [7, 12] (comma-separated, so the list cannot swallow the overrides after it)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes takes class ids like 7 or 7,12, got {text!r}") from None


def parse_options(text: str) -> dict:
    """``--model-options``: a JSON object of builder options."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object: {error}") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object, got {text!r}")
    return options


def progress_wanted() -> bool:
    """False once ``--no-progress`` has set ``LABELREG_NO_PROGRESS=1`` in this process or a parent."""
    return os.environ.get(NO_PROGRESS_ENV, "") not in ("1", "true", "yes")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help=f"no progress bars (logs and results are still written; sets {NO_PROGRESS_ENV}=1)")


def study_protocols(folder: Path = STUDY_CONFIGS) -> str:
    """``study --help``'s list of the protocols in ``configs/study`` (read when the help is built)."""
    names = sorted(path.stem for path in folder.glob("*.yml")) if folder.is_dir() else []
    if not names:
        return f"no protocols found in {folder}; give the path of a protocol file"
    example = "quick" if "quick" in names else names[0]
    return f"protocols in {folder}: {', '.join(names)} (a name is enough, e.g. labelreg study {example})"


def add_weak_parser(commands: argparse._SubParsersAction,
                    ) -> tuple[argparse.ArgumentParser, list[argparse.ArgumentParser]]:
    """``labelreg weak <step>``: the parser and its step parsers (the caller sets what runs them)."""
    weak = commands.add_parser("weak", help="weakly supervised segmentation from image tags (thesis ch. 4)",
                               description=WEAK_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = weak.add_subparsers(dest="step", required=True, metavar="STEP")
    parsers = []
    for name, help_text in WEAK_STEPS.items():
        step = steps.add_parser(name, help=help_text, description=help_text)
        step.add_argument("--config", required=True, help="YAML config with task: weak, e.g. "
                                                           "configs/demo/weak-tiny_synth-voc.yaml")
        add_no_progress(step)
        if name == "localize":
            step.add_argument("--classes", type=parse_classes, default=None, metavar="C[,C...]",
                              help="train only these classes' nets, e.g. 7 or 7,12 (default: weak.classes, else every "
                                   "tagged class); the other classes' nets are left as they are")
        if name == "train":
            step.add_argument("--no-dense", action="store_true", help="skip the fully supervised baseline")
        step.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. weak.k=10")
        parsers.append(step)
    return weak, parsers


def add_query_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``labelreg query``: nearest regions in label space (``labelreg.retrieval.query_checkpoints`` runs it)."""
    query = commands.add_parser(
        "query", help="nearest regions in label space (thesis §5.4.3), table + picture",
        description="Search the nearest regions of query images in label space (thesis §5.4.3): from "
                    "ground-truth label maps through a phase-one encoder, or from images through a regularized "
                    "segmenter. Prints a table and writes JSON and a picture grid.")
    source = query.add_argument_group("feature source (one of them, or both with --reference-from)")
    source.add_argument("--autoencoder", default=None, metavar="CKPT",
                        help="train-ae checkpoint: query from ground-truth label maps through its encoder")
    source.add_argument("--segmenter", default=None, metavar="CKPT",
                        help="train-seg checkpoint with the decoder regularizer: query from images (aux_code)")
    query.add_argument("--dataset", default=None, choices=["voc", "nyu", "camvid"],
                       help="default: the checkpoint's data set")
    query.add_argument("--root", default=None,
                       help="data folder (a VOC-layout directory, the NYU .mat folder or the CamVid folder)")
    query.add_argument("--image", action="append", required=True, metavar="ID",
                       help="query image id (e.g. 2007_000033, nyu_0003, 0001TP_006690) or position in --split; "
                            "repeatable")
    query.add_argument("--box", action="append", metavar="Y0,X0,Y1,X1",
                       help="query region in pixels, half-open, snapped to 16-pixel cells (default: whole image)")
    query.add_argument("--class", dest="class_name", action="append", metavar="NAME",
                       help="instead of --box: the bounding box of the largest region of this class")
    query.add_argument("--split", default=None, help="split of the query images (default: data.train_split)")
    query.add_argument("--reference-split", default=None, help="split searched (default: data.val_split)")
    query.add_argument("--reference-limit", type=int, default=None, help="index only the first N reference images")
    query.add_argument("--reference-from", choices=["labels", "images"], default=None,
                       help="features of the reference set: labels (encoder on ground truth) or images (segmenter); "
                            "default: the query's kind")
    query.add_argument("--k", type=int, default=2, help="matches to return (default 2, like thesis Fig. 5.7)")
    query.add_argument("--metric", choices=["cosine", "l2"], default="cosine")
    query.add_argument("--pooling", choices=["concat", "mean"], default="concat",
                       help="how the box's cells form one vector: concatenated (keeps the layout) or averaged")
    query.add_argument("--include-self", action="store_true", help="allow matches in the query's own image")
    query.add_argument("--index", default=None, metavar="DIR", help="index folder (default: <run>/index/...)")
    query.add_argument("--index-dtype", choices=["float32", "float16"], default="float32")
    query.add_argument("--rebuild", action="store_true", help="rebuild the index even if it is up to date")
    query.add_argument("--overlay", choices=["labels", "predictions"], default="labels",
                       help="colour the figure's panels by ground truth or by the --segmenter's predictions")
    query.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 … (default auto)")
    query.add_argument("--json", default=None, help="JSON output (default: <run>/queries/<kind>_<id>.json)")
    query.add_argument("--figure", default=None, help="PNG output (default: next to the JSON)")
    add_no_progress(query)
    query.add_argument("overrides", nargs="*", help="data.key=value overrides, e.g. data.sbd_root=/data/sbd")
    return query


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """``labelreg bench`` / ``scripts/benchmark.py``'s options (``labelreg.bench.cli`` runs them)."""
    models = parser.add_argument_group("model benchmark")
    models.add_argument("--preset", choices=BENCH_PRESETS, help="a predefined comparison (see docs/bench.md)")
    models.add_argument("--models", nargs="+", metavar="NAME",
                        help="names in labelreg.models.MODELS and/or tv:fcn_resnet50, tv:deeplabv3_resnet50, "
                             "tv:deeplabv3_resnet101")
    models.add_argument("--batch", nargs="+", type=int, help="batch sizes (default 2)")
    models.add_argument("--size", nargs="+", type=parse_size, help="HxW resolutions (default 256x256)")
    models.add_argument("--precision", nargs="+", choices=BENCH_PRECISIONS, help="default fp32")
    models.add_argument("--channels-last", nargs="?", const="on", default="off", choices=("off", "on", "both"))
    models.add_argument("--compile", nargs="?", const="on", default="off", choices=("off", "on", "both"),
                        help="torch.compile the model (compile time is excluded by the warm-up)")
    models.add_argument("--regularizer", choices=("off", "on", "both"), default=None,
                        help="wrap in DecoderRegularized (random AE-128, frozen decoder, loss CE + 0.5·aux CE)")
    models.add_argument("--aux-crop", type=int, default=None, metavar="CELLS",
                        help="regularized rows decode a random CELLS×CELLS window of the code (regularizer.aux_crop)")
    models.add_argument("--dropin", action="store_true",
                        help="as train-seg builds them: tv: models run torchvision's own forward (LR-ASPP too) and "
                             "regularized rows use the drop-in wrapper (labelreg.regularize's forward hook), not "
                             "DecoderRegularized")
    models.add_argument("--num-classes", type=int, default=None, help="default 21")
    models.add_argument("--model-options", type=parse_options, default={}, metavar="JSON",
                        help="builder options for labelreg models, e.g. '{\"hidden\": 256}'")
    models.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    models.add_argument("--iters", type=int, default=10, help="timed steps per case (default 10)")
    models.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    models.add_argument("--repeat", type=int, default=1, help="rounds over all cases, interleaved (default 1)")
    models.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    models.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each case")
    models.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    models.add_argument("--in-process", action="store_true",
                        help="run cases in this process (faster; CPU peaks may include memory cached by earlier cases)")
    models.add_argument("--timeout", type=float, default=None, help="seconds per case (subprocess mode)")
    models.add_argument("--paired", action="store_true",
                        help="also time all cases side by side in one process, one step of each in turn "
                             "(ratios robust to changing machine load; on by default for presets)")
    models.add_argument("--profile", action="store_true", help="also print a torch.profiler table of the first case")
    data = parser.add_argument_group("data-loading benchmark")
    data.add_argument("--data", choices=("nyu",), help="benchmark the NYUv2 readers instead of models")
    data.add_argument("--data-root", default=None, help="folder with nyu_depth_v2_labeled.mat and/or depth_only/ "
                                                        "(default: synthetic data in a temporary folder)")
    data.add_argument("--depth-only", default=None, help="depth-only frames: a folder of .h5 or a list of PNG pairs")
    data.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2, 4])
    data.add_argument("--data-batch", type=int, default=8)
    data.add_argument("--data-images", type=int, default=256, help="frames drawn per measurement (default 256)")
    data.add_argument("--data-limit", type=int, default=None, help="use only the first N frames of each reader")
    data.add_argument("--synthetic-size", type=parse_size, default=(480, 640), help="HxW of synthetic frames")
    data.add_argument("--synthetic-count", nargs=2, type=int, default=(48, 96), metavar=("LABELED", "DEPTH_ONLY"))
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")


DATA_SETS = ("voc", "sbd", "nyu", "camvid")  # labelreg data fetch/check: the names of labelreg.data.download.sources.SOURCES


def parse_sample(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sample must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--sample must be ≥ 1, got {value}")
    return value


def add_data_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``labelreg data fetch|check``: the parser (``labelreg.data.download.cli.run`` runs it)."""
    data = commands.add_parser(
        "data", help="download the real data sets (VOC, SBD, NYUv2, CamVid) and check a data folder",
        description="Download the real data sets into the layouts the readers accept (fetch), and say what a "
                    "folder holds, whether each data set is complete and what to do about the rest (check).")
    steps = data.add_subparsers(dest="data_command", required=True, metavar="{fetch,check}")
    fetch = steps.add_parser(
        "fetch", help="download, verify and unpack data sets into --root",
        description="Download the official files of each data set, verify their published checksums and unpack "
                    "them into --root, in the layout the readers accept: voc → VOCdevkit/VOC2012 (a 2.0 GB tar), sbd "
                    "→ benchmark_RELEASE, nyu → nyu/ (the 3.0 GB .mat, splits.mat, classMapping40.mat), camvid → "
                    "CamVid (SegNet's 11-class copy, checked file by file). What is there and verified is "
                    "skipped without a request; an interrupted download restarts; nothing appears under --root "
                    "before it is verified, and no file labelreg did not write is ever replaced.")
    fetch.add_argument("datasets", nargs="+", choices=DATA_SETS, metavar="{" + ",".join(DATA_SETS) + "}",
                       help="the data set(s) to fetch")
    fetch.add_argument("--root", required=True, help="folder to fetch into; then give it as data.root")
    fetch.add_argument("--keep-archive", action="store_true", help="keep the downloaded archives after unpacking")
    check = steps.add_parser(
        "check", help="say which data sets a folder holds, whether each is complete, and what to do",
        description="Check every data set under DIR: split lists and sizes, every listed file, image/label sizes, "
                    "sampled labels, the published checksums of the metadata files; then a summary with what to "
                    "run for what is missing. Fails (exit status 2) when a data set is incomplete, a --dataset "
                    "named is absent, or none is there.")
    check.add_argument("root", metavar="DIR", help="the folder to check (the --root of labelreg data fetch)")
    check.add_argument("--dataset", action="append", choices=DATA_SETS, help="check only this one (repeatable)")
    check.add_argument("--sample", type=parse_sample, default=20, help="labels to read per data set (default 20)")
    check.add_argument("--verify", action="store_true",
                       help="also checksum the big files: the NYUv2 .mat's MD5, every CamVid file's SHA-256")
    return data
