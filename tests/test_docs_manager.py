"""docs/manager.md runs as written: its Python blocks, in order, in a fresh directory, print what their comments say."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_manager_page_runs_and_prints_what_it_says(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "manager.md").read_text(), flags=re.S)
    assert len(blocks) >= 5
    script = "\n".join(blocks)
    expected = [m.group(1).strip() for m in re.finditer(r"^\s*print\(.*\)\s+# (.+)$", script, flags=re.M)]
    (tmp_path / "page.py").write_text(script)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    proc = subprocess.run([sys.executable, "page.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines() == expected
    # The page's ls example is what `jaxsaver ls` prints for that directory (times aside).
    ls = subprocess.run([sys.executable, "-m", "jaxsaver", "ls", "runs/exp1"], cwd=tmp_path, capture_output=True,
                        text=True, timeout=120, env=env)
    page = (ROOT / "docs" / "manager.md").read_text().split("```text\n", 1)[1].split("```", 1)[0]
    strip = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
    assert strip.sub("T", ls.stdout) == strip.sub("T", page)
