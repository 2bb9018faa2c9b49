"""The README's and docs/' commands: every `labelreg …` line parses with today's CLI, every file they name
exists, every config they name loads with the overrides written next to it, the README stays a guide
(≤ 300 lines) whose documentation map names every page. (Their Python snippets run in tests/test_readme.py,
tests/retrieval/test_query.py and tests/models/test_dropin.py.)"""
import re
import shlex
from pathlib import Path

import pytest

from labelreg.cli import build_parser
from labelreg.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCUMENTS = ["README.md", "CHANGELOG.md", *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md"))]


def shell_lines(text: str) -> list[str]:
    """Command lines of the README's shell blocks, continuation lines joined, comments dropped."""
    lines = []
    for language, block in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):  # fence by fence
        if language not in ("", "bash", "sh", "console"):
            continue
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


COMMANDS = sorted({line for document in DOCUMENTS for line in shell_lines((ROOT / document).read_text())
                   if line.startswith("labelreg ")})


def test_the_readme_has_commands():
    assert len([line for line in shell_lines(README) if line.startswith("labelreg ")]) >= 15
    assert len(COMMANDS) >= 40


def test_the_readme_is_a_guide_whose_map_names_every_page():
    assert len(README.splitlines()) <= 300
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert pages and {name for name in pages if f"(docs/{name})" not in README} == set()


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
    if config and not config.startswith("x") and not re.fullmatch(r"[A-Z_]+", config):  # x, CFG: placeholders
        assert (ROOT / config).is_file(), config
        overrides = [item for item in getattr(args, "overrides", []) or [] if "=" in item]
        load_config(ROOT / config, overrides)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_repository_path_a_document_names_exists(document):
    text = (ROOT / document).read_text()
    named = set(re.findall(r"(?<![\w/.-])((?:configs|scripts|docs|tests|labelreg|depth)/[\w./-]+\.(?:ya?ml|py|md|png))",
                           text))
    assert named or document != "README.md"
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == []


def test_the_option_filler_keeps_what_a_reader_types():
    assert without_optional("labelreg eval --checkpoint runs/<name>/best.pt [--split val [--x y]] [k=v ...]") == \
        "labelreg eval --checkpoint runs/x/best.pt"


def test_the_readme_export_example_loads_an_exported_segmenter_in_plain_pytorch(tmp_path, monkeypatch):
    # what `labelreg export` writes (model, config, exported_from, metrics) for a tiny 21-class segmenter
    import torch

    from labelreg.config import to_dict
    from labelreg.models import build_segmenter
    from labelreg.storage import save_checkpoint

    cfg = load_config(ROOT / "configs" / "zoomout-densenet67_voc12_256_flipcrop.yaml",
                      ["model.options={hidden: 16, backbone_options: {growth_rate: 8, block_config: [1, 1, 1, 1], "
                       "stem_channels: [8, 8, 8]}}"])
    model = build_segmenter(cfg.model.name, num_classes=21, **cfg.model.options)
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "densenet67.pt", {"model": model.state_dict(), "config": to_dict(cfg),
                                                  "exported_from": "runs/x/checkpoints/best.pt", "metrics": {}})
    block = README.split("**5. Export", 1)[1]
    code = block[block.index("```python\n") + len("```python\n"):]
    namespace: dict = {}
    exec(compile(code[:code.index("```")], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["logits"].shape == (1, 21, 256, 256)
    loaded = namespace["model"].state_dict()
    assert loaded.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_relative_link_of_a_document_resolves_from_its_folder(document):
    # a page under docs/ links "images/x.png", not "docs/images/x.png" (which a reader's browser resolves to docs/docs/)
    text = (ROOT / document).read_text()
    targets = {target.split("#", 1)[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)
               if not target.startswith(("http://", "https://", "#", "mailto:"))}
    missing = sorted(target for target in targets if target and not (ROOT / document).parent.joinpath(target).exists())
    assert missing == []
