"""The README's commands: every `labelreg …` line parses with today's CLI, every file it names exists,
every config it names loads with the overrides written next to it. (Its Python snippets run in
tests/retrieval/test_query.py and tests/models/test_dropin.py.)"""
import re
import shlex
from pathlib import Path

import pytest

from labelreg.cli import build_parser
from labelreg.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shell_lines(text: str) -> list[str]:
    """Command lines of the README's shell blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def without_optional(line: str) -> str:
    """Drop ``[optional …]`` groups (nested too) and fill ``<placeholders>``, as a reader would."""
    while re.search(r"\[[^\[\]]*\]", line):
        line = re.sub(r"\s*\[[^\[\]]*\]", "", line)
    return re.sub(r"<[^<>]*>", "x", line)


COMMANDS = [line for line in shell_lines(README) if line.startswith("labelreg ")]


def test_the_readme_has_commands():
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("line", COMMANDS)
def test_a_readme_command_parses_and_names_existing_configs(line):
    text = without_optional(line)
    # alternatives written as (a | b) or {a,b,…}: take the first one
    text = re.sub(r"\(([^()|]*)\|[^()]*\)", r"\1", text)
    text = re.sub(r"\{([^{},]*),[^{}]*\}", r"\1", text)
    argv = shlex.split(text)[1:]
    args = build_parser().parse_args(argv)
    assert callable(args.run)
    config = getattr(args, "config", None)
    if config and not config.startswith("x"):
        assert (ROOT / config).is_file(), config
        overrides = [item for item in getattr(args, "overrides", []) or [] if "=" in item]
        load_config(ROOT / config, overrides)


@pytest.mark.parametrize("document", ["README.md", "docs/bench.md"])
def test_every_repository_path_a_document_names_exists(document):
    text = (ROOT / document).read_text()
    named = set(re.findall(r"(?<![\w/.-])((?:configs|scripts|docs|tests|labelreg|depth)/[\w./-]+\.(?:ya?ml|py|md|png))",
                           text))
    assert named
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == []


def test_the_option_filler_keeps_what_a_reader_types():
    assert without_optional("labelreg eval --checkpoint runs/<name>/best.pt [--split val [--x y]] [k=v ...]") == \
        "labelreg eval --checkpoint runs/x/best.pt"
