"""What ``labelreg data fetch`` and ``labelreg data check`` run (their parser: ``labelreg.cli_args.add_data_parser``)."""
from __future__ import annotations

import argparse

from labelreg.data.download.check import check_root
from labelreg.data.download.fetch import fetch_dataset
from labelreg.data.download.sources import DATASETS


class CheckFailed(RuntimeError):
    """``labelreg data check`` found a data set incomplete, a named one absent, or none at all."""


def cmd_fetch(args: argparse.Namespace) -> None:
    for name in dict.fromkeys(args.datasets):  # each once, in the order given
        fetch_dataset(name, args.root, keep_archive=args.keep_archive)


def cmd_check(args: argparse.Namespace) -> None:
    named = tuple(dict.fromkeys(args.dataset or ()))
    statuses = check_root(args.root, datasets=named or DATASETS, sample=args.sample, verify=args.verify)
    failed = [s.name for s in statuses if s.state == "incomplete" or (named and s.state == "absent")]
    if failed:
        raise CheckFailed(f"{', '.join(failed)}: not complete under {args.root} (details and what to do above)")
    if not any(s.state == "complete" for s in statuses):
        raise CheckFailed(f"no data set under {args.root}; fetch one with labelreg data fetch NAME --root {args.root}")


def run(args: argparse.Namespace) -> None:
    """``labelreg data <fetch|check>``."""
    {"fetch": cmd_fetch, "check": cmd_check}[args.data_command](args)
