"""Shared helpers for the tensor-bundle tests: a corpus of tensor sets and bit-exact comparison.

A corpus case is a list of items ``(name, array, spec)``; ``spec`` is ``""`` for a whole tensor
or a TF ``shape_and_slices`` string (``"4 6 0,2:-"``) for one slice of a partitioned tensor.
The same items, in the same order, go to ``tf.raw_ops.SaveV2`` and to ``BundleWriter``.
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np

from jaxsaver import BundleWriter
from jaxsaver._format.slices import parse_slice_spec, resolve_extents

_RNG_SEED = 1234

FLOAT_DTYPES = {
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e4m3b11fnuz": ml_dtypes.float8_e4m3b11fnuz,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "complex64": np.complex64,
    "complex128": np.complex128,
}
INT_DTYPES = {
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
}
# Sub-byte types: stored one element per byte; build them from valid values (not random bits).
SUBBYTE_DTYPES = {
    "int4": (ml_dtypes.int4, range(-8, 8)),
    "uint4": (ml_dtypes.uint4, range(0, 16)),
    "int2": (ml_dtypes.int2, range(-2, 2)),
    "uint2": (ml_dtypes.uint2, range(0, 4)),
}


def _random_bits(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    """Every bit pattern is fair game (NaNs, infinities, subnormals)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return rng.integers(0, 256, size=n, dtype=np.uint8).view(dtype).reshape(shape)


def _numeric_case(rng, dtype, make) -> list:
    return [
        ("t/matrix", make((3, 4)), ""),
        ("empty", make((0, 3)), ""),
        ("scalar", make(()), ""),
        ("vec", make((5,)), ""),
    ]


def build_corpus() -> dict[str, list]:
    rng = np.random.default_rng(_RNG_SEED)
    corpus: dict[str, list] = {}
    for name, dtype in FLOAT_DTYPES.items():
        corpus[f"dtype_{name}"] = _numeric_case(rng, dtype, lambda s, d=dtype: _random_bits(rng, d, s))
    for name, dtype in INT_DTYPES.items():
        corpus[f"dtype_{name}"] = _numeric_case(rng, dtype, lambda s, d=dtype: _random_bits(rng, d, s))
    for name, (dtype, values) in SUBBYTE_DTYPES.items():
        vals = np.array(list(values))
        corpus[f"dtype_{name}"] = _numeric_case(
            rng, dtype, lambda s, d=dtype, v=vals: rng.choice(v, size=s).astype(d)
        )
    corpus["dtype_float4_e2m1fn"] = _numeric_case(
        rng, None, lambda s: rng.integers(0, 16, size=s, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn)
    )
    corpus["dtype_bool"] = _numeric_case(rng, None, lambda s: rng.integers(0, 2, size=s).astype(bool))

    def strings(*items):
        return np.array(list(items), dtype=object)

    corpus["string_vector"] = [
        ("s", strings(b"hi", b"", "caf\u00e9".encode(), b"\x00\xff\x80", b"x" * 300), ""),
    ]
    corpus["string_scalar"] = [("s", np.array(b"abc", dtype=object), "")]
    corpus["string_empty_scalar"] = [("s", np.array(b"", dtype=object), "")]
    corpus["string_empty_vector"] = [
        ("a", np.arange(2, dtype=np.float32), ""),
        ("s", strings(), ""),
        ("z", strings(b"", b""), ""),
    ]
    corpus["string_2d_mixed"] = [
        ("w", np.array([1.0, 2.0], dtype=np.float32), ""),
        ("s", np.array([[b"a", b"bc"], [b"", b"\xe2\x82\xac" * 50]], dtype=object), ""),
        ("n", np.array([[7]], dtype=np.int64), ""),
    ]
    corpus["format_example"] = [
        ("w", np.array([1.0, 2.0], dtype=np.float32), ""),
        ("s", strings(b"hi"), ""),
    ]
    corpus["zero_size_dims"] = [
        ("a0", np.zeros((0,), np.float32), ""),
        ("mid", np.arange(3, dtype=np.int16), ""),
        ("a03", np.zeros((0, 3), np.float64), ""),
        ("a302", np.zeros((3, 0, 2), np.int8), ""),
        ("s302", np.zeros((3, 0, 2), dtype=object), ""),
        ("tail", np.arange(2, dtype=np.uint8), ""),
    ]
    corpus["scalars"] = [
        ("f", np.float32(3.5), ""),
        ("d", np.float64(-0.0), ""),
        ("i", np.int64(-(2**62)), ""),
        ("b", np.bool_(True), ""),
        ("c", np.complex64(1 - 2j), ""),
    ]
    corpus["rank6"] = [
        ("r6", _random_bits(rng, np.float32, (2, 1, 3, 1, 2, 2)), ""),
        ("r5", _random_bits(rng, np.int32, (1, 2, 1, 2, 1)), ""),
    ]
    corpus["names_special"] = [
        ("model/layer_1/kernel", np.ones((2, 2), np.float32), ""),
        ("\u5909\u6570/\u00fc\u00f1\u00ee", np.arange(3, dtype=np.int32), ""),
        (b"a\x00b", np.float32(1), ""),
        (b"\xff\xfe", np.float32(2), ""),
        (b"\x00lead", np.float32(3), ""),
        ("a", np.float32(4), ""),
        ("a/", np.float32(5), ""),
        ("/abs", np.float32(6), ""),
    ]
    corpus["long_name"] = [
        ("short", np.float32(1), ""),
        ("b" * 600_000, np.arange(4, dtype=np.float32), ""),
        ("c", np.float32(2), ""),
    ]
    corpus["many_keys"] = [
        (("k%05d" % i).ljust(120, "_"), np.float32(i), "") for i in range(3000)
    ]
    # Reverse add order: data order differs from key order.
    corpus["add_order"] = [
        ("z", np.arange(3, dtype=np.float32), ""),
        ("m", np.zeros((0,), np.float32), ""),
        ("a", np.arange(2, dtype=np.int64), ""),
    ]
    full1 = _random_bits(rng, np.float32, (10,))
    corpus["sliced_1d"] = [
        ("v", full1[3:10], "10 3,7"),
        ("v", full1[0:3], "10 0,3"),
        ("plain", np.float32(9), ""),
    ]
    full2 = np.arange(24, dtype=np.float32).reshape(4, 6)
    corpus["sliced_2d"] = [
        ("w", full2[0:2, :], "4 6 0,2:-"),
        ("w", full2[2:4, 0:3], "4 6 2,2:0,3"),
        ("w", full2[2:4, 3:6], "4 6 2,2:3,3"),
    ]
    corpus["sliced_tf1_explicit"] = [
        ("p", full2[0:2, :], "4 6 0,2:0,6"),
        ("p", full2[2:4, :], "4 6 2,2:0,6"),
        ("q", full2[:, 0:4], "4 6 0,4:0,4"),
        ("q", full2[:, 4:6], "4 6 -:4,2"),
    ]
    full3 = np.arange(12, dtype=np.int64).reshape(3, 4)
    corpus["sliced_full_spec_is_plain"] = [
        ("f", np.arange(2, dtype=np.float32), "2 0,2"),
        ("g", full3, "3 4 -:-"),
        ("h", full3, "3 4 0,3:0,4"),
    ]
    full4 = _random_bits(rng, np.float64, (6, 5))
    corpus["sliced_mixed"] = [
        ("before", np.arange(3, dtype=np.int32), ""),
        (b"x\x00y\xff", full4[4:6, :], "6 5 4,2:-"),
        ("middle", np.zeros((0, 2), np.float32), ""),
        (b"x\x00y\xff", full4[0:4, 0:2], "6 5 0,4:0,2"),
        (b"x\x00y\xff", full4[0:4, 2:5], "6 5 0,4:2,3"),
        ("\u00e9", np.array([[0.5]], np.float32), ""),
    ]
    big = _random_bits(rng, np.float32, (200, 300))
    corpus["sliced_big_offsets"] = [
        ("big", big[0:100], "200 300 0,100:-"),
        ("big", big[100:200, 0:150], "200 300 100,100:0,150"),
        ("big", big[100:200, 150:300], "200 300 100,100:150,150"),
    ]
    corpus["sliced_string"] = [
        ("s", np.array([b"a", b"bb"], dtype=object), "4 0,2"),
        ("s", np.array([b"", b"dddd"], dtype=object), "4 2,2"),
    ]
    return corpus


