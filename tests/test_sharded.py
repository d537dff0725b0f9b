"""Sharded jax.Array checkpoints (issue 5): per-device part bundles merged into one checkpoint,
restored onto any sharding, any device count, a single device, or plain numpy.

Runs on 8 simulated CPU devices (conftest.py). jax 0.10 rejects NamedShardings that do not
divide a dimension (``device_put``, ``jit`` out_shardings and ``make_array_from_callback`` all
raise "should evenly divide the shape"), so "uneven" here means what jax accepts: odd,
non-dividing sizes on the unsharded dimensions, and meshes over 3 or 6 devices whose blocks do
not line up with the 8-device blocks they are restored into (every target block then straddles
two stored slices).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding

from jaxsaver import Saver
from jaxsaver._bundle.reader import BundleReader
from jaxsaver._store.local import LocalStore, _LocalFile

DEVICES = jax.devices()
pytestmark = pytest.mark.skipif(len(DEVICES) < 8, reason="needs 8 (simulated) devices")

MIB = 1 << 20


def _mesh(shape: tuple[int, ...], n: int | None = None) -> Mesh:
    n = n or int(np.prod(shape))
    names = ("x", "y")[: len(shape)]
    return Mesh(np.array(DEVICES[:n]).reshape(shape), names)


MESHES = {"8": ((8,), None), "4x2": ((4, 2), None), "2x4": ((2, 4), None)}
SPECS = {"x": P("x"), "xy": P("x", "y"), "_y": P(None, "y"), "rep": P()}
# The 1-D mesh has no 'y': its column sharding is P(None, 'x').
SPECS_1D = {"x": P("x"), "_x": P(None, "x"), "rep": P()}
# Meshes over 3 and 6 devices: their row blocks (8 and 4 rows of 24) straddle the 8-way blocks.
ODD_MESHES = {"3": (3,), "6": (6,)}

SHAPE = (24, 40)


def _cases():
    for mname, (mshape, _) in MESHES.items():
        for sname in (SPECS_1D if len(mshape) == 1 else SPECS):
            yield mname, sname
    for mname in ODD_MESHES:
        yield mname, "x"


SAVE_CASES = list(_cases())


def _sharding(mname: str, sname: str) -> NamedSharding:
    if mname in ODD_MESHES:
        return NamedSharding(_mesh(ODD_MESHES[mname]), P("x"))
    mshape = MESHES[mname][0]
    spec = (SPECS_1D if len(mshape) == 1 else SPECS)[sname]
    return NamedSharding(_mesh(mshape), spec)


def _host_values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        # random bit patterns (NaN payloads included) so "bit-exact" means it
        "w": rng.integers(0, 2**32, SHAPE, dtype=np.uint32).view(np.float32),
        "b": rng.standard_normal((24, 7)).astype(jax.numpy.bfloat16),  # odd, non-dividing columns
        "i": rng.integers(-(2**31), 2**31, (24,), dtype=np.int32),
        "s": np.float32(3.25),  # scalar, replicated
    }


def _row_spec(sharding: NamedSharding) -> NamedSharding:
    """The sharding restricted to the leading axis (for the (24, 7) and (24,) leaves)."""
    spec = tuple(sharding.spec) + (None,) * 2
    return NamedSharding(sharding.mesh, P(spec[0]))


def _device_tree(host: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    rows = _row_spec(sharding)
    return {
        "w": jax.device_put(host["w"], sharding),
        "b": jax.device_put(host["b"], rows),
        "i": jax.device_put(host["i"], rows),
        "s": jax.device_put(host["s"], NamedSharding(sharding.mesh, P())),
    }


def _target_tree(sharding: Any) -> dict[str, jax.ShapeDtypeStruct]:
    rows = _row_spec(sharding) if isinstance(sharding, NamedSharding) else sharding
    rep = NamedSharding(sharding.mesh, P()) if isinstance(sharding, NamedSharding) else sharding
    return {
        "w": jax.ShapeDtypeStruct(SHAPE, np.float32, sharding=sharding),
        "b": jax.ShapeDtypeStruct((24, 7), jax.numpy.bfloat16, sharding=rows),
        "i": jax.ShapeDtypeStruct((24,), np.int32, sharding=rows),
        "s": jax.ShapeDtypeStruct((), np.float32, sharding=rep),
    }


def _bits(x: Any) -> np.ndarray:
    a = np.asarray(x)
    return a.reshape(-1).view(np.uint8)


def _assert_tree_bit_equal(restored: dict, host: dict, shardings: dict | None = None) -> None:
    assert set(restored) == set(host)
    for k, want in host.items():
        got = restored[k]
        assert np.shape(got) == np.shape(want), k
        assert np.asarray(got).dtype == np.asarray(want).dtype, k
        assert np.array_equal(_bits(got), _bits(want)), k
        if shardings is not None:
            assert got.sharding.is_equivalent_to(shardings[k], np.ndim(want)), (k, got.sharding, shardings[k])
        if isinstance(got, jax.Array):
            for shard in got.addressable_shards:  # every device's block, not just the gathered view
                assert np.array_equal(_bits(shard.data), _bits(np.asarray(want)[shard.index])), k


@pytest.fixture(scope="module")
def host():
    return _host_values()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, host):
    """(mesh, spec) -> prefix of a sharded checkpoint saved under that sharding (once each)."""
    root = tmp_path_factory.mktemp("sharded")
    cache: dict[tuple[str, str], str] = {}

    def get(mname: str, sname: str) -> str:
        key = (mname, sname)
        if key not in cache:
            values = _device_tree(host, _sharding(mname, sname))
            saver = Saver(template=values, sharded=True)
            directory = root / f"{mname}_{sname}"
            directory.mkdir()
            cache[key] = saver.save(values, str(directory / "model"), write_meta_graph=False)
        return cache[key]

    return get


TARGETS = [(m, s) for m, s in SAVE_CASES if m not in ODD_MESHES]


@pytest.mark.parametrize("mname,sname", SAVE_CASES, ids=[f"{m}-{s}" for m, s in SAVE_CASES])
def test_restore_under_every_other_sharding(saved, host, mname, sname):
    prefix = saved(mname, sname)
    values = _device_tree(host, _sharding(mname, sname))
    saver = Saver(template=values, sharded=True)
    for tm, ts in TARGETS + [("3", "x")]:
        target = _target_tree(_sharding(tm, ts))
        restored = saver.restore(prefix, target)
        _assert_tree_bit_equal(restored, host, {k: v.sharding for k, v in target.items()})
    # a single device, and jax.Array targets (their shardings are used)
    one = SingleDeviceSharding(DEVICES[5])
    restored = saver.restore(prefix, _target_tree(one))
    _assert_tree_bit_equal(restored, host, {k: one for k in host})
    restored = saver.restore(prefix, values)
    _assert_tree_bit_equal(restored, host, {k: v.sharding for k, v in values.items()})


def test_sharded_layout_and_tf_reads_it(saved, host):
    prefix = saved("4x2", "xy")
    directory = os.path.dirname(prefix)
    assert not os.path.exists(prefix + "_temp")
    names = sorted(os.listdir(directory))
    assert names == ["checkpoint", "model.data-%05d-of-00008" % 0] + [
        "model.data-%05d-of-00008" % k for k in range(1, 8)
    ] + ["model.index"]
    with BundleReader(prefix) as reader:
        assert reader.num_shards == 8
        assert len(reader.stored_slices("w")) == 8
        assert len(reader.stored_slices("b")) == 4  # P('x') over a 4x2 mesh: replicas on 'y'
        assert reader.stored_slices("s") == [()]
    tf = pytest.importorskip("tensorflow")
    assert tf.train.latest_checkpoint(directory) == prefix
    tf_reader = tf.train.load_checkpoint(prefix)
    assert sorted(tf_reader.get_variable_to_shape_map()) == ["b", "i", "s", "w"]
    for k, want in host.items():
        got = tf_reader.get_tensor(k)
        assert np.array_equal(_bits(got), _bits(want)), k
    # the 3-way save (blocks of 8 rows) too
    tf_reader = tf.train.load_checkpoint(saved("3", "x"))
    assert np.array_equal(_bits(tf_reader.get_tensor("w")), _bits(host["w"]))


def test_replicated_bytes_written_once(saved, host):
    for case in [("4x2", "rep"), ("2x4", "_y"), ("8", "x")]:
        prefix = saved(*case)
        directory = os.path.dirname(prefix)
        data = sum(
            os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory) if ".data-" in f
        )
        assert data == sum(np.asarray(v).nbytes for v in host.values()), case


def test_restore_without_template_gives_numpy(saved, host):
    prefix = saved("2x4", "xy")
    restored = Saver().restore(prefix)
    assert isinstance(restored, dict)
    assert all(isinstance(v, (np.ndarray, np.generic)) for v in restored.values())
    _assert_tree_bit_equal(restored, host)


def test_sharded_to_unsharded_and_back(tmp_path, host):
    sharding = _sharding("4x2", "xy")
    values = _device_tree(host, sharding)
    sharded = Saver(template=values, sharded=True)
    plain = Saver(template=values, sharded=False)
    a = sharded.save(values, str(tmp_path / "a"), write_meta_graph=False)
    _assert_tree_bit_equal(plain.restore(a), host)  # template shardings
    _assert_tree_bit_equal(plain.restore(a, _target_tree(_sharding("2x4", "_y"))), host)
    b = plain.save(values, str(tmp_path / "b"), write_meta_graph=False)
    with BundleReader(b) as reader:
        assert reader.num_shards == 1 and not reader.info("w").is_sliced
    target = _target_tree(_sharding("8", "_x"))
    _assert_tree_bit_equal(sharded.restore(b, target), host, {k: v.sharding for k, v in target.items()})
    c = sharded.save(sharded.restore(b, target), str(tmp_path / "c"), write_meta_graph=False)
    _assert_tree_bit_equal(plain.restore(c), host)


# ----------------------------------------------------------------------------- read accounting


class _CountingReads:
    """Counts the bytes the storage layer reads from data files (index reads excluded)."""

    def __init__(self, monkeypatch):
        self.bytes = 0
        original_file = _LocalFile.read_into
        original_readv = _LocalFile.readv
        original_into = LocalStore.read_into
        counter = self

        def file_read_into(self, offset, out):
            if ".data-" in self.key:
                counter.bytes += memoryview(out).nbytes
            return original_file(self, offset, out)

        def read_into(self, key, offset, out):
            if ".data-" in key:
                counter.bytes += memoryview(out).nbytes
            return original_into(self, key, offset, out)

        def readv(self, buffers, offset):
            n = original_readv(self, buffers, offset)
            counter.bytes += n
            return n

        monkeypatch.setattr(_LocalFile, "read_into", file_read_into)
        monkeypatch.setattr(LocalStore, "read_into", read_into)
        # the sharded restore scatters whole stored slices with one readv (os.preadv)
        monkeypatch.setattr(_LocalFile, "readv", readv)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 64 MiB float32 tensor saved row-sharded over 8 devices (8 stored slices of 8 MiB)."""
    rows, cols = 2048, 8192
    full = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    values = {"big": jax.device_put(full, NamedSharding(_mesh((8,)), P("x")))}
    saver = Saver(template=values, sharded=True)
    prefix = saver.save(values, str(tmp_path_factory.mktemp("big") / "model"), write_meta_graph=False)
    del values
    return prefix, full, saver


