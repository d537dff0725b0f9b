"""merge_bundles is byte-identical to tf.raw_ops.MergeV2Checkpoints on the same inputs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bundle_helpers import assert_bit_equal, expected_tensors, write_ours
from jaxsaver import BundleReader, CheckpointNotFoundError, InvalidArgumentError, merge_bundles

tf = pytest.importorskip("tensorflow")

_FULL = np.arange(48, dtype=np.float32).reshape(8, 6)

# Three shards as a TF2 / TF1 sharded save would write them; "w" is partitioned over all three.
PARTS = {
    "part-00000-of-00003": [
        ("b", np.arange(5, dtype=np.int32), ""),
        ("w", _FULL[0:3], "8 6 0,3:-"),
        ("s", np.array([b"x", b""], dtype=object), ""),
    ],
    "part-00001-of-00003": [
        ("a", np.float64(2.5), ""),
        ("w", _FULL[3:8, 0:2], "8 6 3,5:0,2"),
    ],
    "part-00002-of-00003": [
        ("c", np.zeros((0, 4), np.float32), ""),
        ("w", _FULL[3:8, 2:6], "8 6 3,5:2,4"),
        ("z/\u00fc", np.array([[1, 2]], np.int64), ""),
    ],
}


def _write_parts(root, parts: dict, names: list[str]) -> list[str]:
    temp = os.path.join(root, "ckpt_temp")
    os.makedirs(temp, exist_ok=True)
    prefixes = []
    for name in names:
        prefix = os.path.join(temp, name)
        write_ours(prefix, parts[name])
        prefixes.append(prefix)
    return prefixes


def _snapshot(directory) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(directory):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, directory)] = fh.read()
    return out


def _tf_merge(prefixes, dest, **kwargs):
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=prefixes, destination_prefix=dest, **kwargs)


def _merge_both(tmp_path, parts, order, *, present=None, **kwargs):
    """Runs TF's merge and ours on identical inputs; returns (ours_root, tf_root)."""
    roots = []
    for who in ("ours", "tf"):
        root = tmp_path / who
        root.mkdir()
        written = present if present is not None else order
        prefixes = _write_parts(str(root), parts, written)
        prefixes = [os.path.join(str(root), "ckpt_temp", n) for n in order]
        dest = os.path.join(str(root), "ckpt")
        if who == "ours":
            merge_bundles(prefixes, dest, **kwargs)
        else:
            _tf_merge(prefixes, dest, **kwargs)
        roots.append(root)
    return roots


def _assert_same_tree(ours, theirs):
    mine, ref = _snapshot(ours), _snapshot(theirs)
    assert sorted(mine) == sorted(ref)
    for name in ref:
        assert mine[name] == ref[name], f"{name} differs"
    assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))


@pytest.mark.parametrize(
    "order",
    [
        ["part-00000-of-00003", "part-00001-of-00003", "part-00002-of-00003"],
        ["part-00002-of-00003", "part-00000-of-00003", "part-00001-of-00003"],
        ["part-00001-of-00003"],
    ],
    ids=["in_order", "out_of_order", "single"],
)
def test_merge_identical_to_tf(tmp_path, order):
    ours, theirs = _merge_both(tmp_path, PARTS, order)
    _assert_same_tree(ours, theirs)
    assert not (ours / "ckpt_temp").exists()
    n = len(order)
    assert sorted(os.listdir(ours)) == sorted(
        ["ckpt.index"] + [f"ckpt.data-{i:05d}-of-{n:05d}" for i in range(n)]
    )
    items = [item for name in order for item in PARTS[name]]
    expected = expected_tensors(items)
    prefix = str(ours / "ckpt")
    tf_reader = tf.train.load_checkpoint(prefix)
    with BundleReader(prefix) as reader:
        assert reader.num_shards == n
        if n == 3:
            assert sorted(reader.keys()) == sorted(k.decode() for k in expected)
            assert_bit_equal(reader.get_tensor("w"), _FULL)
            assert_bit_equal(tf_reader.get_tensor("w"), _FULL)
        for key in reader.keys():
            if key == "w" and n != 3:
                continue  # only some slices present
            value = reader.get_tensor(key)
            assert_bit_equal(value, tf_reader.get_tensor(key), key)
        assert reader.verify() == []


