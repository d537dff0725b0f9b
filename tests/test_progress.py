"""progress= on saves and restores: real callbacks through real files, the tqdm display, errors."""

from __future__ import annotations

import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxsaver import InvalidArgumentError, ProgressEvent, Saver
from jaxsaver import _progress


def _tree() -> dict:
    rng = np.random.default_rng(0)
    return {
        "big": jnp.asarray(rng.normal(size=(512, 1024)).astype(np.float32)),  # 2 MiB
        "small": {f"s{i}": jnp.asarray(rng.normal(size=(64,)).astype(np.float32)) for i in range(20)},
        "host": rng.integers(0, 9, size=(100,), dtype=np.int64),
        "step": 7,
    }


def _nbytes(tree: dict) -> int:
    return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree))


def _check_events(events: list[ProgressEvent], operation: str, total: int, tensors: int, checkpoint: str) -> None:
    assert events, "no progress event"
    assert all(isinstance(e, ProgressEvent) for e in events)
    assert all(e.operation == operation and checkpoint in e.checkpoint for e in events)
    assert all(e.bytes_total == total and e.tensors_total == tensors for e in events)
    done = [e.bytes_done for e in events]
    assert done == sorted(done)
    assert [e.tensors_done for e in events] == sorted(e.tensors_done for e in events)
    last = events[-1]
    assert last.finished and sum(e.finished for e in events) == 1
    assert (last.bytes_done, last.tensors_done, last.fraction, last.eta_s) == (total, tensors, 1.0, 0.0)
    assert last.elapsed_s >= 0 and last.mib_per_s >= 0


@pytest.mark.parametrize("blocking", [True, False])
def test_save_and_restore_report_every_byte_and_tensor(tmp_path, blocking):
    tree = _tree()
    saver = Saver(template=tree)
    prefix = str(tmp_path / "model")
    events: list[ProgressEvent] = []
    threads = set()

    def record(event: ProgressEvent) -> None:
        threads.add(threading.get_ident())
        events.append(event)

    out = saver.save(tree, prefix, progress=record, blocking=blocking)
    if not blocking:
        out = out.result()
    assert out == prefix and os.path.exists(prefix + ".index")
    total, count = _nbytes(tree), len(jax.tree.leaves(tree))
    _check_events(events, "save", total, count, prefix)
    assert os.path.getsize(prefix + ".data-00000-of-00001") == total

    events.clear()
    restored = saver.restore(prefix, progress=record)
    _check_events(events, "restore", total, count, prefix)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sharded_save_and_resharded_restore_count_each_tensor_once(tmp_path):
    devices = np.array(jax.devices()[:8])
    mesh, other = Mesh(devices.reshape(4, 2), ("x", "y")), Mesh(devices.reshape(2, 4), ("x", "y"))
    rng = np.random.default_rng(1)
    values = {k: rng.normal(size=(64, 32)).astype(np.float32) for k in ("a", "b", "c")}
    specs = {"a": P("x", "y"), "b": P("x"), "c": P()}
    tree = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in values.items()}
    target = {k: jax.device_put(np.zeros_like(v), NamedSharding(other, specs[k])) for k, v in values.items()}
    saver = Saver(template=tree, sharded=True)
    prefix = str(tmp_path / "model")
    events: list[ProgressEvent] = []
    saver.save(tree, prefix, progress=events.append)
    _check_events(events, "save", 3 * 64 * 32 * 4, 3, prefix)
    events.clear()
    restored = saver.restore(prefix, target=target, progress=events.append)
    _check_events(events, "restore", 3 * 64 * 32 * 4, 3, prefix)
    for k, v in values.items():
        np.testing.assert_array_equal(np.asarray(restored[k]), v)
        assert restored[k].sharding == target[k].sharding


