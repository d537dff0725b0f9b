"""The package's import structure, read from its source with ``ast``: no import cycle, and nothing
above ``jaxsaver/_store/`` names a storage backend or does file I/O through ``os`` itself."""

from __future__ import annotations

import ast
import pathlib
import textwrap

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxsaver"

#: What modules outside the storage package may import from it: the interface and ``resolve``.
STORE_PUBLIC = {"jaxsaver._store", "jaxsaver._store.base"}
#: ``os`` functions that open or read/write files by descriptor: only the local backend uses them.
OS_FILE_IO = {"open", "pread", "preadv", "pwrite", "pwritev", "fsync", "fdatasync", "posix_fadvise"}


def module_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """``{dotted module name: file}`` for every ``.py`` under ``root`` (a package directory)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.Module, top_level: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements: all of them, or those run when the module is imported."""
    if not top_level:  # every import anywhere, except annotations-only ones
        skipped = {
            id(inner)
            for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for stmt in node.body for inner in ast.walk(stmt)
        }
        return [n for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                stack.extend(handler.body)
        elif isinstance(node, (ast.With,)):
            stack.extend(node.body)
    return found


def imports_of(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path], *,
               top_level: bool) -> set[str]:
    """The package modules ``name`` imports (``from a import b`` counts ``a.b`` if it is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = set()
    for node in _import_nodes(tree, top_level):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = []
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in modules else source)
        for target in targets:
            # `import a.b.c` names a.b.c; keep the longest prefix that is a package module
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, or with a self-loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def storage_violations(root: pathlib.Path) -> list[str]:
    """Modules outside ``<pkg>._store`` that import a storage backend or call ``os`` file I/O."""
    modules = module_files(root)
    pkg = root.name
    store_pkg = f"{pkg}._store"
    public = {m.replace("jaxsaver", pkg, 1) for m in STORE_PUBLIC}
    problems = []
    for name, path in modules.items():
        if name == store_pkg or name.startswith(store_pkg + "."):
            continue
        for target in imports_of(name, path, modules, top_level=False):
            if target.startswith(store_pkg + ".") and target not in public:
                problems.append(f"{name} imports the storage backend {target}")
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in OS_FILE_IO
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                problems.append(f"{name}:{node.lineno} calls os.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                for alias in node.names:
                    if alias.name in OS_FILE_IO:
                        problems.append(f"{name}:{node.lineno} imports os.{alias.name}")
    return problems


def import_graph(root: pathlib.Path, *, top_level: bool) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules, top_level=top_level) for name, path in modules.items()}


# --------------------------------------------------------------------------- the package


def test_package_has_no_import_cycle():
    graph = import_graph(PACKAGE, top_level=True)
    assert "jaxsaver._store.local" in graph and graph["jaxsaver._store.resolver"]  # the walk found them
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_lazy_imports_form_no_cycle_below_the_facade():
    """With imports inside functions counted too, only the façade's lazy attribute loading may
    point back up (``jaxsaver/__init__`` is nobody's dependency)."""
    graph = import_graph(PACKAGE, top_level=False)
    graph = {m: {t for t in deps if t != "jaxsaver"} for m, deps in graph.items()}
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles (lazy imports included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_nothing_above_the_store_package_names_a_backend_or_opens_files():
    assert storage_violations(PACKAGE) == []


# --------------------------------------------------------------------------- the checks can fail


@pytest.fixture
def bad_package(tmp_path):
    root = tmp_path / "badpkg"
    files = {
        "__init__.py": "",
        "a.py": "from badpkg import b\n",
        "b.py": "import badpkg.c\n",
        "c.py": "from . import a\n",
        "lazy.py": "def f():\n    from badpkg import a\n",
        "_store/__init__.py": "from badpkg._store.base import Store\n",
        "_store/base.py": "class Store: ...\n",
        "_store/local.py": "import os\nfd = os.open('x', os.O_RDONLY)\n",
        "reader.py": textwrap.dedent("""\
            import os
            from badpkg._store import local
            def read():
                from badpkg._store.local import LOCAL
                return os.preadv(3, [], 0)
        """),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_cycle_finder_finds_a_three_module_cycle(bad_package):
    cycles = find_cycles(import_graph(bad_package, top_level=True))
    assert cycles == [["badpkg.a", "badpkg.b", "badpkg.c"]]


def test_storage_check_flags_backend_imports_and_os_file_io(bad_package):
    problems = storage_violations(bad_package)
    assert "badpkg.reader imports the storage backend badpkg._store.local" in problems
    assert any(p.startswith("badpkg.reader:5 calls os.preadv") for p in problems)
    assert not any(p.startswith("badpkg._store") for p in problems)  # the backend may
