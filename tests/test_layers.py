"""The package's layers: the formulas import no caching or orchestration, and the profiles, the cache and
the paths import nothing that leads back to them (no import cycle, not even through a function-level import)."""

from __future__ import annotations

import ast
from pathlib import Path

import palu_perta

PACKAGE = Path(palu_perta.__file__).parent
# the formulas: numbers, tensors and models in, numbers out (docs/design.md, "Package layers")
FORMULAS = ("metrics", "losses", "task_vectors", "importance", "stats", "tokenization")
ABOVE = ("artifacts", "pipeline", "study", "store", "report", "results", "ablations", "notebooks", "cli", "config")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports anywhere in its file."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                elif node.module and node.module.startswith("palu_perta"):
                    target = node.module.removeprefix("palu_perta").lstrip(".")
                else:
                    continue
                targets = [target] if node.module else [f"{target}.{a.name}".lstrip(".") for a in node.names]
                found.update(t for t in targets if t != name)
            elif isinstance(node, ast.Import):
                found.update(a.name.removeprefix("palu_perta.") for a in node.names if a.name.startswith("palu_perta."))
        graph[name] = found
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_config_cache_and_paths_are_not_in_an_import_cycle():
    graph = imports()
    for name in ("config", "artifacts", "paths", "store"):
        assert name not in reachable(graph, name), f"{name} imports something that imports it back"


def test_formulas_import_no_caching_or_orchestration():
    graph = imports()
    for name in FORMULAS:
        above = reachable(graph, name) & set(ABOVE)
        assert not above, f"{name} reaches {sorted(above)}: the formulas must not depend on the cache or the runner"
