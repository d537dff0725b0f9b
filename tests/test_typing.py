"""Typing: the package ships ``py.typed`` and its public signatures use real types, not ``Any``."""

import inspect
import pathlib
import tomllib

import jaxsaver
from jaxsaver import Saver, latest_checkpoint, list_variables, load_checkpoint, restore_as_numpy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_py_typed_is_shipped():
    assert (pathlib.Path(jaxsaver.__file__).parent / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["jaxsaver"]


def _annotation(func, name):
    return str(inspect.signature(func).parameters[name].annotation)


def test_public_signatures_name_their_types():
    for func, name in [
        (Saver.save, "save_path"), (Saver.restore, "save_path"), (restore_as_numpy, "save_path"),
        (load_checkpoint, "ckpt_dir_or_file"), (list_variables, "ckpt_dir_or_file"),
        (latest_checkpoint, "checkpoint_dir"),
    ]:
        assert "PathLike" in _annotation(func, name), (func.__qualname__, name)
    assert _annotation(Saver.save, "values") == "PyTree"
    assert _annotation(Saver.__init__, "template") == "PyTree | None"
    assert str(inspect.signature(Saver.restore).return_annotation) == "PyTree"
