"""Benchmarks of the models and the data readers (``labelreg bench``; docs/bench.md).

Read in this order:

- ``cases``: what runs — ``Case`` (one table row), its model, random batch and the trainer's loss; ``PRESETS``;
- ``measure``: how one case is measured — step timing, FLOPs, peak memory, paired timing, subprocesses;
- ``report``: rows merged over rounds, overheads and ratios, the table, ``benchmark_models``;
- ``data``: the data-loading benchmark of the NYUv2 readers;
- ``cli``: the ``labelreg bench`` arguments (``main`` is ``scripts/benchmark.py``).
"""
from __future__ import annotations

from labelreg.bench.cases import PRESETS, Case, build_model, make_cases, random_batch
from labelreg.bench.cli import main, register, run_from_args
from labelreg.bench.data import bench_data
# (the function ``measure.measure`` is not re-exported: it would hide the module ``labelreg.bench.measure``)
from labelreg.bench.measure import MemoryMeter, count_gflop, run_case, train_step_fn
from labelreg.bench.report import benchmark_models, format_table

__all__ = ["PRESETS", "Case", "MemoryMeter", "bench_data", "benchmark_models", "build_model", "count_gflop",
           "format_table", "main", "make_cases", "random_batch", "register", "run_case", "run_from_args",
           "train_step_fn"]
