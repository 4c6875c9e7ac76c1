"""The design card's shape, checked on the code itself: imports run one way (UI → core → storage), no
import cycle (function-level imports included, so none can hide one), no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "storage", "webapp", "demos", "embtune")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module ``path`` imports anywhere in it (``from a import b`` counts a and a.b)."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        targets |= {name for name in candidates if name in modules}
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_even_through_function_level_imports() -> None:
    assert _cycles(_graph()) == []


def test_imports_run_one_way() -> None:
    wrong = []
    for module, targets in _graph().items():
        top = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if top == "storage" and other == "core" and target != "core.errors":
                wrong.append(f"{module} → {target} (storage imports nothing of core but its errors)")
            elif top in ("core", "storage") and other in ("webapp", "demos", "embtune"):
                wrong.append(f"{module} → {target} (core and storage never import a UI)")
            elif {top, other} == {"webapp", "demos"}:
                wrong.append(f"{module} → {target} (webapp and demos do not import each other)")
    assert wrong == []


def test_no_module_is_over_400_lines() -> None:
    long = {name: count for name, path in _modules().items()
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_data_file_of_a_package_ships_with_it() -> None:
    """A wheel carries a package's non-Python files only when pyproject's package-data names them: a bundled
    catalogue, suite or migration template left out works from a checkout and fails once installed."""
    import fnmatch

    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]
    missing = []
    for package in PACKAGES:
        patterns, root = declared.get(package, []), ROOT / package
        for file in root.rglob("*"):
            relative = file.relative_to(root).as_posix()
            if file.is_file() and file.suffix not in (".py", ".pyc") and "__pycache__" not in relative \
                    and not any(fnmatch.fnmatch(relative, pattern) for pattern in patterns):
                missing.append(f"{package}/{relative}")
    assert not missing, f"not shipped (add to [tool.setuptools.package-data]): {missing}"
