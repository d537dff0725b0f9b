"""Store operations of the save and restore paths, counted by a real store wrapper (not a mock).

The pipeline stages receive an already-resolved location; here its store is a
:class:`jaxsaver.testing.CountingStore` over local disk or memory, so every byte still moves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsaver import Saver
from jaxsaver._pipeline import Location, restore, save
from jaxsaver._store import resolve
from jaxsaver._store.local import LOCAL
from jaxsaver.saveables import flatten_values
from jaxsaver.testing import CountingStore

READS = ("read", "read_into", "open_positional", "file.read_into", "file.readv")


def _tree():
    mesh = jax.make_mesh((2, 4), ("a", "b"))
    named = jax.sharding.NamedSharding
    spec = jax.sharding.PartitionSpec
    return {
        "w": jax.device_put(jnp.arange(256.0, dtype=jnp.float32).reshape(16, 16), named(mesh, spec("a", "b"))),
        "b": jax.device_put(jnp.arange(16, dtype=jnp.int32), named(mesh, spec("b"))),
        "r": jax.device_put(jnp.ones((4, 2), jnp.bfloat16), named(mesh, spec())),
        "step": np.int64(7),
    }


@pytest.fixture(params=["local", "memory"])
def counting(request, tmp_path):
    if request.param == "local":
        return CountingStore(LOCAL), str(tmp_path / "model")
    inner, key = resolve(f"memory://ops-{tmp_path.name}/model")
    return CountingStore(inner), key


def test_sharded_save_reads_nothing_back_and_restore_reads_each_index_once(counting):
    store, key = counting
    tree = _tree()
    saver = Saver(template=tree, sharded=True)
    location = Location.of(key, storage=store)
    leaves = flatten_values(tree, saver._saveables)

    prefix = save(saver._builder, saver._saveables, leaves, location, sharded=True)
    assert prefix == key
    index = f"{key}.index"
    data = sorted(k for k in store.inner.list(f"{key}.data-"))
    assert len(data) == 8, data  # one part per device, merged
    # the save read nothing back: no part index, no data, not even the merged index
    read_back = {op: store.keys_for(op) for op in READS if store.keys_for(op)}
    assert read_back == {}, read_back
    # exactly one index was written, once: the merged one (parts kept theirs in memory)
    written = store.keys_for("write", "open_writer")
    assert [k for k in written if k.endswith(".index")] == [index], written
    assert store.count("write", index) == 1
    assert store.count("exists", index) == 0

    store.reset()
    restored = restore(
        saver._builder, saver._saveables, location, reshape=False, restore_sequentially=False
    )
    assert store.count("read", index) == 1  # the index: one read, no exists() probe before it
    assert store.count("exists", index) == 0 and store.count("size", index) == 0
    assert [k for k in store.keys_for(*READS) if k.endswith(".index")] == [index]
    # every data file read, and only data files besides the index
    assert store.keys_for(*READS) == sorted([index, *data])
    for got, want in zip(restored, leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_unsharded_restore_reads_the_index_once(counting):
    store, key = counting
    tree = {"x": np.arange(10.0), "y": np.int32(3)}
    saver = Saver(template=tree)
    location = Location.of(key, storage=store)
    save(saver._builder, saver._saveables, flatten_values(tree, saver._saveables), location, sharded=False)
    assert store.keys_for(*READS) == []
    store.reset()
    out = restore(saver._builder, saver._saveables, location, reshape=False, restore_sequentially=False)
    assert store.count("read", f"{key}.index") == 1
    for got, want in zip(out, flatten_values(tree, saver._saveables), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
