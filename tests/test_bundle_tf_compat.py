"""Acceptance: BundleWriter output is byte-identical to SaveV2, and each side reads the other.

Dtypes outside ``tf.dtypes`` (float8s, int4/uint4/int2/uint2, float4_e2m1fn) need no special
handling in TF 2.21: ``tf.constant(ml_dtypes_array)`` yields the matching TF dtype, and
``tensorflow.python.framework.dtypes.as_dtype(numpy_dtype)`` gives it for RestoreV2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bundle_helpers import (
    assert_bit_equal,
    build_corpus,
    bundle_files,
    expected_tensors,
    write_ours,
    write_tf,
)
from jaxsaver import BundleReader, InvalidArgumentError

tf = pytest.importorskip("tensorflow")
from tensorflow.python.framework import dtypes as tf_dtypes  # noqa: E402

CORPUS = build_corpus()
CASE_IDS = sorted(CORPUS)

# TF's CheckpointReader cannot reassemble these partitioned dtypes (FORMAT.md §5).
_TF_CANNOT_ASSEMBLE = {np.dtype(object)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfcompat")


@pytest.fixture(scope="module")
def written(workdir):
    """case id -> (our prefix, TF's prefix); each case is written once per module."""
    cache: dict[str, tuple[str, str]] = {}

    def get(case: str) -> tuple[str, str]:
        if case not in cache:
            ours = os.path.join(workdir, "ours", case, "ckpt")
            theirs = os.path.join(workdir, "tf", case, "ckpt")
            os.makedirs(os.path.dirname(ours))
            os.makedirs(os.path.dirname(theirs))
            write_ours(ours, CORPUS[case])
            write_tf(tf, theirs, CORPUS[case])
            cache[case] = (ours, theirs)
        return cache[case]

    return get


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("case", CASE_IDS)
def test_bytes_identical_to_savev2(case, written):
    ours, theirs = written(case)
    assert bundle_files(ours) == ["ckpt.data-00000-of-00001", "ckpt.index"]
    assert bundle_files(theirs) == bundle_files(ours)
    for suffix in (".index", ".data-00000-of-00001"):
        with open(ours + suffix, "rb") as f:
            mine = f.read()
        with open(theirs + suffix, "rb") as f:
            ref = f.read()
        if mine != ref:
            at = next((i for i, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
            pytest.fail(
                f"{suffix}: {len(mine)} vs {len(ref)} bytes, first difference at {at}: "
                f"ours {mine[at:at + 16].hex()} tf {ref[at:at + 16].hex()}"
            )


@pytest.mark.parametrize("case", CASE_IDS)
def test_tf_reads_ours(case, written):
    ours, _ = written(case)
    items = CORPUS[case]
    reader = tf.train.load_checkpoint(ours)
    expected = expected_tensors(items)
    sliced = {(n if isinstance(n, bytes) else n.encode()) for n, _, spec in items if spec}
    for key, value in expected.items():
        if key in sliced and value.dtype in _TF_CANNOT_ASSEMBLE:
            continue
        assert_bit_equal(reader.get_tensor(key), value, repr(key[:40]))
    # RestoreV2 with the stored slice specs (and the whole tensor for plain ones).
    names, specs, dts, values = [], [], [], []
    for name, array, spec in items[:200]:
        array = np.asarray(array)
        names.append(name if isinstance(name, bytes) else name.encode())
        specs.append(spec)
        dts.append(tf.string if array.dtype == object else tf_dtypes.as_dtype(array.dtype))
        values.append(array)
    restored = tf.raw_ops.RestoreV2(prefix=ours, tensor_names=names, shape_and_slices=specs, dtypes=dts)
    for name, value, got in zip(names, values, restored):
        assert_bit_equal(got.numpy(), value, f"RestoreV2 {name[:40]!r}")


@pytest.mark.parametrize("case", CASE_IDS)
def test_we_read_tf(case, written):
    _, theirs = written(case)
    expected = expected_tensors(CORPUS[case])
    with BundleReader(theirs) as reader:
        assert sorted(k.encode("utf-8", "surrogateescape") for k in reader.keys()) == sorted(expected)
        for key, value in expected.items():
            assert reader.shape(key) == value.shape
            assert reader.dtype(key) == value.dtype
            assert_bit_equal(reader.get_tensor(key), value, repr(key[:40]))
            if value.dtype != object:
                out = np.empty_like(value)
                reader.read_into(key, out)
                assert_bit_equal(out, value, f"read_into {key[:40]!r}")
        assert reader.verify() == []


def test_tf_debug_string_keys_match_raw_keys(written):
    ours, _ = written("sliced_mixed")
    lines = tf.train.load_checkpoint(ours).debug_string().split(b"\n")
    tf_keys = sorted(line.rsplit(b" (DT_", 1)[0] for line in lines if line)
    with BundleReader(ours) as reader:
        raw = [k.encode("utf-8", "surrogateescape") for k in reader.raw_keys()]
        full = {k.encode("utf-8", "surrogateescape") for k in reader.keys()}
    # debug_string lists slice keys but not the full entries of partitioned tensors.
    assert tf_keys == sorted(k for k in raw if k not in full or k in (b"before", b"middle", b"\xc3\xa9"))


# ----------------------------------------------------------------------------- slices


def test_get_slice_plain_and_sliced(written):
    ours, theirs = written("sliced_2d")
    full = np.arange(24, dtype=np.float32).reshape(4, 6)
    requests = [
        ("4 6 1,2:2,3", full[1:3, 2:5]),
        ("4 6 -:5,1", full[:, 5:6]),
        ("0,4:-", full),
        ("4 6 -:-", full),
        ("1,3:1,4", full[1:4, 1:5]),
        ((slice(1, 3), slice(2, 5)), full[1:3, 2:5]),
        ((slice(None), 5), full[:, 5]),
        ((2,), full[2]),
        (3, full[3]),
        ((Ellipsis, slice(0, 3)), full[..., 0:3]),
        ((slice(-2, None), slice(None, -1)), full[-2:, :-1]),
        ((slice(2, 2),), full[2:2]),
    ]
    for prefix in (ours, theirs):
        with BundleReader(prefix) as reader:
            for spec, want in requests:
                assert_bit_equal(reader.get_slice("w", spec), want, f"sliced {spec}")
    # The same requests on an unsliced tensor.
    plain = os.path.join(os.path.dirname(ours), "plain")
    write_ours(plain, [("w", full, "")])
    with BundleReader(plain) as reader:
        for spec, want in requests:
            assert_bit_equal(reader.get_slice("w", spec), want, f"plain {spec}")


def test_get_slice_matches_restorev2(written):
    ours, _ = written("sliced_big_offsets")
    for spec in ("200 300 50,100:140,20", "200 300 -:299,1", "200 300 150,1:-", "200 300 0,200:0,300"):
        want = tf.raw_ops.RestoreV2(prefix=ours, tensor_names=["big"], shape_and_slices=[spec],
                                    dtypes=[tf.float32])[0].numpy()
        with BundleReader(ours) as reader:
            assert_bit_equal(reader.get_slice("big", spec), want, spec)


def test_get_slice_not_covered(workdir):
    prefix = os.path.join(workdir, "partial", "ckpt")
    os.makedirs(os.path.dirname(prefix))
    full = np.arange(24, dtype=np.float32).reshape(4, 6)
    write_ours(prefix, [("w", full[0:2], "4 6 0,2:-"), ("w", full[2:4, 0:3], "4 6 2,2:0,3")])
    with BundleReader(prefix) as reader:
        assert_bit_equal(reader.get_slice("w", "0,2:-"), full[0:2])
        assert_bit_equal(reader.get_slice("w", (slice(1, 4), slice(0, 3))), full[1:4, 0:3])
        for request in ("4 6 -:-", "2,2:3,1", (slice(None), 5)):
            with pytest.raises(InvalidArgumentError, match="sufficient slices"):
                reader.get_slice("w", request)
        with pytest.raises(InvalidArgumentError, match="sufficient slices"):
            reader.get_tensor("w")
        assert reader.stored_slices("w") == [((0, 2), (0, 6)), ((2, 2), (0, 3))]


# ----------------------------------------------------------------------------- TF-written checkpoints

_TF_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf

    out = sys.argv[1]
    os.makedirs(os.path.join(out, "tf1"))
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 3)

    # TF1 sharded Saver over three devices, plus a partitioned variable.
    with tf.Graph().as_default():
        vs = []
        for i in range(3):
            with tf.device("/cpu:%d" % i):
                vs.append(tf.compat.v1.get_variable(
                    "v%d" % i, initializer=np.arange(6 * (i + 1), dtype=np.float32).reshape(i + 1, 6) + i))
        with tf.device("/cpu:1"):
            s = tf.compat.v1.get_variable("s", initializer=tf.constant([b"x", b"", b"\\xff"]))
            n = tf.compat.v1.get_variable("n", initializer=np.int64(7))
        full = np.arange(70, dtype=np.float32).reshape(10, 7)

        def init(shape, dtype=None, partition_info=None):
            start = partition_info.single_offset(shape) if partition_info else 0
            return tf.constant(full[start:start + shape[0]])

        tf.compat.v1.get_variable("part", shape=[10, 7], dtype=tf.float32, initializer=init,
                                  partitioner=tf.compat.v1.fixed_size_partitioner(3))
        saver = tf.compat.v1.train.Saver(sharded=True)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, os.path.join(out, "tf1", "model"), write_meta_graph=False)

    # TF2 object-based checkpoint.
    ckpt = tf.train.Checkpoint(a=tf.Variable(np.arange(5, dtype=np.float64)),
                               b={"x/y.z": tf.Variable(tf.constant(3, tf.int8))})
    ckpt.save(os.path.join(out, "tf2", "ckpt"))
    """
)


@pytest.fixture(scope="module")
def tf_written(workdir):
    out = os.path.join(workdir, "tfwritten")
    os.makedirs(out)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", _TF_SCRIPT, out], capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return out


def _compare_with_tf_reader(prefix: str) -> list[str]:
    tf_reader = tf.train.load_checkpoint(prefix)
    with BundleReader(prefix) as reader:
        keys = reader.keys()
        assert sorted(keys) == sorted(tf_reader.get_variable_to_shape_map())
        for key in keys:
            assert_bit_equal(reader.get_tensor(key), tf_reader.get_tensor(key), key)
            assert list(reader.shape(key)) == tf_reader.get_variable_to_shape_map()[key]
        assert reader.verify() == []
    return keys


def test_read_tf1_sharded_saver(tf_written):
    prefix = os.path.join(tf_written, "tf1", "model")
    with BundleReader(prefix) as reader:
        shards = reader.num_shards
    assert shards >= 3  # one per device (the partitioned variable has no explicit device)
    files = sorted(os.listdir(os.path.dirname(prefix)))
    assert [f for f in files if ".data-" in f] == [f"model.data-{i:05d}-of-{shards:05d}" for i in range(shards)]
    keys = _compare_with_tf_reader(prefix)
    assert {"v0", "v1", "v2", "s", "n", "part"} <= set(keys)
    with BundleReader(prefix) as reader:
        assert reader.stored_slices("part") == [((0, 4), (0, 7)), ((4, 3), (0, 7)), ((7, 3), (0, 7))]
        full = np.arange(70, dtype=np.float32).reshape(10, 7)
        assert_bit_equal(reader.get_slice("part", "10 7 3,5:2,4"), full[3:8, 2:6])
        assert_bit_equal(reader.get_slice("part", (slice(2, 9), 6)), full[2:9, 6])


def test_read_tf2_checkpoint(tf_written):
    prefix = tf.train.latest_checkpoint(os.path.join(tf_written, "tf2"))
    keys = _compare_with_tf_reader(prefix)
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in keys
    with BundleReader(prefix) as reader:
        graph = reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
        assert graph.shape == () and graph.dtype == object
        assert_bit_equal(reader.get_tensor("a/.ATTRIBUTES/VARIABLE_VALUE"), np.arange(5, dtype=np.float64))
        assert_bit_equal(reader.get_tensor("b/x.Sy..z/.ATTRIBUTES/VARIABLE_VALUE"), np.array(3, np.int8))


@pytest.mark.parametrize(
    "shape, dtype",
    [((6, 5, 4), np.int16), ((3, 40, 30), np.complex128), ((3, 3, 20000), np.float32), ((7,), np.uint8)],
)
def test_get_slice_random_requests(workdir, shape, dtype):
    """Random boxes on plain and 3-way sliced copies of one tensor equal numpy slicing."""
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    full = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    full = full.view(dtype).reshape(shape)
    spec_shape = " ".join(map(str, shape))
    a, b = shape[0] // 3, 2 * shape[0] // 3
    rest = ":".join("-" for _ in shape[1:])
    parts = [(0, a), (a, b - a), (b, shape[0] - b)]
    sliced = [("t", full[s:s + n], f"{spec_shape} {s},{n}" + (":" + rest if rest else "")) for s, n in parts]
    root = os.path.join(workdir, f"random_{'x'.join(map(str, shape))}")
    os.makedirs(root)
    write_ours(os.path.join(root, "plain"), [("t", full, "")])
    write_ours(os.path.join(root, "sliced"), sliced)
    for which in ("plain", "sliced"):
        with BundleReader(os.path.join(root, which)) as reader:
            for _ in range(40):
                index = []
                for d in shape:
                    start = int(rng.integers(0, d))
                    index.append(slice(start, int(rng.integers(start + 1, d + 1))))
                index = tuple(index)
                assert_bit_equal(reader.get_slice("t", index), full[index], f"{which} {index}")
                extents = ":".join(f"{s.start},{s.stop - s.start}" for s in index)
                assert_bit_equal(reader.get_slice("t", f"{spec_shape} {extents}"), full[index], which)
