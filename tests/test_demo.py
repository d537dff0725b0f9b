"""The README's main job runs end to end and leaves the files it announces."""

import os

from jaxsaver import demo
from jaxsaver import BundleReader, latest_checkpoint


def test_demo_trains_saves_inspects_and_restores(tmp_path, capsys):
    assert demo.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "every leaf equal to the trained state" in out
    latest = latest_checkpoint(str(tmp_path))
    assert os.path.basename(latest) == "model-6"
    kept = sorted(f for f in os.listdir(tmp_path) if f.endswith(".index"))
    assert kept == ["model-4.index", "model-6.index"]
    with BundleReader(latest) as reader:
        assert "params/params/Dense_0/kernel" in reader.keys()
        assert reader.shape("params/params/Dense_0/kernel") == (8, 32)
