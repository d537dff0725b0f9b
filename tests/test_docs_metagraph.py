"""docs/metagraph.md runs as written (its Python blocks, in order, in a fresh directory)."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_metagraph_doc_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "metagraph.md").read_text(), flags=re.S)
    assert len(blocks) >= 3, "docs/metagraph.md lost its Python blocks"
    (tmp_path / "doc_example.py").write_text("\n".join(blocks) + "\nprint('DOC OK')\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "doc_example.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "DOC OK" in proc.stdout
    assert "jaxsaver-2 ['predict', 'train_step']" in proc.stdout
    assert (tmp_path / "ckpt" / "model-2.meta").exists()
