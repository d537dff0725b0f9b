"""The documentation site: it builds with warnings as errors, every page's Python code runs, and
the README and the getting-started page agree."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
GUIDE = ["getting-started", "flax", "saver-model", "sharding", "storage", "inspection", "format", "migration", "api"]


def fenced(text, language):
    """The bodies of the ```language fenced blocks of a Markdown text, in order."""
    return re.findall(rf"^```{language}[ \t]*\n(.*?)^```[ \t]*$", text, re.S | re.M)


def test_docs_build_with_warnings_as_errors(tmp_path):
    if importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("myst_parser") is None:
        pytest.skip("sphinx and myst-parser are not installed (pip install -e '.[test]')")
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True, text=True, timeout=600, env=os.environ | {"PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for page in PAGES:
        assert (out / f"{page.stem}.html").is_file(), page.name  # every page is in a toctree
    api = (out / "api.html").read_text()
    for name in ("jaxsaver.Saver", "jaxsaver.restore_nnx", "jaxsaver.init_from_checkpoint", "CheckpointReader"):
        assert name in api, name  # autodoc really rendered the docstrings
    assert "Restores a checkpoint" in api


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs(page, tmp_path, monkeypatch):
    """Every ```python block of the page runs; the blocks of one page share a namespace."""
    blocks = fenced(page.read_text(), "python")
    if not blocks:
        pytest.skip(f"{page.name} has no Python code")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{page.name} (python block {index + 1})", "exec"), namespace)


def test_guide_pages_exist_and_are_in_the_index():
    index = (DOCS / "index.md").read_text()
    for stem in GUIDE:
        assert (DOCS / f"{stem}.md").is_file(), stem
        assert re.search(rf"^{re.escape(stem)}$", index, re.M), stem


def test_getting_started_uses_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    start = (DOCS / "getting-started.md").read_text()
    commands = fenced(readme.split("## Using it")[0], "bash")
    assert len(commands) == 2
    assert fenced(start, "bash")[:2] == commands


def test_readme_using_it_links_every_guide_page():
    section = (ROOT / "README.md").read_text().split("## Using it", 1)[1].split("\n## ", 1)[0]
    links = set(re.findall(r"\]\((docs/[^)#]+\.md)(?:#[^)]*)?\)", section))
    for stem in GUIDE:
        assert f"docs/{stem}.md" in links, stem
    for link in links:
        assert (ROOT / link).is_file(), link


def test_api_reference_covers_every_public_name():
    import jaxsaver

    api = (DOCS / "api.md").read_text()
    missing = [name for name in jaxsaver.__all__ if f"jaxsaver.{name}" not in api]
    assert not missing, f"docs/api.md does not document: {missing}"
