"""Asynchronous saves: snapshot semantics, failures, ordering and host memory, through real files."""

import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsaver
from jaxsaver import SaveHandle, Saver, latest_checkpoint


def _mesh_sharding():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("x", "y"))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x", "y"))


def _state():
    sharding = _mesh_sharding()
    w = jax.device_put(jnp.arange(64 * 32, dtype=jnp.float32).reshape(64, 32), sharding)
    return {"w": w, "b": jnp.arange(8, dtype=jnp.int32), "host": np.arange(5.0), "step": 1}


@pytest.mark.parametrize("mode", ["host", "device"])
@pytest.mark.parametrize("sharded", [False, True])
def test_async_save_writes_the_values_of_the_call(tmp_path, mode, sharded):
    state = _state()
    expected = jax.tree.map(lambda x: np.array(x, copy=True), state)
    saver = Saver(template=state, sharded=sharded, snapshot=mode)
    handle = saver.save(state, tmp_path / "m", global_step=1, blocking=False)
    assert isinstance(handle, SaveHandle)
    # The next training step: donate the arrays, overwrite the host array, delete the rest.
    step = jax.jit(lambda w: w * 0 - 1, donate_argnums=0)
    new_w = step(state["w"])
    state["host"][:] = -7
    state["b"].delete()
    assert handle.result() == str(tmp_path / "m-1")
    assert handle.done() and handle.exception() is None
    restored = jaxsaver.restore_as_numpy(tmp_path / "m-1")
    np.testing.assert_array_equal(restored["w"], expected["w"])
    np.testing.assert_array_equal(restored["b"], expected["b"])
    np.testing.assert_array_equal(restored["host"], expected["host"])
    assert int(new_w[0, 0]) == -1


def test_ten_async_saves_keep_the_right_three(tmp_path):
    state = _state()
    with Saver(template=state, max_to_keep=3) as saver:
        handles = [saver.save({**state, "step": k}, tmp_path / "m", global_step=k, blocking=False) for k in range(10)]
    assert [h.result() for h in handles] == [str(tmp_path / f"m-{k}") for k in range(10)]
    kept = [str(tmp_path / f"m-{k}") for k in (7, 8, 9)]
    assert saver.last_checkpoints == kept
    state_file = jaxsaver.get_checkpoint_state(tmp_path)
    assert list(state_file.all_model_checkpoint_paths) == kept
    assert latest_checkpoint(tmp_path) == kept[-1]
    indexes = sorted(f for f in os.listdir(tmp_path) if f.endswith(".index"))
    assert indexes == ["m-7.index", "m-8.index", "m-9.index"]
    assert jaxsaver.restore_as_numpy(kept[-1])["step"] == 9


def test_background_failure_is_raised_next_and_leaves_the_previous_state(tmp_path, monkeypatch):
    state = _state()
    saver = Saver(template=state, max_to_keep=2, sharded=True)
    saver.save(state, tmp_path / "m", global_step=1)
    before = sorted(os.listdir(tmp_path))
    state_bytes = (tmp_path / "checkpoint").read_bytes()

    # The disk fills up after the call returned: every data write from now on fails.
    from jaxsaver._store import local as _storage

    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_storage._LocalWriter, "write", full)
    handle = saver.save(state, tmp_path / "m", global_step=2, blocking=False)
    with pytest.raises(OSError) as info:
        saver.wait_until_finished()
    assert str(tmp_path / "m-2") in str(info.value)
    assert handle.done() and handle.exception() is not None
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before  # no partial checkpoint, no sidecar, no part dir
    assert (tmp_path / "checkpoint").read_bytes() == state_bytes
    assert latest_checkpoint(tmp_path) == str(tmp_path / "m-1")
    # Collected once: the next save goes ahead.
    assert saver.save(state, tmp_path / "m", global_step=3) == str(tmp_path / "m-3")


