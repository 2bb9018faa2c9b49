#!/usr/bin/env python
"""How fast the command line starts: median wall seconds of ``labelreg --help`` and every subcommand's ``--help``.

    python scripts/bench_cli.py                 # 5 runs each, the installed `labelreg` console script
    python scripts/bench_cli.py --runs 9 --limit 1.5

Each run is a fresh process (what a user waits for: interpreter start, imports, parsing, the help text).
The target is 1.5 s on a 2-core machine; it holds because ``labelreg.cli`` builds every parser without
torch and each command imports what it needs when it runs (the layout rule in scripts/import_graph.py).
Exit status 1 when a median is over ``--limit``. Not a unit test: timings depend on the machine's load,
so say how loaded the machine was next to the numbers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:
    from labelreg.cli import build_parser
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from labelreg.cli import build_parser


def command_words() -> list[list[str]]:
    """``[]`` (bare ``labelreg --help``), every subcommand, and every step of a subcommand that has steps."""
    words: list[list[str]] = [[]]

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    words.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return words


def launcher() -> list[str]:
    """The console script next to this interpreter (what a user runs), else ``python -m labelreg.cli``."""
    script = Path(sys.executable).parent / "labelreg"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "labelreg.cli"]


def time_help(command: list[str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run([*command, "--help"], capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} --help failed ({result.returncode}): {result.stderr.strip()}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--limit", type=float, default=1.5, help="seconds a median may take (default 1.5)")
    args = parser.parse_args(argv)
    base = launcher()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{' '.join(base)} on {os.cpu_count()} CPUs, load average {load:.2f}; median of {args.runs} runs")
    slow = []
    for words in command_words():
        times = time_help([*base, *words], args.runs)
        median = statistics.median(times)
        label = " ".join(["labelreg", *words, "--help"])
        print(f"  {label:36s} {median:6.2f} s   (min {min(times):.2f}, max {max(times):.2f})")
        if median > args.limit:
            slow.append(label)
    if slow:
        print(f"over {args.limit} s: {', '.join(slow)}")
        return 1
    print(f"all within {args.limit} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