def test_interval_limits_events_but_not_the_final_one():
    events: list[ProgressEvent] = []
    tracker = _progress.Tracker.of(events.append, operation="save", checkpoint="c", bytes_total=50,
                                   tensors_total=50, interval=3600.0)
    for _ in range(50):
        tracker.advance(1, tensors=1)
    tracker.finish()
    # The first advance reports (nothing was reported yet); the interval holds the rest back.
    assert [(e.bytes_done, e.finished) for e in events] == [(1, False), (50, True)]


def test_progress_true_shows_a_tqdm_bar_only_over_the_threshold(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tqdm")
    small = {"w": jnp.ones((8,))}
    saver = Saver(template=small)
    saver.save(small, str(tmp_path / "small"), progress=True)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(_progress, "DISPLAY_THRESHOLD", 1024)
    big = {"w": jnp.arange(4096, dtype=jnp.float32)}
    saver = Saver(template=big)
    saver.save(big, str(tmp_path / "big"), progress=True)
    err = capsys.readouterr().err
    assert "save" in err and "MiB" in err and "1/1 tensors" in err
    saver.restore(str(tmp_path / "big"), progress=True)
    err = capsys.readouterr().err
    assert "restore" in err and "1/1 tensors" in err


def test_missing_tqdm_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError("No module named 'tqdm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with pytest.raises(ImportError, match=r"jaxsaver\[progress\]"):
        _progress.tqdm_display()


def test_bad_progress_argument_is_refused(tmp_path):
    tree = {"w": jnp.ones((4,))}
    saver = Saver(template=tree)
    with pytest.raises(InvalidArgumentError, match="progress"):
        saver.save(tree, str(tmp_path / "model"), progress="yes")
    assert not os.listdir(tmp_path)


def test_failed_save_reports_no_finished_event(tmp_path):
    tree = {"w": jnp.ones((4,))}
    saver = Saver(template=tree)
    events: list[ProgressEvent] = []
    with pytest.raises(ValueError, match="Parent directory"):
        saver.save(tree, str(tmp_path / "missing" / "deeper" / "model"), progress=events.append)
    assert not any(e.finished for e in events)


def test_event_arithmetic():
    event = ProgressEvent(operation="restore", checkpoint="c", bytes_done=1 << 20, bytes_total=4 << 20,
                          tensors_done=1, tensors_total=4, elapsed_s=0.5)
    assert event.fraction == 0.25 and event.mib_per_s == 2.0 and event.eta_s == pytest.approx(1.5)
    assert ProgressEvent(operation="save", checkpoint="c", bytes_done=0, bytes_total=8, tensors_done=0,
                         tensors_total=1, elapsed_s=0.0).eta_s is None
    with pytest.raises(AttributeError):
        event.bytes_done = 3  # frozen


def test_cli_verify_shows_progress_and_json_does_not(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tqdm")
    from jaxsaver.cli import main

    tree = {f"t{i}": jnp.full((1024,), i, jnp.float32) for i in range(3)}
    prefix = str(tmp_path / "model")
    Saver(template=tree).save(tree, prefix)
    capsys.readouterr()
    assert main(["verify", prefix]) == 0
    assert "verify" not in capsys.readouterr().err  # 12 KiB: under the display threshold
    monkeypatch.setattr(_progress, "DISPLAY_THRESHOLD", 1024)
    assert main(["verify", prefix]) == 0
    captured = capsys.readouterr()
    assert "all checksums match" in captured.out and "3/3 tensors" in captured.err
    assert main(["verify", prefix, "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_verify_progress_counts_stored_entries(tmp_path):
    from jaxsaver import BundleReader

    tree = {f"t{i}": jnp.full((100,), i, jnp.int32) for i in range(4)}
    prefix = str(tmp_path / "model")
    Saver(template=tree).save(tree, prefix)
    events: list[ProgressEvent] = []
    with BundleReader(prefix) as reader:
        assert reader.verify(progress=events.append) == []
    _check_events(events, "verify", 4 * 400, 4, prefix)
