"""The import graph of ``labelreg`` and ``depth``, and the layering rules it must obey.

    python scripts/import_graph.py            # the layer table (as in docs/architecture.md) and any rule broken
    python scripts/import_graph.py --modules  # one row per module: layer, lines, what it imports

Read with ``ast`` only (nothing is imported), so it runs without torch. Layers, lowest first; a module
may import its own layer and the layers below it, never above:

    leaf         config, losses, metrics, palette, storage, _compat, cli_args (import only other leaves)
    runtime      device choice, seeds, the process group
    data         readers, synthetic scenes, transforms, sampling, loaders
    viz          figures (reads data's normalisation)
    models       backbones, heads, the autoencoder, the regularizer
    engine       the training loop, optimizers, checkpoints and run directories
    tasks        one module per task: build the model, its losses, train, evaluate
    library+     retrieval, weak supervision, depth: build on the tasks
    application  cli, demo, bench, study, the package's ``__init__``

Other rules: no import cycles; imports at module level only, with three exceptions: an optional dependency
(see ``OPTIONAL``) where it is used; in an application module, inside the functions its ``COMMANDS`` table
names (``labelreg.cli``: what a command needs loads when it runs, so ``labelreg --help`` starts without
torch); in a package's PEP 562 ``__getattr__`` (lazy exports: ``import labelreg`` loads no torch). Those
imports are edges of the graph like any other, so the layer and cycle rules cover them. The library layers
never import ``depth``; ``data`` never imports ``engine``.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("labelreg", "depth")
OPTIONAL = {"submitit"}  # optional extras: imported where used, with a clear error when missing
LAYERS = ["leaf", "runtime", "data", "viz", "models", "engine", "tasks", "library+", "application"]
LIBRARY = {"leaf", "runtime", "data", "viz", "models", "engine", "tasks"}
LEAVES = {"labelreg._compat", "labelreg.config", "labelreg.losses", "labelreg.metrics", "labelreg.storage",
          "labelreg.cli_args", "labelreg.palette"}
PREFIX_LAYERS = [  # first match wins
    ("labelreg.runtime", "runtime"),
    ("labelreg.data", "data"),
    ("labelreg.viz", "viz"),
    ("labelreg.models", "models"),
    ("labelreg.engine", "engine"),
    ("labelreg.tasks", "tasks"),
    ("labelreg.retrieval", "library+"),
    ("labelreg.weak", "library+"),
    ("depth", "library+"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    if module in LEAVES:
        return "leaf"
    for prefix, layer in PREFIX_LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return "application"


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def scan(root: Path = ROOT) -> dict[str, dict]:
    """Per module: its file, line count, and every import as (target, line, inside a function?)."""
    modules = {}
    files = [path for package in PACKAGES for path in sorted((root / package).rglob("*.py"))]
    known = {module_name(path) for path in files}
    for path in files:
        module = module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        inner = {}  # node id → the name of the outermost function around it
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    inner.setdefault(id(sub), node.name)
        imports = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, module, path.name == "__init__.py")
                # `from pkg import submodule` imports the submodule
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            else:
                continue
            for target in targets:
                imports.append((target, node.lineno, inner.get(id(node))))
        modules[module] = {"path": path, "lines": len(path.read_text().splitlines()), "imports": imports,
                           "commands": command_functions(tree)}
    return modules


def command_functions(tree: ast.Module) -> set[str]:
    """The functions a module-level ``COMMANDS = {"name": function, ...}`` table names (empty without one)."""
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in node.targets)
                and isinstance(node.value, ast.Dict)):
            return {value.id for value in node.value.values if isinstance(value, ast.Name)}
    return set()


def deferred_import_allowed(module: str, info: dict, function: str) -> bool:
    """An import inside ``function`` that the layout allows (see the module docstring)."""
    if layer_of(module) != "application":
        return False
    return function in info.get("commands", set()) or (function == "__getattr__" and info["path"].name == "__init__.py")


def internal(target: str, modules: dict) -> str | None:
    """The scanned module an import names (``a.b.c`` → ``a.b`` when only that exists), else None."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def edges(modules: dict) -> dict[str, set[str]]:
    graph = defaultdict(set)
    for module, info in modules.items():
        for target, _, _ in info["imports"]:
            resolved = internal(target, modules)
            if resolved and resolved != module and not module.startswith(resolved + "."):
                graph[module].add(resolved)  # a package's own __init__ is not an edge of its submodules
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(modules: dict | None = None) -> list[str]:
    """Every broken rule, one line each (empty when the layout is sound)."""
    modules = scan() if modules is None else modules
    problems = []
    for module, info in sorted(modules.items()):
        where = info["path"].relative_to(ROOT)
        layer = layer_of(module)
        for target, line, in_function in info["imports"]:
            resolved = internal(target, modules)
            if in_function and target.split(".")[0] not in OPTIONAL and not deferred_import_allowed(module, info,
                                                                                                  in_function):
                problems.append(f"{where}:{line}: imports {target} inside a function ({in_function})")
            if resolved is None or resolved == module or module.startswith(resolved + "."):
                continue
            target_layer = layer_of(resolved)
            if LAYERS.index(target_layer) > LAYERS.index(layer):
                problems.append(f"{where}:{line}: {layer} module {module} imports {target_layer} module {resolved}")
            if layer in LIBRARY | {"library+"} and module.startswith("labelreg") and resolved.startswith("depth"):
                problems.append(f"{where}:{line}: library module {module} imports depth ({resolved})")
            if layer == "data" and target_layer == "engine":
                problems.append(f"{where}:{line}: data module {module} imports the engine ({resolved})")
    for component in cycles(edges(modules)):
        problems.append("import cycle: " + " → ".join(component))
    return list(dict.fromkeys(problems))  # `from x import a, b` names x once


def layer_table(modules: dict) -> str:
    """Markdown: per layer, its modules' lines and the layers it imports."""
    graph = edges(modules)
    rows = ["| layer | modules | lines | imports from |", "|---|---|---|---|"]
    for layer in LAYERS:
        members = sorted(m for m in modules if layer_of(m) == layer)
        if not members:
            continue
        uses = sorted({layer_of(t) for m in members for t in graph.get(m, ())} - {layer}, key=LAYERS.index)
        groups = sorted({".".join(m.split(".")[:2]) for m in members})
        rows.append(f"| {layer} | {', '.join(groups)} | {sum(modules[m]['lines'] for m in members):,} | "
                    f"{', '.join(uses) or '—'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="one row per module instead of per layer")
    args = parser.parse_args(argv)
    modules = scan()
    if args.modules:
        graph = edges(modules)
        print("| module | layer | lines | imports |\n|---|---|---|---|")
        for module in sorted(modules, key=lambda m: (LAYERS.index(layer_of(m)), m)):
            print(f"| {module} | {layer_of(module)} | {modules[module]['lines']} | "
                  f"{', '.join(sorted(graph.get(module, ()))) or '—'} |")
    else:
        print(layer_table(modules))
    problems = violations(modules)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
