"""Full disks, read-only filesystems, bad state files, and a saver racing its readers."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import subprocess
import sys
import time
import uuid

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxsaver
from reliability_child import expected, matches
from reliability_helpers import visible


@contextlib.contextmanager
def _tmpfs(path, size: str = "2m"):
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def _snapshot(directory: str) -> dict[str, bytes]:
    out = {}
    for dirpath, dirnames, names in os.walk(directory):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), directory) + "/"] = b""
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, n), directory)] = f.read()
    return out


def _values(seed: int, rows: int, sharded: bool):
    v = expected(seed, (rows, 256))
    if sharded:
        mesh = Mesh(np.array(jax.devices()), ("x",))
        v["w"] = jax.device_put(v["w"], NamedSharding(mesh, PartitionSpec("x")))
    return v


@pytest.mark.parametrize("sharded", [False, True], ids=["sync", "sharded8"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["new_step", "overwrite"])
def test_a_full_disk_fails_typed_and_leaves_the_previous_checkpoint_and_nothing_else(tmp_path, sharded, overwrite):
    with _tmpfs(tmp_path / "small") as d:
        small = _values(1, 64, sharded)  # 64 KiB
        saver = jaxsaver.Saver(template=small, sharded=sharded, max_to_keep=2)
        step = None if overwrite else 1
        saver.save(small, os.path.join(d, "model"), global_step=step)
        before = _snapshot(d)
        big = _values(2, 4096, sharded)  # 4 MiB: does not fit
        big_saver = jaxsaver.Saver(template=big, sharded=sharded, max_to_keep=2)
        with pytest.raises(jaxsaver.StorageError) as info:
            big_saver.save(big, os.path.join(d, "model"), global_step=None if overwrite else 2)
        assert isinstance(info.value, OSError)
        assert "No space left" in str(info.value) and d in str(info.value)
        assert _snapshot(d) == before
        assert matches(jaxsaver.restore_as_numpy(jaxsaver.latest_checkpoint(d)))


@pytest.mark.parametrize("sharded", [False, True], ids=["sync", "sharded8"])
def test_a_read_only_filesystem_fails_typed_and_changes_nothing(tmp_path, sharded):
    with _tmpfs(tmp_path / "ro", "16m") as d:
        values = _values(1, 64, sharded)
        saver = jaxsaver.Saver(template=values, sharded=sharded)
        saver.save(values, os.path.join(d, "model"), global_step=1)
        proc = subprocess.run(["mount", "-o", "remount,ro", d], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")
        before = _snapshot(d)
        for step in (2, 1):  # a new step, and an overwrite
            with pytest.raises(jaxsaver.PermissionDeniedError, match="read-only") as info:
                saver.save(values, os.path.join(d, "model"), global_step=step)
            assert isinstance(info.value, OSError) and d in str(info.value)
        assert _snapshot(d) == before
        assert matches(jaxsaver.restore_as_numpy(jaxsaver.latest_checkpoint(d)))


@pytest.mark.parametrize("content", [b"", b"\n", b"model_checkpoint_path: \"\"\n"], ids=["empty", "newline", "blank"])
def test_an_empty_state_file_is_a_typed_error_naming_it(tmp_path, content):
    (tmp_path / "checkpoint").write_bytes(content)
    with pytest.raises(jaxsaver.InvalidArgumentError, match="checkpoint") as info:
        jaxsaver.get_checkpoint_state(str(tmp_path))
    assert isinstance(info.value, ValueError) and str(tmp_path) in str(info.value)


def test_cleanup_removes_only_provably_stale_leftovers(tmp_path):
    """Dead owners' leftovers go; live ones, unowned young ones and other files stay."""
    d = str(tmp_path)
    values = {"w": np.ones(4, np.float32)}
    saver = jaxsaver.Saver(template=values)
    saver.save(values, os.path.join(d, "model"), global_step=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = __import__("socket").gethostname()
    stale = [f"model-1.index.tempstate-{host}-{dead.pid}-00ff", f"checkpoint.tempstate-{host}-{dead.pid}-01"]
    live = [f"model-2.index.tempstate-{host}-{os.getpid()}-02", "model-3.index.tempstate-elsewhere-1-03",
            "model-4.data-00000-of-00001.tempstate123", "notes.txt", "model-9.data-00000-of-00001"]
    for name in stale + live:
        open(os.path.join(d, name), "wb").close()
    os.makedirs(os.path.join(d, "model-5_temp"))  # a crashed sharded save of a dead process
    for name in (f".owner-{host}-{dead.pid}", "part-00000-of-00002.data-00000-of-00001"):
        open(os.path.join(d, "model-5_temp", name), "wb").close()
    open(os.path.join(d, "model-5.data-00000-of-00002"), "wb").close()
    open(os.path.join(d, "model-5.meta"), "wb").close()
    removed = jaxsaver.cleanup(d)
    assert sorted(os.path.basename(p) for p in removed) == sorted(
        stale + [f".owner-{host}-{dead.pid}", "part-00000-of-00002.data-00000-of-00001",
                 "model-5.data-00000-of-00002", "model-5.meta"])
    assert sorted(os.listdir(d)) == sorted(
        live + ["checkpoint", "model-1.data-00000-of-00001", "model-1.index", "model-1.meta"])
    # Unowned leftovers go once older than the grace period; other files never.
    assert sorted(os.path.basename(p) for p in jaxsaver.cleanup(d, grace_seconds=-1)) == [
        "model-3.index.tempstate-elsewhere-1-03", "model-4.data-00000-of-00001.tempstate123",
        "model-9.data-00000-of-00001"]
    assert jaxsaver.restore_as_numpy(os.path.join(d, "model-1"))["w"].tolist() == [1.0] * 4


def _saver_loop(root: str, seconds: float) -> subprocess.Popen:
    code = (
        "import sys, time, numpy as np, jaxsaver\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from reliability_child import expected\n"
        "s = jaxsaver.Saver(template=expected(0, (64, 256)), max_to_keep=2)\n"
        "end = time.time() + float(sys.argv[3]); step = 0\n"
        "while time.time() < end:\n"
        "    step += 1; s.save(expected(step, (64, 256)), sys.argv[1] + '/model', global_step=step)\n"
        "print(step)\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", code, root, os.path.dirname(__file__), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.timeout(600)
def test_readers_racing_a_saver_see_whole_checkpoints_or_a_typed_not_found(tmp_path):
    d = str(tmp_path)
    jaxsaver.Saver(template=expected(0, (64, 256)), max_to_keep=2).save(
        expected(0, (64, 256)), os.path.join(d, "model"), global_step=0)
    proc = _saver_loop(d, 10.0)
    counts = {"restores": 0, "not_found": 0, "torn": 0}

    def reader() -> dict[str, int]:
        mine = {"restores": 0, "not_found": 0, "torn": 0}
        deadline = time.time() + 25.0
        while proc.poll() is None and time.time() < deadline:
            try:
                latest = jaxsaver.latest_checkpoint(d)
                if latest is None:
                    continue
                ok = matches(jaxsaver.restore_as_numpy(latest))
                mine["restores" if ok else "torn"] += 1
            except jaxsaver.NotFoundError:  # deleted by retention under the reader
                mine["not_found"] += 1
        return mine

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for result in pool.map(lambda _: reader(), range(3)):
            for k, v in result.items():
                counts[k] += v
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    print(f"\nconcurrency: saves {out.strip()}, {counts}")
    assert counts["torn"] == 0 and counts["restores"] > 0
    assert len([p for p in visible(d) if not p.endswith("model-0")]) <= 2  # model-0: another saver's


def test_a_checkpoint_deleted_under_a_reader_is_a_typed_not_found(tmp_path):
    values = expected(0, (64, 256))
    saver = jaxsaver.Saver(template=values, max_to_keep=1)
    first = saver.save(values, str(tmp_path / "model"), global_step=1)
    with jaxsaver.BundleReader(first) as reader:  # the index is read; data files open lazily
        saver.save(expected(2, (64, 256)), str(tmp_path / "model"), global_step=2)  # retention deletes model-1
        with pytest.raises(jaxsaver.CheckpointNotFoundError, match="model-1"):
            reader.get_tensor("w")


def test_an_adopted_checkpoint_stays_listed_when_the_next_save_dies(tmp_path, monkeypatch):
    """A crash left checkpoint 2 committed but unlisted (its journal names it); the next save adopts
    it and then fails before its own commit: the state file must list 2 by then (the save's own
    journal replaces the old one, so an adoption only in memory would leak the checkpoint)."""
    from jaxsaver import _pipeline
    from jaxsaver._retire import write_journal

    state = {"w": np.arange(4.0)}
    directory = str(tmp_path)
    first = jaxsaver.Saver(template=state, max_to_keep=5)
    first.save(state, os.path.join(directory, "model"), global_step=1)
    first.save(state, os.path.join(directory, "model"), global_step=2, write_state=False)  # "crashed"
    write_journal(directory, "checkpoint", adopt=[os.path.join(directory, "model-2")])
    assert jaxsaver.latest_checkpoint(directory).endswith("model-1")

    def dies(*args, **kwargs):
        raise OSError(5, "simulated crash before the commit")

    monkeypatch.setattr(_pipeline, "write", dies)
    with pytest.raises(OSError, match="simulated crash"):
        jaxsaver.Saver(template=state, max_to_keep=5).save(state, os.path.join(directory, "model"), global_step=3)
    listed = jaxsaver.get_checkpoint_state(directory).all_model_checkpoint_paths
    assert [os.path.basename(p) for p in listed] == ["model-2"]  # a new Saver tracks its own (TF1) and what it adopts
    assert jaxsaver.latest_checkpoint(directory).endswith("model-2")
