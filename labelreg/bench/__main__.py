"""``python -m labelreg.bench``: the same as ``labelreg bench`` and ``python scripts/benchmark.py``."""
import sys

from labelreg.bench.cli import main

sys.exit(main())
