"""Executes every notebook in ``notebooks/`` in place, so GitHub shows their outputs.

Run from the repository root after changing a notebook: ``python tools/execute_notebooks.py``.
Outputs are kept small (``MAX_OUTPUT_BYTES`` per notebook, checked by tests/test_notebooks.py);
temporary paths are printed as they were on the machine that ran it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

#: The most bytes of outputs a committed notebook may hold.
MAX_OUTPUT_BYTES = 200_000


def output_bytes(nb: nbformat.NotebookNode) -> int:
    """Bytes of all code-cell outputs, as stored in the file."""
    return sum(len(json.dumps(cell.outputs)) for cell in nb.cells if cell.cell_type == "code")


def execute(path: str) -> nbformat.NotebookNode:
    """Runs one notebook top to bottom in a temporary working directory; returns it with outputs."""
    from test_notebooks import _kernel_env, _kernel_manager

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as workdir:
        client = nbclient.NotebookClient(nb, timeout=300, km=_kernel_manager(), resources={"metadata": {"path": workdir}})
        client.execute(env=_kernel_env())
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    return nb


def main() -> int:
    folder = os.path.join(ROOT, "notebooks")
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".ipynb")):
        path = os.path.join(folder, name)
        nb = execute(path)
        size = output_bytes(nb)
        if size > MAX_OUTPUT_BYTES:
            print(f"{name}: outputs are {size} bytes (> {MAX_OUTPUT_BYTES}); shorten what it prints", file=sys.stderr)
            return 1
        nbformat.write(nb, path)
        print(f"{name}: executed, {size} bytes of outputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
