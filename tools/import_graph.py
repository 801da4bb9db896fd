"""The import graph of encdec/: files, lines, import arrows (inner imports included), levels and
cycles. `python tools/import_graph.py [ROOT]` prints the summary; `--tree` adds each package's files
with line counts. Used for the layering notes; CI's check is `lint-imports` (pyproject.toml)."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """encdec modules a file imports anywhere in it; `from pkg import name` counts pkg.name when
    that is a module, else pkg."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in (root / "encdec").rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known) - {name} for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def levels(edges: dict[str, set[str]]) -> int:
    """Length of the longest import chain, counting a cycle as one module."""
    component = {m: i for i, c in enumerate(cycles(edges)) for m in c}
    node = {m: component.get(m, m) for m in edges}
    dag: dict[object, set[object]] = {}
    for m, targets in edges.items():
        dag.setdefault(node[m], set()).update(node[t] for t in targets if node[t] != node[m])
    depth: dict[object, int] = {}

    def height(v: object) -> int:
        if v not in depth:
            depth[v] = 1 + max((height(w) for w in dag.get(v, ())), default=0)
        return depth[v]

    return max(height(v) for v in dag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--tree", action="store_true", help="list each package's files with line counts")
    args = parser.parse_args()
    root = Path(args.root)
    edges = graph(root)
    files = sorted((root / "encdec").rglob("*.py"))
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in files)
    print(f"{len(files)} files, {lines} lines, {sum(map(len, edges.values()))} import arrows, {levels(edges)} levels, "
          f"{len(cycles(edges))} cycles")
    for component in cycles(edges):
        print("  cycle:", " <-> ".join(component))
    if args.tree:
        for path in files:
            print(f"  {path.relative_to(root)!s:45} {len(path.read_text(encoding='utf-8').splitlines()):5d}")


if __name__ == "__main__":
    main()
