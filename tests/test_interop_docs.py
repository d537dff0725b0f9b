"""docs/interop.md runs as written: its Python blocks, in order, in an empty directory."""

import pathlib
import re
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytest.importorskip("tensorflow")
pytest.importorskip("orbax.checkpoint")


def test_interop_doc_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "interop.md").read_text(), flags=re.S)
    assert len(blocks) >= 4, "docs/interop.md lost its examples"
    script = tmp_path / "interop_example.py"
    script.write_text("\n".join(blocks) + "\nDOC_OK = True\n")
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(script))  # in this process: TensorFlow is imported once per suite
    assert namespace["DOC_OK"]
    assert (tmp_path / "tf_ckpt" / "model-12.index").exists()
    assert (tmp_path / "orbax_again" / "_METADATA").exists()
