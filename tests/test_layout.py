"""The package layout's rules (scripts/import_graph.py), and that the checker itself catches breaches."""
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_the_package_obeys_its_layering_rules():
    assert import_graph.violations() == []


def test_no_library_file_is_much_over_400_lines():
    sizes = {path.relative_to(ROOT): len(path.read_text().splitlines())
             for package in ("labelreg", "depth") for path in (ROOT / package).rglob("*.py")}
    assert {path: lines for path, lines in sizes.items() if lines > 430} == {}


def write(root: Path, files: dict[str, str]) -> dict:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return import_graph.scan(root)


@pytest.mark.parametrize("files, expected", [
    ({"labelreg/config.py": "from labelreg.engine import fit\n", "labelreg/engine/__init__.py": "fit = 1\n"},
     "leaf module labelreg.config imports engine module labelreg.engine"),
    ({"labelreg/data/build.py": "from labelreg.engine.loop import fit\n", "labelreg/engine/loop.py": "fit = 1\n"},
     "data module labelreg.data.build imports the engine"),
    ({"labelreg/tasks/a.py": "import depth.task\n", "depth/task.py": "X = 1\n"},
     "library module labelreg.tasks.a imports depth"),
    ({"labelreg/models/a.py": "def f():\n    import numpy\n"}, "imports numpy inside a function"),
    ({"labelreg/weak/a.py": "from labelreg.weak import b\n", "labelreg/weak/b.py": "from labelreg.weak import a\n"},
     "import cycle: labelreg.weak.a → labelreg.weak.b"),
])
def test_the_checker_reports_each_kind_of_breach(tmp_path, monkeypatch, files, expected):
    monkeypatch.setattr(import_graph, "ROOT", tmp_path)
    problems = import_graph.violations(write(tmp_path, files))
    assert any(expected in problem for problem in problems), problems


COMMANDS_MODULE = """
    from labelreg import config

    def cmd_train(args):
        from labelreg.engine import fit
        fit(args)

    def helper():
        from labelreg.engine import fit

    COMMANDS = {"train": cmd_train}
"""


@pytest.mark.parametrize("files, expected", [
    ({"labelreg/cli.py": COMMANDS_MODULE, "labelreg/config.py": "X = 1\n", "labelreg/engine/__init__.py": "fit = 1\n"},
     ["labelreg/cli.py:9: imports labelreg.engine inside a function (helper)"]),  # cmd_train's import is allowed
    ({"labelreg/tasks/a.py": COMMANDS_MODULE, "labelreg/config.py": "X = 1\n", "labelreg/engine/__init__.py": "fit = 1\n"},
     ["labelreg/tasks/a.py:5: imports labelreg.engine inside a function (cmd_train)",  # only application modules
      "labelreg/tasks/a.py:9: imports labelreg.engine inside a function (helper)"]),
    ({"labelreg/__init__.py": "def __getattr__(name):\n    from labelreg.models import build\n    return build\n",
      "labelreg/models/__init__.py": "def __getattr__(name):\n    import numpy\n"},
     ["labelreg/models/__init__.py:2: imports numpy inside a function (__getattr__)"]),  # lazy exports: the package's
    ({"labelreg/cli.py": "def cmd_a(args):\n    from labelreg.demo import run\n\nCOMMANDS = {'a': cmd_a}\n",
      "labelreg/demo.py": "from labelreg.cli import COMMANDS\nrun = 1\n"},
     ["import cycle: labelreg.cli → labelreg.demo"]),  # a command's deferred import is an edge like any other
])
def test_imports_inside_functions_only_in_commands_and_lazy_exports(tmp_path, monkeypatch, files, expected):
    monkeypatch.setattr(import_graph, "ROOT", tmp_path)
    assert import_graph.violations(write(tmp_path, files)) == expected


def test_the_command_line_and_the_package_load_no_torch_until_a_command_runs():
    # the rule above is what keeps `labelreg --help` fast: every help text is built here without torch
    code = ("import sys, labelreg, labelreg.cli as cli\n"
            "for action in cli.build_parser()._actions:\n"
            "    for sub in getattr(action, 'choices', None) or {}:\n"
            "        action.choices[sub].format_help()\n"
            "print(sorted(name for name in ('torch', 'torchvision', 'numpy') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_optional_dependencies_may_be_imported_where_they_are_used(tmp_path, monkeypatch):
    monkeypatch.setattr(import_graph, "ROOT", tmp_path)
    modules = write(tmp_path, {"labelreg/study/runner.py": "def launch():\n    import submitit\n"})
    assert import_graph.violations(modules) == []


def test_the_layer_table_lists_every_layer_in_order():
    table = import_graph.layer_table(import_graph.scan())
    layers = [row.split("|")[1].strip() for row in table.splitlines()[2:]]
    assert layers == import_graph.LAYERS


def test_the_readme_shows_the_current_layer_table():
    def rows(text: str) -> list[tuple[str, ...]]:  # layer, modules, imports from; line counts change
        return [tuple(cell.strip() for i, cell in enumerate(line.split("|")[1:-1]) if i != 2)
                for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in import_graph.LAYERS]

    readme = (ROOT / "docs" / "architecture.md").read_text()
    section = readme[readme.index("## Package layout"):]
    assert rows(section[:section.index("\n## ", 3)]) == rows(import_graph.layer_table(import_graph.scan()))
