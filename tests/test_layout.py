"""The folders are the architecture: imports follow the data flow, no cycles, small files.

files -> data/ (audio/) -> models/ -> engine/ (training, evaluation) / inference/ -> report/, app/,
bench/, study/, cli. A lower layer never imports a higher one (docs: README "What is here").
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "avseg"
MAX_LINES = 400

# package -> the avseg packages it must never import (at module level or inside a function)
FORBIDDEN = {
    "models": ("engine", "data", "inference", "app", "report", "bench", "study", "cli", "demo"),
    "data": ("models", "engine", "inference", "app", "report", "bench", "study", "cli", "demo"),
    "audio": ("models", "engine", "inference", "data", "app", "report", "bench", "study", "cli", "demo"),
    "metrics": ("models", "engine", "inference", "data", "app", "report", "bench", "study", "cli", "demo"),
    "inference": ("app", "report", "bench", "study", "cli", "demo"),  # it loads engine checkpoints
    "engine": ("inference", "app", "report", "bench", "study", "cli", "demo"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Every avseg module `path` (the module named `module`) imports, at any depth of its code."""
    found: set[str] = set()
    module = module or module_name(path)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("avseg"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("avseg"):
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted import name refers to (`avseg.x.y` may be a name inside `avseg.x`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_imports_follow_the_data_flow():
    bad = []
    for name, path in all_modules().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in FORBIDDEN:
            continue
        for target in imports_of(path):
            target_parts = target.split(".")
            if len(target_parts) > 1 and target_parts[1] in FORBIDDEN[parts[1]]:
                bad.append(f"{name} imports {target}")
    assert not bad, "imports against the data flow:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    modules = all_modules()
    graph = {name: {t for t in (resolve(i, modules) for i in imports_of(path)) if t and t != name}
             for name, path in modules.items()}
    # a package's __init__ importing its own children is not a cycle of ideas: drop parent -> child edges
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_a_planted_violation(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from avseg.engine.train import train\n    from ..data import sample\n")
    found = imports_of(planted, "avseg.models.planted")
    assert {"avseg.engine.train", "avseg.data", "avseg.data.sample"} <= found


def test_no_source_file_over_the_limit():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_one_list_of_data_sets_and_one_distributed_helper():
    """`("s4", "ms3")` lives in data/datasets.py (`is_binary`); "is torch.distributed up" in avseg/distributed.py."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        name = module_name(path)
        if name != "avseg.data.datasets" and ('in ("s4", "ms3")' in text or "= (\"s4\", \"ms3\")" in text):
            offenders.append(f"{name}: a data-set tuple (use avseg.data.datasets)")
        if name != "avseg.distributed" and "dist.is_initialized()" in text:
            offenders.append(f"{name}: dist.is_initialized() (use avseg.distributed)")
    assert not offenders, offenders
