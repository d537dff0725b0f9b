"""Reading one tensor touches only its bytes and the index file (through real files)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxsaver import BundleReader, BundleWriter
import jaxsaver.testing
from jaxsaver._store.local import LOCAL


class CountingStore(jaxsaver.testing.CountingStore):
    """Local disk, counting every byte its reads return, per file name."""

    def __init__(self) -> None:
        super().__init__(LOCAL)

    @property
    def by_file(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, n in self.bytes_read.items():
            out[os.path.basename(key)] = out.get(os.path.basename(key), 0) + n
        return out


@pytest.fixture
def bundle(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "a": rng.standard_normal((64, 32)).astype(np.float32),
        "b": np.arange(1000, dtype=np.int64),
        "c": rng.standard_normal((3, 5, 7)).astype(np.float64),
        "d": np.array(7, dtype=np.int32),
    }
    prefix = str(tmp_path / "model")
    with BundleWriter(prefix) as writer:
        for name, array in arrays.items():
            writer.add(name, array)
    return prefix, arrays


@pytest.mark.parametrize("name", ["a", "b", "c", "d"])
@pytest.mark.parametrize("method", ["get_tensor", "read_into"])
def test_one_tensor_reads_its_bytes_and_the_index(bundle, name, method):
    prefix, arrays = bundle
    store = CountingStore()
    with BundleReader(prefix, storage=store) as reader:
        if method == "get_tensor":
            value = reader.get_tensor(name)
        else:
            value = reader.read_into(name, np.empty_like(arrays[name]))
    np.testing.assert_array_equal(value, arrays[name])
    index_size = os.path.getsize(prefix + ".index")
    assert store.by_file == {
        "model.index": index_size,
        "model.data-00000-of-00001": arrays[name].nbytes,
    }


def test_large_tensor_read_in_chunks_counts_exactly(tmp_path):
    # Bigger than the reader's chunk size, so the whole-tensor path reads it in several pieces.
    big = np.arange(3 * (1 << 20) + 5, dtype=np.float32)
    small = np.ones(10, dtype=np.float32)
    prefix = str(tmp_path / "big")
    with BundleWriter(prefix) as writer:
        writer.add("big", big)
        writer.add("small", small)
    store = CountingStore()
    with BundleReader(prefix, storage=store) as reader:
        np.testing.assert_array_equal(reader.get_tensor("big"), big)
    assert store.by_file["big.data-00000-of-00001"] == big.nbytes
    assert store.by_file["big.index"] == os.path.getsize(prefix + ".index")
