#!/usr/bin/env python
"""Throughput, peak memory and data-loading benchmarks; the same as ``labelreg bench`` (see docs/bench.md).

    python scripts/benchmark.py --preset zoomout-vs-dilated --repeat 2 --json runs/bench/zoomout-vs-dilated.json
    python scripts/benchmark.py --preset regularizer-overhead --repeat 2
    python scripts/benchmark.py --models zoomout_densenet121 tv:deeplabv3_resnet50 --batch 2 --size 256x256 \\
        --precision fp32 bf16 --channels-last --regularizer both --device auto --iters 10 --warmup 3 --json out.json
    python scripts/benchmark.py --data nyu --data-root /data/nyuv2 --workers 0 1 2 4
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    from labelreg.bench import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from labelreg.bench import main

if __name__ == "__main__":
    sys.exit(main())
