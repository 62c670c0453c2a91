"""Imports point one way: no cycle among the project's modules, and low layers never reach up.

Every module of ``search`` and ``spaces`` (package ``__init__`` files and sub-packages included)
is read with ``ast``, never imported. Every import counts: at the top of a module, inside a
function (a lazy import is still a dependency), ``from search import x``, ``from search.x import
y`` and relative ones. Imports under ``if TYPE_CHECKING:`` never run, so they make no cycle, but
they still count for the layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("search", "spaces")

# What each layer must never import, directly or through other modules of ours.
LOW = (
    "search.errors",
    "search.data",
    "search.models",
    "search.augment",
    "search.storage",
    "search.training",
    "search.studies",
    "search.parallel",
    "search.registry",
)
HIGH = (
    "search.engine",
    "search.report",
    "search.dashboard",
    "search.cli",
    "search.workers",
    "search.api",
)
LAYERS = [
    *((low, HIGH) for low in LOW),
    ("search.engine", ("search.dashboard", "search.report", "search.cli", "search.api")),
    ("search.report", ("search.cli", "search.api")),
    ("search.dashboard", ("search.cli", "search.api")),
]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the project module it imports
    line: int
    runs: bool  # False under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.setdefault(_name(path), path)  # a package wins over a shadowed module.py
    return found


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST, runs: bool = True) -> Iterable[tuple[ast.stmt, bool]]:
    """Every import statement of ``tree`` (at any depth), with whether it runs."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, runs
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _statements(ast.Module(body=[child], type_ignores=[]), False)
            for child in node.orelse:
                yield from _statements(ast.Module(body=[child], type_ignores=[]), runs)
        else:
            yield from _statements(node, runs)


