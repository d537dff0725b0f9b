"""Golden files: bundles written by TensorFlow (tests/testdata/, made by tools/gen_testdata.py).

Without TensorFlow: our reader reads them exactly, our writer reproduces them byte for byte, and
each corrupt variant fails with the error it should. With TensorFlow (``live`` tests): TF still
writes exactly these bytes. ``test_golden_runs_without_tensorflow`` runs this module in a process
where ``import tensorflow`` fails.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest

from jaxsaver import BundleReader, BundleWriter, CheckpointNotFoundError, DataLossError
from jaxsaver._format.slices import parse_slice_spec, resolve_extents

TESTDATA = pathlib.Path(__file__).resolve().parent / "testdata"
PREFIX = "model"
FILES = ("model.index", "model.data-00000-of-00001")
GOOD = ["dtypes", "partitioned", "multiblock", "strings", "small"]
CORRUPT = ["data_flipped", "data_truncated", "index_truncated", "index_block_flipped", "data_missing"]


def _dtype(name: str) -> np.dtype:
    found = getattr(ml_dtypes, name, None)
    return np.dtype(found if found is not None else name)


def load_items(case: str) -> list[tuple[str, np.ndarray, str]]:
    """The SaveV2 items of a case, rebuilt from its manifest and values (no pickle)."""
    directory = TESTDATA / case
    manifest = json.loads((directory / "manifest.json").read_text())
    items = []
    with np.load(directory / "values.npz", allow_pickle=False) as values:
        for i, entry in enumerate(manifest["items"]):
            shape = tuple(entry["shape"])
            if entry["dtype"] == "string":
                flat = [bytes.fromhex(h) for h in entry["strings_hex"]]
                array = np.empty(len(flat), dtype=object)
                array[:] = flat
                array = array.reshape(shape)
            else:
                array = np.frombuffer(values[f"t{i}"].tobytes(), _dtype(entry["dtype"])).reshape(shape)
            items.append((entry["name"], array, entry["spec"]))
    return items


def expected(items: list[tuple[str, np.ndarray, str]]) -> dict[str, np.ndarray]:
    """Full tensors by name, partitioned ones reassembled from their slices."""
    out: dict[str, np.ndarray] = {}
    for name, array, spec in items:
        if not spec:
            out[name] = array
            continue
        shape, extents = parse_slice_spec(spec)
        if name not in out:
            out[name] = np.zeros(shape, dtype=array.dtype)
        out[name][tuple(slice(s, s + n) for s, n in resolve_extents(shape, extents))] = array
    return out


def assert_bit_equal(actual: np.ndarray, want: np.ndarray, what: str) -> None:
    actual = np.asarray(actual)
    assert actual.shape == want.shape, f"{what}: shape {actual.shape} != {want.shape}"
    if want.dtype == object:
        assert [bytes(x) for x in actual.reshape(-1)] == [bytes(x) for x in want.reshape(-1)], what
        return
    assert actual.dtype == want.dtype, f"{what}: dtype {actual.dtype} != {want.dtype}"
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(want).tobytes(), what


def write_ours(prefix: str, items: list[tuple[str, np.ndarray, str]]) -> None:
    with BundleWriter(prefix) as writer:
        for name, array, spec in items:
            if spec:
                shape, _ = parse_slice_spec(spec)
                writer.add_slice(name, shape, spec, array)
            else:
                writer.add(name, array)


def assert_same_files(ours: str, golden: pathlib.Path) -> None:
    for name in FILES:
        mine = pathlib.Path(f"{ours}{name[len(PREFIX):]}").read_bytes()
        ref = (golden / name).read_bytes()
        if mine != ref:
            at = next((i for i, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
            pytest.fail(f"{name}: {len(mine)} vs {len(ref)} bytes, first difference at {at}")


# --------------------------------------------------------------------------- without TensorFlow


def test_testdata_is_small_and_complete():
    total = sum(p.stat().st_size for p in TESTDATA.rglob("*") if p.is_file())
    assert total < 1 << 20, total
    names = {n for n, _, _ in load_items("dtypes")}
    for dtype in ("bfloat16", "float16", "float8_e4m3fn", "int4", "uint2", "complex128", "bool", "string", "uint64"):
        assert f"dt/{dtype}" in names
    assert any(spec for _, _, spec in load_items("partitioned"))
    # several index blocks: the index is larger than TF's 4 KiB block size
    assert (TESTDATA / "multiblock" / "model.index").stat().st_size > 2 * 4096 * 0.75


@pytest.mark.parametrize("case", GOOD)
def test_reader_reads_golden_exactly(case):
    items = load_items(case)
    want = expected(items)
    with BundleReader(str(TESTDATA / case / PREFIX)) as reader:
        assert sorted(reader.keys()) == sorted(want)
        for name, value in want.items():
            assert reader.shape(name) == value.shape
            assert reader.dtype(name) == value.dtype
            assert_bit_equal(reader.get_tensor(name), value, f"{case}:{name}")


def test_reader_reads_golden_slices():
    want = expected(load_items("partitioned"))
    with BundleReader(str(TESTDATA / "partitioned" / PREFIX)) as reader:
        # a block straddling two stored slices, and one inside a column slice
        assert_bit_equal(reader.get_slice("dense/kernel", (slice(1, 5), slice(1, 3))),
                         want["dense/kernel"][1:5, 1:3], "kernel[1:5, 1:3]")
        assert_bit_equal(reader.get_slice("embedding", (slice(None), slice(2, 6))),
                         want["embedding"][:, 2:6], "embedding[:, 2:6]")


@pytest.mark.parametrize("case", GOOD)
def test_writer_reproduces_golden_bytes(case, tmp_path):
    ours = str(tmp_path / PREFIX)
    write_ours(ours, load_items(case))
    assert_same_files(ours, TESTDATA / case)


def _corrupt(name: str) -> str:
    return str(TESTDATA / f"corrupt_{name}" / PREFIX)


def test_corrupt_data_flipped():
    with BundleReader(_corrupt("data_flipped")) as reader:
        with pytest.raises(DataLossError, match="checksum"):
            reader.get_tensor("a")
        np.testing.assert_array_equal(reader.get_tensor("b"), np.arange(3))  # the other tensor is fine


def test_corrupt_data_truncated():
    with BundleReader(_corrupt("data_truncated")) as reader:
        np.testing.assert_array_equal(reader.get_tensor("a"), np.arange(8, dtype=np.float32))
        with pytest.raises(DataLossError, match="truncated"):
            reader.get_tensor("b")


@pytest.mark.parametrize("name", ["index_truncated", "index_block_flipped"])
def test_corrupt_index(name):
    with pytest.raises(DataLossError, match="model.index"):
        with BundleReader(_corrupt(name)) as reader:
            reader.get_tensor("a")


def test_corrupt_data_missing():
    with BundleReader(_corrupt("data_missing")) as reader:
        assert sorted(reader.keys()) == ["a", "b"]  # the index alone answers
        with pytest.raises(CheckpointNotFoundError, match="missing"):
            reader.get_tensor("a")


def test_every_corrupt_variant_is_tested_and_described():
    present = sorted(p.name[len("corrupt_"):] for p in TESTDATA.glob("corrupt_*"))
    assert present == sorted(CORRUPT)
    for name in CORRUPT:
        assert (TESTDATA / f"corrupt_{name}" / "defect.txt").read_text().strip()


# --------------------------------------------------------------------------- with TensorFlow


@pytest.mark.parametrize("case", GOOD)
def test_live_tensorflow_writes_golden_bytes(case, tmp_path):
    tf = pytest.importorskip("tensorflow")
    items = load_items(case)
    tensors = [tf.constant(a, dtype=tf.string) if a.dtype == object else tf.constant(a) for _, a, _ in items]
    prefix = str(tmp_path / PREFIX)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=[n.encode() for n, _, _ in items],
                      shape_and_slices=[s for _, _, s in items], tensors=tensors)
    assert_same_files(prefix, TESTDATA / case)


def test_live_tensorflow_reads_the_golden_partitioned_variable():
    tf = pytest.importorskip("tensorflow")
    want = expected(load_items("partitioned"))
    reader = tf.train.load_checkpoint(str(TESTDATA / "partitioned" / PREFIX))
    for name, value in want.items():
        assert_bit_equal(reader.get_tensor(name), value, name)


# --------------------------------------------------------------------------- TensorFlow absent

_NO_TF = textwrap.dedent("""
    import sys
    import importlib.abc

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    import pytest
    rc = pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1], "-k", "not without_tensorflow"])
    print("TF_LOADED", any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules))
    sys.exit(rc)
""")


@pytest.mark.timeout(300)
def test_golden_runs_without_tensorflow(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _NO_TF, str(pathlib.Path(__file__))], capture_output=True, text=True,
        timeout=280, env=os.environ.copy(), cwd=pathlib.Path(__file__).parent,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    assert "TF_LOADED False" in out
    live = len(GOOD) + 1
    assert f"{live} skipped" in out, out[-1500:]
    assert " failed" not in out and " error" not in out
