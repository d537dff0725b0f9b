"""Runs every notebook in ``notebooks/`` top to bottom (nbclient), so they never rot.

The notebooks are committed executed (so GitHub shows them; ``tools/execute_notebooks.py``
refreshes them) with small outputs; the suite re-executes them, and a cell that raises fails its
notebook's test.
"""

from __future__ import annotations

import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".ipynb"))


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("XLA_FLAGS", None)  # notebooks set their own device count
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _kernel_manager():
    """A kernel manager that starts this interpreter's ipykernel, whatever kernel specs exist."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    try:
        km.kernel_spec  # noqa: B018 - probe the spec
    except Exception:  # no spec installed: run ipykernel from this interpreter directly
        km = KernelManager(kernel_cmd=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    return km


def test_notebooks_are_committed_executed_with_small_outputs():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from execute_notebooks import MAX_OUTPUT_BYTES, output_bytes

    for name in NOTEBOOKS:
        nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        counts = [cell.execution_count for cell in code]
        assert counts == list(range(1, len(code) + 1)), f"{name}: not executed top to bottom: {counts}"
        assert any(cell.outputs for cell in code), name
        assert not any(out.get("output_type") == "error" for cell in code for out in cell.outputs), name
        assert output_bytes(nb) <= MAX_OUTPUT_BYTES, name


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=180, km=_kernel_manager(), resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=_kernel_env())
    html = [
        out["data"]["text/html"]
        for cell in nb.cells if cell.cell_type == "code"
        for out in cell.outputs if "text/html" in out.get("data", {})
    ]
    assert html, "a checkpoint's HTML view should be displayed"
    assert any("<details" in page and "params" in page for page in html)
