#!/usr/bin/env python
"""Check NYUv2 files before a long run (see ``labelreg.data.download.nyu_check``; ``labelreg data check DIR``
checks every data set in a folder, NYUv2 included).

    python scripts/check_nyu.py --mat nyu_depth_v2_labeled.mat [--splits ..] [--mapping ..] [--depth-only ..]
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    from labelreg.data.download.nyu_check import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from labelreg.data.download.nyu_check import main

if __name__ == "__main__":
    sys.exit(main(prog="check_nyu.py"))
