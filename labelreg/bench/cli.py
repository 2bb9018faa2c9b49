"""Benchmarks: training-step and inference throughput, peak memory, data loading.

``labelreg bench`` (or ``python scripts/benchmark.py``) measures, for every combination of the chosen
models, batch sizes, resolutions, precisions, channels_last, torch.compile and regularizer settings, on
CPU or CUDA, the training step and inference of each model (``--paired``, on for presets: also all cases
stepped in turn in one process); with ``--data nyu``, the NYUv2 readers' images/s through DataLoaders.
See docs/bench.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from labelreg.bench import cases as cases_module
from labelreg.bench import data as data_module
from labelreg.bench import measure as measure_module
from labelreg.bench.cases import PRESETS, Case, make_cases
from labelreg.bench.data import bench_data, format_data_table
from labelreg.bench.measure import profile_case
from labelreg.bench.report import benchmark_models, print_report, zoomout_vs_dilated_summary
from labelreg.cli_args import BENCH_DESCRIPTION
from labelreg.cli_args import add_bench_arguments as add_arguments  # shared with `labelreg bench`
from labelreg.storage import write_json

# ``scripts/benchmark.py --help``: this overview, then what each part measures and how
DESCRIPTION = "\n\n".join(text.strip() for text in (__doc__, measure_module.__doc__, cases_module.__doc__,
                                                      data_module.__doc__))


def _switch(value: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[value]


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
                                 description=BENCH_DESCRIPTION)
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