def _owner(name: str) -> str | None:
    """The module that ``name`` (a module, or a name inside one) lives in."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _targets(source: str, node: ast.Import | ast.ImportFrom) -> Iterable[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in PACKAGES:
                yield _owner(alias.name) or alias.name
        return
    if node.level:  # relative: from the package that holds ``source``
        package = source if is_package(source) else source.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = ".".join(p for p in (package, node.module) if p)
    else:
        base = node.module or ""
    if base.split(".")[0] not in PACKAGES:
        return
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in modules() else (_owner(base) or base)


@cache
def imports() -> tuple[Import, ...]:
    found = []
    for source, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, runs in _statements(tree):
            for target in _targets(source, node):
                if target != source:
                    found.append(Import(source, target, node.lineno, runs))
    return tuple(found)


def graph(only_running: bool) -> dict[str, dict[str, Import]]:
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules()}
    for imp in imports():
        if imp.runs or not only_running:
            edges[imp.source].setdefault(imp.target, imp)
    return edges


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """The cycles among the modules: in each strongly connected group (Tarjan's algorithm), a
    shortest cycle through each of its modules, each cycle once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    found: dict[frozenset, list[Import]] = {}
    for group in groups:
        for start in group:  # a shortest cycle through each module of the group, once each
            cycle = _cycle_through(start, set(group), edges)
            found.setdefault(frozenset((i.source, i.target) for i in cycle), cycle)
    return list(found.values())


def _cycle_through(
    start: str, members: set[str], edges: dict[str, dict[str, Import]]
) -> list[Import]:
    """A shortest cycle from ``start`` back to it inside ``members``, as the imports on it."""
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, imp in sorted(edges[v].items()):
                if w == start:
                    return [*paths[v], imp]
                if w in members and w not in paths:
                    paths[w] = [*paths[v], imp]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def reaches(edges: dict[str, dict[str, Import]], source: str, banned: tuple[str, ...]):
    """The import paths from ``source`` to a module in (or under) ``banned``."""

    def is_banned(m: str) -> bool:
        return any(m == b or m.startswith(b + ".") for b in banned)

    paths: dict[str, list[Import]] = {source: []}
    frontier, found = [source], []
    while frontier:
        nxt = []
        for v in frontier:
            for w, imp in sorted(edges.get(v, {}).items()):
                if w in paths:
                    continue
                paths[w] = [*paths[v], imp]
                if is_banned(w):
                    found.append(paths[w])  # the path ends here: how it got there is enough
                else:
                    nxt.append(w)
        frontier = nxt
    return found


def show(path: list[Import]) -> str:
    return " -> ".join([path[0].source, *(f"{i.target} (line {i.line})" for i in path)])


# --- the reader itself --------------------------------------------------------------------------


def test_every_module_is_read_and_every_import_names_one():
    names = set(modules())
    assert {"search", "search.cli", "search.engine", "search.storage", "spaces.cnn"} <= names
    assert ("search.engine", "search.storage") in {(i.source, i.target) for i in imports()}
    missing = [str(i) for i in imports() if i.target not in names]
    if missing:
        pytest.fail("imports of modules that do not exist:\n  " + "\n  ".join(missing), False)


def _defined(module: str) -> set[str] | None:
    """The names bound at the top of ``module`` (None: any name, via ``*`` or ``__getattr__``)."""
    names = {m.rpartition(".")[2] for m in modules() if m.rpartition(".")[0] == module}
    tree = ast.parse(modules()[module].read_text())
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return None if "__getattr__" in names else names


def test_every_name_imported_from_the_project_exists():
    """A name moved to another module fails here, not at the first run of the code that
    imports it (a lazy import inside a rarely used function, say)."""
    gone = []
    for source, path in modules().items():
        for node, _ in _statements(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            for alias in node.names:
                one = ast.ImportFrom(node.module, [alias], node.level)
                for target in _targets(source, one):  # nothing for other libraries
                    if target.endswith("." + alias.name) or target not in modules():
                        continue  # a submodule, or a missing module (the test above says so)
                    defined = _defined(target)
                    if defined is not None and alias.name not in defined:
                        gone.append(
                            f"{source} (line {node.lineno}): {target} has no {alias.name!r}"
                        )
    if gone:
        pytest.fail("imported names that do not exist:\n  " + "\n  ".join(gone), False)


def test_the_reader_resolves_each_form_of_import(tmp_path, monkeypatch):
    """A made-up package, so the reader is checked without relying on today's layout."""
    pkg = tmp_path / "search"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("X = 1\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import search.a\n"
        "from search import sub\n"
        "from search.sub import c as renamed\n"
        "if TYPE_CHECKING:\n"
        "    from search.sub.c import Y\n"
        "def f():\n"
        "    from search.a import X\n"
    )
    (pkg / "sub" / "__init__.py").write_text("from . import c\nfrom .c import Y\n")
    (pkg / "sub" / "c.py").write_text("from .. import a\nfrom ..b import f\nY = 2\n")
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "__init__.py").write_text("from search.sub import Y\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    for fn in (modules, imports):
        fn.cache_clear()
    try:
        found = {(i.source, i.target, i.runs) for i in imports()}
    finally:
        for fn in (modules, imports):
            fn.cache_clear()
    assert found == {
        ("search.b", "search.a", True),  # import search.a; and the lazy one in f()
        ("search.b", "search.sub", True),  # from search import sub (a package)
        ("search.b", "search.sub.c", True),  # from search.sub import c as renamed
        ("search.b", "search.sub.c", False),  # under TYPE_CHECKING
        ("search.sub", "search.sub.c", True),  # from . import c; from .c import Y
        ("search.sub.c", "search.a", True),  # from .. import a
        ("search.sub.c", "search.b", True),  # from ..b import f
        ("spaces", "search.sub", True),  # a name from a package's __init__
    }
    edges = {
        "search": {},
        "search.a": {},
        "search.b": {"search.sub.c": Import("search.b", "search.sub.c", 4, True)},
        "search.sub.c": {"search.b": Import("search.sub.c", "search.b", 2, True)},
    }
    (cycle,) = cycles(edges)
    assert show(cycle) == "search.b -> search.sub.c (line 4) -> search.b (line 2)"


# --- the rules ----------------------------------------------------------------------------------


def test_no_import_cycles():
    found = cycles(graph(only_running=True))
    if found:
        listed = "\n".join(f"  {show(c)}" for c in found)
        pytest.fail(f"{len(found)} import cycle(s), importer -> imported:\n{listed}", False)


@pytest.mark.parametrize("low, banned", LAYERS, ids=[low for low, _ in LAYERS])
def test_low_layers_never_import_higher_ones(low, banned):
    if low not in modules():
        pytest.fail(f"{low} is gone: update the layers in this test", pytrace=False)
    found = reaches(graph(only_running=False), low, banned)
    if found:
        listed = "\n".join(f"  {show(p)}" for p in found)
        pytest.fail(f"{low} must not import {', '.join(banned)}, but:\n{listed}", False)


def test_nothing_below_the_command_line_imports_it():
    edges = graph(only_running=False)
    found = [
        imp
        for source in edges
        if not (source == "search.cli" or source.startswith("search.cli."))
        for target, imp in edges[source].items()
        if target == "search.cli" or target.startswith("search.cli.")
    ]
    if found:
        listed = "\n".join(f"  {imp}" for imp in found)
        pytest.fail(f"imports of the command line from below it:\n{listed}", False)


def test_no_module_is_shadowed_by_a_package_of_the_same_name():
    shadowed = [
        str(p.relative_to(ROOT))
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
        if p.name != "__init__.py" and (p.with_suffix("") / "__init__.py").is_file()
    ]
    assert not shadowed, f"dead files (Python imports the package of the same name): {shadowed}"