def test_partial_restore_reads_only_its_bytes(big, monkeypatch):
    prefix, full, saver = big
    counter = _CountingReads(monkeypatch)
    # one device's worth (1/8) in a block that straddles two stored slices
    with BundleReader(prefix) as reader:
        part = reader.get_slice("big", ((128, 256), (0, 8192)))
    assert np.array_equal(part, full[128:384])
    assert counter.bytes == part.nbytes

    # a sharded restore whose target covers only one 8 MiB block per device, on a 1-device mesh
    counter.bytes = 0
    one = NamedSharding(_mesh((1,)), P())
    target = {"big": jax.ShapeDtypeStruct(full.shape, np.float32, sharding=one)}
    restored = saver.restore(prefix, target)
    assert np.array_equal(np.asarray(restored["big"]), full)
    assert counter.bytes == full.nbytes  # whole tensor once

    # a column sharding from row-stored slices: every stored slice read once, scattered
    counter.bytes = 0
    cols = NamedSharding(_mesh((2, 4)), P("y", "x"))
    restored = saver.restore(prefix, {"big": jax.ShapeDtypeStruct(full.shape, np.float32, sharding=cols)})
    assert np.array_equal(np.asarray(restored["big"]), full)
    assert counter.bytes == full.nbytes

    # replicated onto 8 devices: each distinct block is read once, not once per device
    counter.bytes = 0
    rep = NamedSharding(_mesh((8,)), P())
    restored = saver.restore(prefix, {"big": jax.ShapeDtypeStruct(full.shape, np.float32, sharding=rep)})
    assert counter.bytes == full.nbytes
    assert np.array_equal(np.asarray(restored["big"].addressable_shards[7].data), full)


