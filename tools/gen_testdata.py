"""Regenerates tests/testdata/: small tensor bundles written by TensorFlow, and corrupt variants.

Each case directory holds TF's ``model.index`` and ``model.data-00000-of-00001`` and, beside them,
what was written: ``manifest.json`` (the SaveV2 items in write order: name, slice spec, dtype,
shape; string values as hex) and ``values.npz`` (each numeric item's bytes as uint8, item ``i``
under ``t<i>``; loaded with ``allow_pickle=False``). tests/test_golden.py rebuilds the items from
these two files, so it needs no TensorFlow; this script does.

Cases: ``dtypes`` (every dtype TF saves: floats, float8s, ints, sub-byte ints, bool, complex,
string), ``partitioned`` (a partitioned variable: slices of one tensor, TF1's layout),
``multiblock`` (enough entries for an index of several 4 KiB blocks), ``strings`` (empty,
non-ASCII, 200-byte values); ``corrupt_*``: copies of ``small`` with one defect each.

Usage: python tools/gen_testdata.py [OUTPUT_DIR]   (default: tests/testdata)
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
from typing import Any

import ml_dtypes
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
PREFIX = "model"
DATA = f"{PREFIX}.data-00000-of-00001"
INDEX = f"{PREFIX}.index"
SEED = 20261202

NUMERIC = [
    "float16", "bfloat16", "float32", "float64",
    "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz",
    "complex64", "complex128",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
]
SUBBYTE = {"int4": range(-8, 8), "uint4": range(0, 16), "int2": range(-2, 2), "uint2": range(0, 4)}


def dtype_of(name: str) -> np.dtype:
    """A dtype by its numpy name, ml_dtypes' included."""
    found = getattr(ml_dtypes, name, None)
    return np.dtype(found if found is not None else name)


def _bits(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return rng.integers(0, 256, size=n, dtype=np.uint8).view(dtype).reshape(shape)


def cases() -> dict[str, list[tuple[str, Any, str]]]:
    """Case name -> SaveV2 items ``(name, array, shape_and_slice)`` in write order."""
    rng = np.random.default_rng(SEED)
    out: dict[str, list[tuple[str, Any, str]]] = {}
    items: list[tuple[str, Any, str]] = []
    for name in NUMERIC:
        items.append((f"dt/{name}", _bits(rng, dtype_of(name), (2, 3)), ""))
    for name, values in SUBBYTE.items():
        items.append((f"dt/{name}", rng.choice(list(values), size=(5,)).astype(dtype_of(name)), ""))
    items.append(("dt/bool", rng.integers(0, 2, size=(4,)).astype(np.bool_), ""))
    items.append(("dt/string", np.array([b"a", b"", b"\xff\x00z"], dtype=object), ""))
    items.append(("dt/scalar", np.float32(2.5), ""))
    items.append(("dt/empty", np.zeros((0, 4), np.int32), ""))
    out["dtypes"] = items

    w = rng.standard_normal((6, 4)).astype(np.float32)
    e = rng.integers(-100, 100, size=(3, 8)).astype(np.int64)
    out["partitioned"] = [
        ("dense/bias", rng.standard_normal((4,)).astype(np.float32), ""),
        ("dense/kernel", w[0:2], "6 4 0,2:-"),
        ("dense/kernel", w[2:4], "6 4 2,2:-"),
        ("dense/kernel", w[4:6], "6 4 4,2:-"),
        ("embedding", e[:, 0:3], "3 8 -:0,3"),
        ("embedding", e[:, 3:8], "3 8 -:3,5"),
    ]

    out["multiblock"] = [
        (f"layers/block_{i:03d}/attention/kernel", np.full((2,), i, np.float32), "") for i in range(160)
    ]

    out["strings"] = [
        ("text/empty", np.array([b"", b""], dtype=object), ""),
        ("text/long", np.array([bytes(range(200)), b"x" * 130], dtype=object), ""),
        ("text/matrix", np.array([["é".encode(), b"b"], [b"", "日本".encode()]], dtype=object), ""),
        ("text/scalar", np.array(b"hello", dtype=object), ""),
    ]

    out["small"] = [
        ("a", np.arange(8, dtype=np.float32), ""),
        ("b", np.arange(3, dtype=np.int64), ""),
    ]
    return out


def manifest_and_values(items: list[tuple[str, Any, str]]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    entries, values = [], {}
    for i, (name, array, spec) in enumerate(items):
        array = np.asarray(array)
        entry: dict[str, Any] = {"name": name, "spec": spec, "shape": list(array.shape)}
        if array.dtype == object:
            entry["dtype"] = "string"
            entry["strings_hex"] = [bytes(x).hex() for x in array.reshape(-1)]
        else:
            entry["dtype"] = array.dtype.name
            values[f"t{i}"] = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)
        entries.append(entry)
    return {"prefix": PREFIX, "items": entries}, values


def write_tf(tf: Any, prefix: str, items: list[tuple[str, Any, str]]) -> None:
    """``SaveV2`` of the items, in order."""
    tensors = [
        tf.constant(np.asarray(a), dtype=tf.string) if np.asarray(a).dtype == object else tf.constant(np.asarray(a))
        for _, a, _ in items
    ]
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=[n.encode() for n, _, _ in items],
        shape_and_slices=[s for _, _, s in items], tensors=tensors,
    )


def _corrupt(out: pathlib.Path) -> None:
    """The ``small`` case with one defect each."""
    base = out / "small"

    def variant(name: str) -> pathlib.Path:
        target = out / f"corrupt_{name}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(base, target)
        (target / "defect.txt").write_text(DEFECTS[name] + "\n")
        return target

    data = (base / DATA).read_bytes()
    index = (base / INDEX).read_bytes()
    flipped = bytearray(data)
    flipped[5] ^= 0x01  # inside tensor "a": its CRC no longer matches
    (variant("data_flipped") / DATA).write_bytes(bytes(flipped))
    (variant("data_truncated") / DATA).write_bytes(data[:-4])
    (variant("index_truncated") / INDEX).write_bytes(index[:-10])  # the footer's magic is cut
    block = bytearray(index)
    block[2] ^= 0x40  # inside the first index block: its block CRC no longer matches
    (variant("index_block_flipped") / INDEX).write_bytes(bytes(block))
    (variant("data_missing") / DATA).unlink()


DEFECTS = {
    "data_flipped": "one bit of tensor 'a' flipped in the data file (CRC mismatch)",
    "data_truncated": "the data file lost its last 4 bytes (tensor 'b' truncated)",
    "index_truncated": "the index lost its last 10 bytes (no valid footer)",
    "index_block_flipped": "one bit flipped in the index's first block (block CRC mismatch)",
    "data_missing": "the data file is absent",
}


def generate(out: pathlib.Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    for name, items in cases().items():
        directory = out / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        write_tf(tf, str(directory / PREFIX), items)
        manifest, values = manifest_and_values(items)
        manifest["tensorflow"] = tf.__version__
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        np.savez(directory / "values.npz", **values)
    _corrupt(out)


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "testdata")
