"""The package's architecture, read from its imports with `ast` (imports inside functions
count): no import cycles anywhere, and `mnist_bp/nn/` stays pure array code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mnist_bp"

# Standard-library modules that do network, serialisation or file formats: not in nn/.
NN_FORBIDDEN_STDLIB = {
    "urllib", "http", "socket", "ssl", "json", "csv", "gzip", "zipfile", "tarfile", "bz2",
    "lzma", "pickle", "shelve", "marshal", "tempfile", "shutil", "subprocess", "sqlite3",
    "email", "xml", "html", "io", "fcntl",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, nested ones included.

    `from a.b import c` yields `a.b.c` when `a/b/c.py` is a module of the package, else `a.b`.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES else base))
    return found


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p): p for p in FILES}


def internal_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {target for _, target in imports_of(path)
                       if target in MODULES and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of module names (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def nn_violations() -> list[str]:
    bad = []
    for path in sorted((PACKAGE / "nn").rglob("*.py")):
        for line, target in imports_of(path):
            top = target.split(".")[0]
            if target.startswith("mnist_bp."):
                ok = target == "mnist_bp.nn" or target.startswith("mnist_bp.nn.")
            elif top in ("numpy", "__future__"):
                ok = True
            else:
                ok = top in sys.stdlib_module_names and top not in NN_FORBIDDEN_STDLIB
            if not ok:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    return bad


def test_nn_imports_only_numpy_nn_and_pure_stdlib():
    assert nn_violations() == []


@pytest.mark.parametrize("name", ["nn", "data"])
def test_each_subpackage_docstring_names_every_module(name):
    """A newcomer reads the folder's __init__ to find what is where: it lists every module."""
    doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())) or ""
    modules = sorted(p.name for p in (PACKAGE / name).glob("*.py") if p.name != "__init__.py")
    assert [m for m in modules if f"`{m}`" not in doc] == []


def test_checker_names_an_offending_nn_import(tmp_path, monkeypatch):
    """A module in nn/ importing json (even inside a function) is reported with its line."""
    fake = tmp_path / "mnist_bp"
    (fake / "nn").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "nn" / "__init__.py").write_text("")
    (fake / "nn" / "bad.py").write_text(
        "import numpy as np\n\ndef f():\n    import json\n    from mnist_bp.config import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "MODULES",
                        {module_name(p): p for p in fake.rglob("*.py")})
    assert nn_violations() == ["mnist_bp/nn/bad.py:4 imports json",
                               "mnist_bp/nn/bad.py:5 imports mnist_bp.config"]