def test_merge_out_of_order_shard_ids(tmp_path):
    ours, _ = _merge_both(
        tmp_path, PARTS, ["part-00002-of-00003", "part-00000-of-00003", "part-00001-of-00003"]
    )
    with BundleReader(str(ours / "ckpt")) as reader:
        assert reader.info("c").entry.shard_id == 0
        assert reader.info("b").entry.shard_id == 1
        assert reader.info("a").entry.shard_id == 2
        # The full entry of "w" takes the id of the first input it appears in.
        assert reader.info("w").entry.shard_id == 0


@pytest.mark.parametrize("delete_old_dirs", [True, False])
def test_merge_delete_old_dirs(tmp_path, delete_old_dirs):
    order = list(PARTS)
    ours, theirs = _merge_both(tmp_path, PARTS, order, delete_old_dirs=delete_old_dirs)
    _assert_same_tree(ours, theirs)
    assert (ours / "ckpt_temp").exists() == (not delete_old_dirs)
    if not delete_old_dirs:
        assert os.listdir(ours / "ckpt_temp") == []


def test_merge_into_same_directory(tmp_path):
    """Inputs beside the destination: the destination's directory is never removed."""
    for who in ("ours", "tf"):
        root = tmp_path / who
        root.mkdir()
        prefixes = []
        for i, name in enumerate(PARTS):
            prefix = str(root / f"in{i}")
            write_ours(prefix, PARTS[name])
            prefixes.append(prefix)
        (merge_bundles if who == "ours" else _tf_merge)(prefixes, str(root / "ckpt"))
    _assert_same_tree(tmp_path / "ours", tmp_path / "tf")


def test_merge_allow_missing_files(tmp_path):
    order = list(PARTS)
    present = [order[0], order[2]]
    ours, theirs = _merge_both(tmp_path, PARTS, order, present=present, allow_missing_files=True)
    _assert_same_tree(ours, theirs)
    with BundleReader(str(ours / "ckpt")) as reader:
        assert reader.num_shards == 2
        assert_bit_equal(reader.get_tensor("b"), np.arange(5, dtype=np.int32))


def test_merge_missing_input_is_error(tmp_path):
    order = list(PARTS)
    prefixes = _write_parts(str(tmp_path), PARTS, order[:2])
    prefixes.append(os.path.join(str(tmp_path), "ckpt_temp", order[2]))
    with pytest.raises(CheckpointNotFoundError, match=order[2]):
        merge_bundles(prefixes, str(tmp_path / "ckpt"))
    with pytest.raises(CheckpointNotFoundError):
        merge_bundles(prefixes[2:], str(tmp_path / "ckpt2"), allow_missing_files=True)


def test_merge_duplicate_key(tmp_path):
    parts = {
        "p0": [("a", np.float32(1), ""), ("dup/key", np.arange(2, dtype=np.float32), "")],
        "p1": [("b", np.float32(2), ""), ("dup/key", np.arange(3, dtype=np.float32), "")],
    }
    prefixes = _write_parts(str(tmp_path), parts, ["p0", "p1"])
    before = _snapshot(tmp_path)
    with pytest.raises(InvalidArgumentError, match="dup/key"):
        merge_bundles(prefixes, str(tmp_path / "ckpt"))
    assert _snapshot(tmp_path) == before
    # TF refuses too.
    with pytest.raises(tf.errors.InvalidArgumentError):
        _tf_merge(prefixes, str(tmp_path / "ckpt"))


def test_merge_duplicate_slice_key(tmp_path):
    parts = {
        "p0": [("w", _FULL[0:4], "8 6 0,4:-")],
        "p1": [("w", _FULL[0:4], "8 6 0,4:-")],
    }
    prefixes = _write_parts(str(tmp_path), parts, ["p0", "p1"])
    before = _snapshot(tmp_path)
    with pytest.raises(InvalidArgumentError):
        merge_bundles(prefixes, str(tmp_path / "ckpt"))
    assert _snapshot(tmp_path) == before
