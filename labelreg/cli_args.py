"""Argument parsers shared by the command line's subcommands (``labelreg.cli``, ``labelreg.bench.cli``).

A leaf: nothing here imports the rest of the package, so any command-line module can use it.
"""
from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """``"128x160"`` → ``(128, 160)`` (height, width); anything else is an ``argparse`` error naming the value."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 128x160), got {text!r}") from None
    return height, width
