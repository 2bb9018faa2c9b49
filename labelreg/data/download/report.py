"""The ✓ / ! / ✗ report ``labelreg data check`` and ``scripts/check_nyu.py`` print, one line per check."""
from __future__ import annotations

import sys

import numpy as np


class Report:
    """Prints ✓ (ok), ! (warning) and ✗ (error) lines and counts them; ``quiet`` only collects the messages
    (``labelreg data fetch`` checks what it extracted this way and reports only what is wrong)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.errors = self.warnings = 0
        self.quiet = quiet
        self.problems: list[str] = []  # every error's text, in order
        # A terminal that cannot print ✓ (e.g. an ASCII locale) gets plain marks.
        try:
            "✓✗".encode(sys.stdout.encoding or "ascii")
            self.marks = {"ok": "✓", "warn": "!", "error": "✗"}
        except (UnicodeEncodeError, LookupError):
            self.marks = {"ok": "OK  ", "warn": "WARN", "error": "FAIL"}

    def _line(self, kind: str, text: str) -> None:
        if not self.quiet:
            print(f"  {self.marks[kind]} {text}")

    def ok(self, text: str) -> None:
        self._line("ok", text)

    def warn(self, text: str) -> None:
        self.warnings += 1
        self._line("warn", text)

    def error(self, text: str) -> None:
        self.errors += 1
        self.problems.append(text)
        self._line("error", text)

    def note(self, text: str) -> None:
        """An indented line that is neither a check nor a problem."""
        if not self.quiet:
            print(f"    {text}")

    def section(self, title: str) -> None:
        if not self.quiet:
            print(f"\n{title}")


def sample_positions(n: int, k: int) -> list[int]:
    """k evenly spaced positions in 0..n-1 (all of them when k ≥ n)."""
    return sorted(set(np.linspace(0, n - 1, num=min(max(k, 1), n)).round().astype(int).tolist())) if n else []