def test_resharded_restore_verifies_checksums(big, tmp_path):
    prefix, full, saver = big
    import shutil

    directory = tmp_path / "corrupt"
    shutil.copytree(os.path.dirname(prefix), directory)
    copy = str(directory / os.path.basename(prefix))
    with BundleReader(copy) as reader:
        entry = reader.info(reader.raw_keys()[3]).entry  # one stored slice
    data = f"{copy}.data-{entry.shard_id:05d}-of-00008"
    with open(data, "r+b") as f:
        f.seek(entry.offset + 12345)
        byte = f.read(1)
        f.seek(entry.offset + 12345)
        f.write(bytes([byte[0] ^ 1]))
    from jaxsaver import DataLossError

    cols = NamedSharding(_mesh((2, 4)), P("y", "x"))
    with pytest.raises(DataLossError, match="checksum"):
        saver.restore(copy, {"big": jax.ShapeDtypeStruct(full.shape, np.float32, sharding=cols)})
    same = NamedSharding(_mesh((8,)), P("x"))
    with pytest.raises(DataLossError, match="checksum"):
        saver.restore(copy, {"big": jax.ShapeDtypeStruct(full.shape, np.float32, sharding=same)})


# ----------------------------------------------------------------------------- save mechanics


def test_devices_write_concurrently_within_the_host_window(tmp_path, host, monkeypatch):
    """Parts are written concurrently, and the bytes fetched to host stay inside the window."""
    import threading

    from jaxsaver import _snapshot
    from jaxsaver import builder as builder_mod

    lock = threading.Lock()
    values = _device_tree(host, _sharding("4x2", "xy"))
    saver = Saver(template=values, sharded=True)
    budgets, peaks = [], []
    original_init = _snapshot.ByteWindow.__init__

    def init(self, budget):
        original_init(self, budget)
        budgets.append(budget)
        peaks.append(self)

    monkeypatch.setattr(_snapshot.ByteWindow, "__init__", init)
    original_save_op = builder_mod.SaverBuilder.save_op
    active = [0]
    peak = [0]
    barrier = threading.Barrier(2, timeout=5)

    def save_op(self, filename, writes, source, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            barrier.wait()  # two parts must be in flight at once, or this times out
        except threading.BrokenBarrierError:
            pass
        try:
            return original_save_op(self, filename, writes, source, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(builder_mod.SaverBuilder, "save_op", save_op)
    prefix = saver.save(values, str(tmp_path / "m"), write_meta_graph=False)
    assert peak[0] >= 2
    [budget], [window] = budgets, peaks
    largest = max(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(values) if isinstance(x, jax.Array))
    assert budget == int(1.25 * largest) + (64 << 20)
    assert 0 < window.peak <= budget
    _assert_tree_bit_equal(saver.restore(prefix), host)


def test_save_compiles_once_across_filenames(tmp_path, host):
    values = _device_tree(host, _sharding("2x4", "xy"))
    values["key"] = jax.random.key(0)  # the only leaf kind that needs device work before a save
    saver = Saver(template=values, sharded=True)
    saver.save(values, str(tmp_path / "m0"), write_meta_graph=False)
    assert saver.builder.snapshot_fn._cache_size() == 1
    for k in range(1, 4):
        saver.save(values, str(tmp_path / f"m{k}"), write_meta_graph=False)
    assert saver.builder.snapshot_fn._cache_size() == 1


# ----------------------------------------------------------------------------- TF1 partitioned


_TF1_PARTITIONED = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf

    full = np.arange(10 * 6, dtype=np.float32).reshape(10, 6) * 1.5
    with tf.Graph().as_default():
        def init(shape, dtype=None, partition_info=None):
            start = partition_info.single_offset(shape) if partition_info else 0
            return tf.constant(full[start:start + shape[0]])

        with tf.compat.v1.variable_scope("params"):
            tf.compat.v1.get_variable("w", shape=[10, 6], dtype=tf.float32, initializer=init,
                                      partitioner=tf.compat.v1.fixed_size_partitioner(4))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, sys.argv[1], write_meta_graph=False)
    """
)


def test_restore_tf1_partitioned_variable(tmp_path):
    pytest.importorskip("tensorflow")
    prefix = str(tmp_path / "tf1" / "model")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", _TF1_PARTITIONED, prefix], capture_output=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    full = np.arange(60, dtype=np.float32).reshape(10, 6) * 1.5
    with BundleReader(prefix) as reader:
        assert len(reader.stored_slices("params/w")) == 4  # rows 3, 3, 2, 2
    template = {"params": {"w": jax.numpy.zeros((10, 6), np.float32)}}
    saver = Saver(template=template)
    restored = saver.restore(prefix)
    assert np.array_equal(np.asarray(restored["params"]["w"]), full)
    # into a sharded target whose blocks (5 rows) straddle TF's partitions
    target = {"params": {"w": jax.ShapeDtypeStruct((10, 6), np.float32,
                                                   sharding=NamedSharding(_mesh((2, 4)), P("x", None)))}}
    restored = saver.restore(prefix, target)
    assert np.array_equal(np.asarray(restored["params"]["w"]), full)
    assert Saver().restore(prefix)["params"]["w"].tolist() == full.tolist()


# ----------------------------------------------------------------------------- per-device graph ops


@pytest.mark.parametrize("mname,sname", SAVE_CASES)
def test_owned_devices_are_the_replica0_shards(host, mname, sname):
    """The build-time layout (from shardings alone) names the devices jax numbers replica 0."""
    from jaxsaver._sharding import device_name, owned_devices

    values = _device_tree(host, _sharding(mname, sname))
    expected = sorted({
        device_name(shard.device) for leaf in values.values() for shard in leaf.addressable_shards
        if shard.replica_id == 0
    })
    assert owned_devices([v.sharding for v in values.values()], [v.shape for v in values.values()]) == expected


def test_per_device_save_ops_then_merge_equal_save_all(tmp_path, host):
    """save/save_shard_<k> for every device, then save/merge, writes what save/save_all writes."""
    values = _device_tree(host, _sharding("4x2", "xy"))
    saver = Saver(template=values, sharded=True)
    graph = saver.graph
    shard_ops = sorted(op for op in graph.ops if op.startswith("save/save_shard_"))
    assert len(shard_ops) == 8 and "save/merge" in graph.ops
    leaves = [values[s.name] for s in saver.saveables]
    by_ops, by_all = str(tmp_path / "ops" / "model"), str(tmp_path / "all" / "model")
    os.makedirs(os.path.dirname(by_ops))
    os.makedirs(os.path.dirname(by_all))
    parts = [graph.run(op, leaves, filename=by_ops) for op in shard_ops]
    assert parts == [f"{by_ops}_temp/part-{k:05d}-of-00008" for k in range(8)]
    assert graph.run("save/merge", filename=by_ops) == by_ops
    assert graph.run("save/save_all", leaves, filename=by_all) == by_all
    names = sorted(os.listdir(os.path.dirname(by_ops)))
    assert names == sorted(os.listdir(os.path.dirname(by_all)))
    for name in names:
        with open(os.path.join(tmp_path, "ops", name), "rb") as a, open(os.path.join(tmp_path, "all", name), "rb") as b:
            assert a.read() == b.read(), name


def test_per_device_save_op_rejects_values_on_other_devices(tmp_path, host):
    from jaxsaver import InvalidArgumentError

    saver = Saver(template=_device_tree(host, _sharding("4x2", "xy")), sharded=True)
    moved = _device_tree(host, _sharding("8", "rep"))
    leaves = [moved[s.name] for s in saver.saveables]
    with pytest.raises(InvalidArgumentError, match="save_shard_0"):
        saver.graph.run("save/save_shard_0", leaves, filename=str(tmp_path / "m"))
    # save_all plans from the values themselves and still works
    prefix = saver.save(moved, str(tmp_path / "m"), write_meta_graph=False)
    with BundleReader(prefix) as reader:
        np.testing.assert_array_equal(reader.get_tensor("w").view(np.uint32), host["w"].view(np.uint32))