def test_an_uncollected_failure_is_raised_by_the_next_save(tmp_path, monkeypatch):
    state = _state()
    saver = Saver(template=state)
    from jaxsaver._store import local as _storage

    original = _storage._LocalWriter.write
    monkeypatch.setattr(_storage._LocalWriter, "write", lambda self, data: (_ for _ in ()).throw(OSError(5, "I/O error")))
    handle = saver.save(state, tmp_path / "m", global_step=1, blocking=False)
    while not handle.done():  # done() waits for nothing and collects nothing
        time.sleep(0.01)
    monkeypatch.setattr(_storage._LocalWriter, "write", original)
    with pytest.raises(OSError, match="m-1"):
        saver.save(state, tmp_path / "m", global_step=2)
    assert saver.save(state, tmp_path / "m", global_step=2) == str(tmp_path / "m-2")


def test_unknown_snapshot_mode_is_refused():
    with pytest.raises(jaxsaver.InvalidArgumentError, match="snapshot must be 'host' or 'device'"):
        Saver(template={"a": 1}, snapshot="disk")


def test_uncollected_failure_is_logged_at_exit(tmp_path):
    script = textwrap.dedent(f"""
        import logging, jax.numpy as jnp, jaxsaver
        from jaxsaver._store import local as _storage
        logging.basicConfig()
        saver = jaxsaver.Saver(template={{"w": jnp.ones(3)}})
        _storage._LocalWriter.write = lambda self, data: (_ for _ in ()).throw(OSError(5, "I/O error"))
        saver.save({{"w": jnp.ones(3)}}, {str(tmp_path / "m")!r}, blocking=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "background save of" in proc.stderr and "nobody collected it" in proc.stderr, proc.stderr[-3000:]


def test_sync_save_host_memory_stays_within_the_window(tmp_path):
    """A tree much larger than the window: peak RSS grows by less than 1.25 x shard + 64 MiB."""
    script = textwrap.dedent(f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import jax, jax.numpy as jnp, numpy as np, jaxsaver

        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) * 1024

        mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("x", "y"))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x", "y"))
        tree = {{f"w{{i}}": jax.device_put(jnp.full((1024, 1024), i, jnp.float32), sharding) for i in range(64)}}
        jax.block_until_ready(tree)
        saver = jaxsaver.Saver(template=tree, sharded=True)
        saver.save(tree, {str(tmp_path / "warm")!r}, write_meta_graph=False)   # first-call costs
        before = hwm()
        saver.save(tree, {str(tmp_path / "m")!r}, write_meta_graph=False)
        shard = 1024 * 1024 * 4 // 8
        print(hwm() - before, int(1.25 * shard) + (64 << 20))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grown, bound = map(int, proc.stdout.split()[-2:])
    assert grown <= bound, (grown, bound)


def test_host_copies_are_exact_fresh_and_split_across_threads(monkeypatch):
    """The host-mode snapshot copy: every array bit-exact, in fresh memory (later writes to the
    source do not show), also when the copy runs in several threads (forced here)."""
    import ml_dtypes

    from jaxsaver import _snapshot

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("x", "y"))
    sharded = jax.device_put(
        np.arange(64 * 16, dtype=np.float32).reshape(64, 16),
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x", "y")),
    )
    parts = [shard.data for shard in sharded.addressable_shards]
    parts += [jnp.asarray(np.arange(7).astype(ml_dtypes.bfloat16)), jnp.zeros((0, 3), jnp.int8), jnp.uint32(5)]
    expected = [np.array(part) for part in parts]
    used_threads = set()
    original = _snapshot._host_array

    def spy(part):
        import threading

        used_threads.add(threading.get_ident())
        return original(part)

    monkeypatch.setattr(_snapshot, "_host_array", spy)
    monkeypatch.setattr(_snapshot, "_PARALLEL_COPY_BYTES", 0)
    monkeypatch.setattr(_snapshot, "_COPY_THREADS", 3)
    monkeypatch.setattr(_snapshot, "_pool", None)
    copies = _snapshot.host_copies(parts)
    assert len(used_threads) >= 2  # the caller and at least one pool thread (an idle one may take two runs)
    for copy, want in zip(copies, expected):
        assert copy.dtype == want.dtype and copy.shape == want.shape
        assert copy.tobytes() == want.tobytes()
        assert copy.ctypes.data % 64 == 0
    np.asarray(parts[0])  # the source on CPU devices is a view; the copy must not share it
    assert not np.shares_memory(copies[0], np.asarray(parts[0]))