# ----------------------------------------------------------------------------- writing


def write_ours(prefix: str, items: list) -> None:
    with BundleWriter(prefix) as writer:
        for name, array, spec in items:
            if spec:
                shape, _ = parse_slice_spec(spec)
                writer.add_slice(name, shape, spec, array)
            else:
                writer.add(name, array)


def tf_constant(tf, array):
    array = np.asarray(array)
    if array.dtype == object:
        return tf.constant(array, dtype=tf.string)
    return tf.constant(array)


def write_tf(tf, prefix: str, items: list) -> None:
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=[n if isinstance(n, bytes) else n.encode("utf-8") for n, _, _ in items],
        shape_and_slices=[spec for _, _, spec in items],
        tensors=[tf_constant(tf, a) for _, a, _ in items],
    )


def expected_tensors(items: list) -> dict[bytes, np.ndarray]:
    """Full tensors by key, partitioned ones reassembled."""
    out: dict[bytes, np.ndarray] = {}
    for name, array, spec in items:
        key = name if isinstance(name, bytes) else name.encode("utf-8")
        array = np.asarray(array)
        if not spec:
            out[key] = array
            continue
        shape, extents = parse_slice_spec(spec)
        if key not in out:
            out[key] = np.empty(shape, dtype=array.dtype)
        index = tuple(slice(s, s + n) for s, n in resolve_extents(shape, extents))
        out[key][index] = array
    return out


def bundle_files(prefix: str) -> list[str]:
    directory, base = os.path.split(prefix)
    return sorted(n for n in os.listdir(directory) if n.startswith(base + "."))


# ----------------------------------------------------------------------------- comparison


def assert_bit_equal(actual, expected, what: str = "") -> None:
    """Same dtype, shape and bytes (NaN-safe); object arrays compared element-wise as bytes."""
    if isinstance(expected, bytes):
        expected = np.array(expected, dtype=object)
    expected = np.asarray(expected)
    if isinstance(actual, bytes):
        actual = np.array(actual, dtype=object)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype == object:
        assert actual.dtype == object, f"{what}: dtype {actual.dtype}"
        got = [bytes(x) for x in actual.reshape(-1)]
        want = [bytes(x) for x in expected.reshape(-1)]
        assert got == want, f"{what}: string values differ"
        return
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes(), (
        f"{what}: bytes differ"
    )
