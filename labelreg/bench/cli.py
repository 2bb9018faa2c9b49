"""Benchmarks: training-step and inference throughput, peak memory, data loading.

``labelreg bench`` (or ``python scripts/benchmark.py``) measures, for every combination of the chosen
models, batch sizes, resolutions, precisions, channels_last, torch.compile and regularizer settings, on
CPU or CUDA, the training step and inference of each model (``--paired``, on for presets: also all cases
stepped in turn in one process); with ``--data nyu``, the NYUv2 readers' images/s through DataLoaders.
See docs/bench.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from labelreg.bench import cases as cases_module
from labelreg.bench import data as data_module
from labelreg.bench import measure as measure_module
from labelreg.bench.cases import PRECISIONS, PRESETS, Case, make_cases
from labelreg.bench.data import bench_data, format_data_table
from labelreg.bench.measure import profile_case
from labelreg.bench.report import benchmark_models, print_report, zoomout_vs_dilated_summary
from labelreg.cli_args import parse_size
from labelreg.storage import write_json

# ``scripts/benchmark.py --help``: this overview, then what each part measures and how
DESCRIPTION = "\n\n".join(text.strip() for text in (__doc__, measure_module.__doc__, cases_module.__doc__,
                                                      data_module.__doc__))


def parse_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object: {error}") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"--model-options must be a JSON object, got {text!r}")
    return options


def _switch(value: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    models = parser.add_argument_group("model benchmark")
    models.add_argument("--preset", choices=sorted(PRESETS), help="a predefined comparison (see docs/bench.md)")
    models.add_argument("--models", nargs="+", metavar="NAME",
                        help="names in labelreg.models.MODELS and/or tv:fcn_resnet50, tv:deeplabv3_resnet50, "
                             "tv:deeplabv3_resnet101")
    models.add_argument("--batch", nargs="+", type=int, help="batch sizes (default 2)")
    models.add_argument("--size", nargs="+", type=parse_size, help="HxW resolutions (default 256x256)")
    models.add_argument("--precision", nargs="+", choices=PRECISIONS, help="default fp32")
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


def cases_from_args(args: argparse.Namespace) -> list[Case]:
    preset = dict(PRESETS[args.preset]) if args.preset else {}
    models = args.models or preset.get("models")
    if not models:
        raise ValueError("give --models, --preset or --data")
    regularizer = _switch(args.regularizer) if args.regularizer else preset.get("regularizer", [False])
    return make_cases(models, batches=args.batch or preset.get("batches", [2]),
                      sizes=args.size or preset.get("sizes", [(256, 256)]), precisions=args.precision or ["fp32"],
                      channels_last=_switch(args.channels_last), compile=_switch(args.compile),
                      regularizer=regularizer, num_classes=args.num_classes or preset.get("num_classes", 21),
                      options=args.model_options, device=args.device, iters=args.iters, warmup=args.warmup,
                      infer=not args.no_infer, optimizer=args.optimizer, threads=args.threads, aux_crop=args.aux_crop,
                      dropin=args.dropin)


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.data:
        synthetic = {"labeled": args.synthetic_count[0], "depth_only": args.synthetic_count[1],
                     "size": args.synthetic_size}
        report = bench_data(args.data_root, workers=args.workers, batch=args.data_batch, images=args.data_images,
                            depth_only=args.depth_only, limit=args.data_limit, synthetic=synthetic)
        print(format_data_table(report["data"]))
    else:
        cases = cases_from_args(args)
        report = benchmark_models(cases, repeat=args.repeat, isolate=not args.in_process, timeout=args.timeout,
                                  paired=args.paired or args.preset is not None)
        report["preset"] = args.preset
        if args.preset == "zoomout-vs-dilated":
            report["zoomout_vs_dilated"] = zoomout_vs_dilated_summary(report, cases)
        print_report(report, args.preset)
        if args.profile:
            print(profile_case(cases[0]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return report


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``labelreg bench`` to the CLI's subcommands."""
    parser = commands.add_parser("bench", help="throughput and memory of models, and data-loading speed",
                                 description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(run=run_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_from_args(args)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"benchmark: error: {error}", file=sys.stderr)
        return 2
    return 0
