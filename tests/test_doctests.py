"""Every docstring example in the library runs (STYLE: Google docstrings with runnable examples)."""

import doctest
import importlib
import pkgutil

import pytest

import jaxsaver

_SKIP = {"jaxsaver.demo", "jaxsaver.cli", "jaxsaver.__main__"}


def _modules():
    for info in pkgutil.walk_packages(jaxsaver.__path__, "jaxsaver."):
        if info.name.endswith("_pb2") or info.name in _SKIP:
            continue
        yield info.name


@pytest.mark.parametrize("name", sorted(_modules()))
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
