"""The project's import graph, built from the source with `ast` (no module is imported): no cycles, and the
dependency directions of docs/architecture.md.

Every import statement counts, also those inside functions (a function-local import still makes a cycle; it
only hides it until the function runs).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("trainables", "evaluation", "sweeps", "pocket", "tracking")

# package -> the project packages it may import (docs/architecture.md "Data flow")
ALLOWED = {
    "trainables": set(),            # trainables imports no other project package (not even tracking)
    "tracking": set(),
    "evaluation": {"trainables", "tracking"},
    "sweeps": {"trainables", "evaluation", "tracking"},
    "pocket": {"trainables", "evaluation", "tracking"},
}
# single modules allowed one more edge (each named in docs/architecture.md)
EXCEPTIONS = {("pocket.demo", "sweeps")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        if (ROOT / pkg / "__init__.py").is_file():
            for path in sorted((ROOT / pkg).rglob("*.py")):
                out[_module_name(path)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lives in (longest existing prefix), or None."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: "from ..x import y" -> package minus (level - 1) parts, then x
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # "from pkg import submodule" imports the submodule; "from mod import name" the module
                names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
            for n in names:
                target = _resolve(n, modules)
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_graph_sees_known_edges():
    # the builder itself: edges that certainly exist must be found (else the other tests prove nothing)
    graph = import_graph(project_modules())
    assert "trainables.config" in graph["trainables.config_io"]
    assert "trainables.errors" in graph["trainables.frozen.refs"]
    assert any("trainables.config" in graph[m] for m in graph if m.startswith("sweeps."))
    assert "evaluation.config" in graph["evaluation"]     # relative "from .config import"
    # a cycle planted in a synthetic graph is found
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = find_cycles(import_graph(project_modules()))
    assert not cycles, ("import cycles among project modules (break them by moving the shared names to a module "
                        "both can import, e.g. trainables/errors.py): " + "; ".join(" <-> ".join(c) for c in cycles))


def test_dependency_directions():
    graph = import_graph(project_modules())
    bad = []
    for mod, targets in sorted(graph.items()):
        pkg = mod.split(".")[0]
        for t in sorted(targets):
            tpkg = t.split(".")[0]
            if tpkg != pkg and tpkg not in ALLOWED[pkg] and (mod, tpkg) not in EXCEPTIONS:
                bad.append(f"{mod} -> {t}")
    assert not bad, ("imports against docs/architecture.md's direction (sweeps -> trainables, evaluation; "
                     "evaluation -> trainables; pocket -> trainables, evaluation; trainables -> none): "
                     + ", ".join(bad))


def test_refs_is_a_leaf_of_guidance():
    graph = import_graph(project_modules())
    assert not {t for t in graph["trainables.frozen.refs"] if t.startswith("trainables.guidance")}


def test_platform_is_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists(), \
        "platform/__init__.py makes platform/ shadow the standard library's platform module: delete it"


def _late_imports_without_reason(path: Path) -> list[str]:
    """Function-local imports with no comment on the line above their block (or on their own lines)."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    found = []
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in (n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))):
            i = node.lineno - 1
            reason = any("#" in line for line in lines[i:node.end_lineno])
            while not reason and i > 0:          # up through the block of imports to the comment above it
                above = lines[i - 1].strip()
                if above.startswith("#"):
                    reason = True
                elif not above.startswith(("from ", "import ")) and not above.endswith((",", "(")):
                    break
                i -= 1
            if not reason:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_late_imports_say_why():
    # imports sit at module top; one placed in a function on purpose (a heavy library, measured) says why beside it
    offenders = [o for path in project_modules().values() for o in _late_imports_without_reason(path)]
    assert not offenders, "function-local imports without a reason comment:\n" + "\n".join(offenders)


def test_late_import_check_sees_a_bare_one(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    (tmp_path / "m.py").write_text("def f():\n    import json\n    return json\n\n"
                                   "def g():\n    # late: measured heavy\n    import json\n    import os\n")
    assert _late_imports_without_reason(tmp_path / "m.py") == ["m.py:2: import json"]
