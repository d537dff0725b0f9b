"""The README's "Using it" section runs as written (its Python blocks, in order, in a fresh directory)."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _using_it_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_using_it_runs(tmp_path):
    blocks = _using_it_blocks()
    assert blocks, "the README's Using it section has no Python block"
    script = "\n".join(blocks) + "\nprint('README OK')\n"
    (tmp_path / "readme_example.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "readme_example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "README OK" in proc.stdout
    assert (tmp_path / "tf1" / "model.index").exists()
