"""``StoreTests``: the conformance suite every jaxsaver store passes (zarr's ``zarr.testing.store``).

Subclass it in a pytest module and provide a ``store`` fixture returning the store under test
(an instance of :class:`jaxsaver._store.Store`); every test then runs against that store through
the store interface and through ``BundleWriter``/``BundleReader``/``merge_bundles`` (real bytes,
written and read back). Optionally override ``root``, the empty directory key tests work under
(default: a fresh relative key, in a temporary working directory for stores with directories).

Example:
    A user's own store::

        import pytest
        from jaxsaver.testing import StoreTests

        class TestMyStore(StoreTests):
            @pytest.fixture
            def store(self):
                return MyStore(...)
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pytest

from jaxsaver._errors import (
    CheckpointNotFoundError,
    DataLossError,
    StorageError,
    UnimplementedError,
)
from jaxsaver._store.base import Capabilities, Store

__all__ = ["StoreTests"]


class StoreTests:
    """The store conformance suite; subclasses provide a ``store`` fixture."""

    @pytest.fixture
    def store(self) -> Store:
        """The store under test (subclasses override this fixture)."""
        pytest.fail("StoreTests subclasses must define a `store` fixture")

    @pytest.fixture
    def root(self, store: Store) -> str:
        """An empty directory key in ``store`` that the tests write under."""
        return f"jaxsaver-tests/{uuid.uuid4().hex[:12]}"

    @pytest.fixture(autouse=True)
    def _prepare_root(self, store: Store, root: str, tmp_path: Any, monkeypatch: Any) -> None:
        # relative local keys land in a temporary directory, never in the working directory
        monkeypatch.chdir(tmp_path)
        store.makedirs(root)

    # ---------------------------------------------------------------- the store interface

    def test_capabilities(self, store: Store) -> None:
        caps = store.capabilities
        assert isinstance(caps, Capabilities)
        assert caps.max_object_bytes is None or caps.max_object_bytes > 0
        assert store.atomic_rename == caps.atomic_rename

    def test_write_read_size_exists(self, store: Store, root: str) -> None:
        key = store.join(root, "obj")
        assert not store.exists(key)
        store.write(key, b"hello world")
        assert store.exists(key)
        assert store.read(key) == b"hello world"
        assert store.read(key, 6) == b"world"
        assert store.read(key, 3, 2) == b"lo"
        assert store.read(key, 11, 0) == b""
        assert store.size(key) == 11
        out = bytearray(5)
        store.read_into(key, 6, memoryview(out))
        assert bytes(out) == b"world"
        assert store.url(key).endswith(key)

    def test_empty_and_sizes(self, store: Store, root: str) -> None:
        key = store.join(root, "empty")
        store.write(key, b"")
        assert store.exists(key) and store.size(key) == 0 and store.read(key) == b""
        for n in (1, 2, 3, 1000, 4097, 65536 + 7):
            store.write(f"{key}{n}", bytes(n))
            assert store.size(f"{key}{n}") == n

    def test_streaming_writer(self, store: Store, root: str) -> None:
        key = store.join(root, "stream")
        writer = store.open_writer(key)
        writer.write(b"ab")
        writer.write(np.arange(4, dtype=np.uint8))
        writer.write(memoryview(b"cd"))
        assert not store.exists(key)  # visible only on commit
        writer.commit()
        assert store.read(key) == b"ab\x00\x01\x02\x03cd"
        aborted = store.open_writer(key + "2")
        aborted.write(b"x")
        aborted.abort()
        assert not store.exists(key + "2")
        assert store.list(store.join(store.dirname(key), "stream")) == [key]

    def test_missing_and_truncated(self, store: Store, root: str) -> None:
        key = store.join(root, "missing")
        for op in (lambda: store.read(key), lambda: store.size(key), lambda: store.mtime(key)):
            with pytest.raises(CheckpointNotFoundError, match="missing"):
                op()
        store.write(key + "3", b"abc")
        with pytest.raises(DataLossError):
            store.read(key + "3", 1, 5)
        store.delete(key)  # deleting a missing key is fine

    def test_list_delete_rename_mtime(self, store: Store, root: str) -> None:
        base = store.join(root, "dir")
        names = ["a", "a.b", "ab", "b/c"]
        store.makedirs(store.join(base, "b"))  # local disk has directories; object stores do not
        for name in names:
            store.write(store.join(base, name), name.encode())
        store.write(base + "x", b"sibling")  # shares the prefix string, not the directory
        listed = store.list(store.join(base, "a"))
        assert listed == sorted(store.join(base, n) for n in ("a", "a.b", "ab"))
        assert set(store.list(base + "/")) >= {store.join(base, n) for n in ("a", "a.b", "ab")}
        assert store.isdir(base)
        before = time.time()
        mtime = store.mtime(store.join(base, "a"))
        assert before - 600 < mtime <= before + 5
        store.rename(store.join(base, "a"), store.join(base, "z"))
        assert not store.exists(store.join(base, "a"))
        assert store.read(store.join(base, "z")) == b"a"
        store.delete(store.join(base, "z"))
        assert not store.exists(store.join(base, "z"))

    def test_positional_reads(self, store: Store, root: str) -> None:
        key = store.join(root, "positional")
        store.write(key, bytes(range(200)))
        if not store.capabilities.positional_reads:
            with pytest.raises(UnimplementedError):
                store.open_positional(key)
            return
        with store.open_positional(key) as file:
            out = bytearray(10)
            file.read_into(100, memoryview(out))
            assert bytes(out) == bytes(range(100, 110))
            a, b = bytearray(3), bytearray(4)
            assert file.readv([memoryview(a), memoryview(b)], 5) == 7
            assert bytes(a + b) == bytes(range(5, 12))
            with pytest.raises(DataLossError):
                file.read_into(198, memoryview(bytearray(5)))
        with pytest.raises(CheckpointNotFoundError):
            store.open_positional(key + "-absent")

    def test_sync_dir(self, store: Store, root: str) -> None:
        store.write(store.join(root, "synced"), b"x")
        store.sync_dir(root)  # durable renames where the store has directory sync; else a no-op
        assert store.read(store.join(root, "synced")) == b"x"

    def test_object_cap(self, store: Store, root: str) -> None:
        cap = store.capabilities.max_object_bytes
        key = store.join(root, "big")
        if cap is None:  # no cap: a streamed object of many writes arrives whole
            writer = store.open_writer(key)
            for i in range(17):
                writer.write(bytes([i]) * (64 << 10))
            writer.commit()
            assert store.size(key) == 17 * (64 << 10)
            assert store.read(key, 16 * (64 << 10), 3) == b"\x10\x10\x10"
            return
        if cap > 64 << 20:
            pytest.skip(f"the store's object cap ({cap} bytes) is too large to reach in a unit test")
        writer = store.open_writer(key)
        with pytest.raises(StorageError, match=f"limit of {cap} bytes"):
            writer.write(bytes(cap + 1))
        assert not store.exists(key)
        store.write(key, bytes(cap))  # exactly the cap is fine
        assert store.size(key) == cap

    # ---------------------------------------------------------------- bundles

    def test_bundle_round_trip_and_merge(self, store: Store, root: str) -> None:
        from jaxsaver._bundle.merge import merge_bundles
        from jaxsaver._bundle.reader import BundleReader
        from jaxsaver._bundle.writer import BundleWriter

        def at(name: str) -> str:
            return store.join(root, name)

        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        with BundleWriter(at("p0"), storage=store) as w:
            w.add("a", a)
            w.add("s", np.array([b"hi", b"there"], dtype=object))
        with BundleWriter(at("p1"), storage=store) as w:
            w.add_slice("v", (4, 2), "0,2:-", np.ones((2, 2), np.int32))
        with BundleWriter(at("p2"), storage=store) as w:
            w.add_slice("v", (4, 2), "2,2:-", np.zeros((2, 2), np.int32))
        merge_bundles([at("p0"), at("p1"), at("p2")], at("merged"), storage=store)
        assert not store.exists(at("p0.index"))
        assert store.exists(at("merged.data-00002-of-00003"))
        with BundleReader(at("merged"), storage=store) as r:
            np.testing.assert_array_equal(r.get_tensor("a"), a)
            np.testing.assert_array_equal(r.get_slice("a", (slice(1, 3), 2)), a[1:3, 2])
            assert list(r.get_tensor("s")) == [b"hi", b"there"]
            np.testing.assert_array_equal(r.get_tensor("v"), [[1, 1], [1, 1], [0, 0], [0, 0]])
        with pytest.raises(CheckpointNotFoundError):
            BundleReader(at("nothing"), storage=store)

    def test_bundle_truncated_data_is_data_loss(self, store: Store, root: str) -> None:
        from jaxsaver._bundle.reader import BundleReader
        from jaxsaver._bundle.writer import BundleWriter

        prefix = store.join(root, "cut")
        with BundleWriter(prefix, storage=store) as w:
            w.add("x", np.arange(100, dtype=np.int64))
        data = f"{prefix}.data-00000-of-00001"
        store.write(data, store.read(data)[:-8])
        with BundleReader(prefix, storage=store) as r, pytest.raises(DataLossError, match="truncated"):
            r.get_tensor("x")
