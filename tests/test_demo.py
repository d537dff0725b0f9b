"""The README's main job runs end to end and leaves the files it announces."""

import os

from jaxsaver import demo
from jaxsaver import BundleReader, latest_checkpoint


def test_demo_trains_saves_inspects_and_restores(tmp_path, capsys):
    assert demo.main(["--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "every leaf equal to the trained state" in out
    latest = latest_checkpoint(str(tmp_path))
    assert os.path.basename(latest) == "model-6"
    kept = sorted(f for f in os.listdir(tmp_path) if f.endswith(".index"))
    assert kept == ["model-4.index", "model-6.index"]
    with BundleReader(latest) as reader:
        assert "params/Dense_0/kernel" in reader.keys()
        assert not any(name.startswith("params/params/") for name in reader.keys())
        assert reader.shape("params/Dense_0/kernel") == (8, 32)


def test_demo_help_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--help"]) == 0
    assert "--dir" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


def test_demo_without_dir_cleans_up_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "removed " in out and "--dir" in out
    assert os.listdir(tmp_path) == []
