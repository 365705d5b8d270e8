"""The tree's rules, checked from the source (ast, nothing imported):

- no import cycles between the project's modules, lazy (function-level) imports included;
- guest/ runs inside a host: it imports the standard library and guest/ only;
- the packages never import examples/ (not packaged) or tests/.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("emulator", "guest", "notnets_rpc", "notnets_bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module name ``path`` imports, relative imports resolved; ``from pkg import x``
    counts as importing ``pkg.x`` when that is one of ``modules``, else ``pkg``."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            for alias in node.names:  # `from pkg import module` names the module, not pkg
                names.add(f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in modules else mod)
    return names


def project_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports. Importing ``a.b`` also runs ``a``'s
    __init__, but that implicit edge is left out (as pydeps does): a package importing its
    own children is how packages work, not a cycle."""
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
             if "__pycache__" not in p.parts and not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))}
    native = {module_name(p) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.c")}  # C extensions' sources
    names = frozenset(files) | native
    return {name: {n for n in imported_names(path, names) if n in files and n != name}
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a list of modules (first == last), or [] (iterative DFS, three colours)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if root in state:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def _within_rpc(a: str, b: str) -> bool:
    return a.split(".")[0] == b.split(".")[0] == "notnets_rpc"


def test_no_import_cycles():
    graph = {name: {d for d in deps if not _within_rpc(name, d)} for name, deps in project_graph().items()}
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


def test_no_import_cycles_within_notnets_rpc():
    graph = {name: {d for d in deps if _within_rpc(name, d)} for name, deps in project_graph().items()}
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted((REPO / "guest").rglob("*.py")), ids=lambda p: p.name)
def test_guest_imports_stdlib_and_guest_only(path: Path):
    outside = {n for n in imported_names(path)
               if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "guest"}
    assert not outside, f"{path.relative_to(REPO)} imports {sorted(outside)}"


def test_packages_never_import_examples_or_tests():
    bad = [f"{name} imports {dep}" for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
           for name in [module_name(p)] for dep in sorted(imported_names(p))
           if dep.split(".")[0] in ("examples", "tests")]
    assert not bad, "; ".join(bad)
