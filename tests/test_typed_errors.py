"""Every error jaxsaver raises is a jaxsaver error (which also inherits the builtin users catch).

Read from the source with ``ast``: no ``raise ValueError(...)``, ``raise RuntimeError(...)``,
``raise KeyError(...)``, ``raise OSError(...)`` (any builtin exception) anywhere in the package,
and no exception class outside the hierarchy. Allowed: ``AttributeError`` (the module
``__getattr__`` protocol) and ``AssertionError`` (markers of unreachable branches).
"""

from __future__ import annotations

import ast
import builtins
import pathlib
import textwrap

import pytest

import jaxsaver
from jaxsaver._errors import JaxsaverError

PACKAGE = pathlib.Path(jaxsaver.__file__).resolve().parent
BUILTIN_ERRORS = {
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}
ALLOWED = {"AttributeError", "AssertionError", "StopIteration", "KeyboardInterrupt", "SystemExit", "GeneratorExit"}


def _raised_name(node: ast.Raise) -> str | None:
    exc = node.exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    return exc.id if isinstance(exc, ast.Name) else None


def builtin_raises(source: str, filename: str) -> list[str]:
    """``file:line raise Name`` for each raise of a builtin exception not in ``ALLOWED``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Raise):
            name = _raised_name(node)
            if name in BUILTIN_ERRORS and name not in ALLOWED:
                found.append(f"{filename}:{node.lineno} raise {name}")
        if isinstance(node, ast.ClassDef):
            bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
            if bases and all(b in BUILTIN_ERRORS for b in bases) and node.name != "JaxsaverError":
                found.append(f"{filename}:{node.lineno} class {node.name}({', '.join(bases)}) outside the hierarchy")
    return sorted(found, key=lambda p: int(p.split(":")[1].split()[0]))


def test_no_builtin_exception_is_raised_in_the_package():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_proto" in path.parts:
            continue  # generated code
        problems += builtin_raises(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    assert problems == [], "\n".join(problems)


def test_the_check_finds_builtin_raises():
    source = textwrap.dedent("""
        class Bad(ValueError):
            pass
        def f(x):
            if x:
                raise ValueError("no")
            raise KeyError
        def g():
            raise AttributeError("fine: protocol")
    """)
    assert builtin_raises(source, "m.py") == [
        "m.py:2 class Bad(ValueError) outside the hierarchy",
        "m.py:6 raise ValueError",
        "m.py:7 raise KeyError",
    ]


@pytest.mark.parametrize("module, name", [
    ("jaxsaver._format.slices", "SliceError"),
    ("jaxsaver._format.table", "TableError"),
    ("jaxsaver._format.tensors", "TensorError"),
    ("jaxsaver._format.varint", "VarintError"),
    ("jaxsaver._format.dtypes", "UnsupportedDtype"),
    ("jaxsaver._format.snappy", "SnappyError"),
])
def test_format_errors_are_jaxsaver_value_errors(module, name):
    import importlib

    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, JaxsaverError) and issubclass(cls, ValueError)


def test_pure_layer_errors_keep_their_builtin():
    from jaxsaver._format.slices import SliceError, parse_slice_spec
    from jaxsaver._format.varint import encode_varint

    with pytest.raises(SliceError, match="bad extent"):
        parse_slice_spec("4 6 0,x:-")
    with pytest.raises(ValueError, match="non-negative"):  # VarintError, an InvalidArgumentError
        encode_varint(-1)
