"""orbax checkpoints read without orbax, converted to bundles and back (issue 18, acceptance 2).

orbax (a test-only dependency) writes the checkpoints; TensorFlow reads the converted bundles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxsaver
from jaxsaver import CheckpointNotFoundError, cli, DataLossError, InvalidArgumentError, NotFoundError
from jaxsaver.interop import _orbax_layout, convert
from jaxsaver.interop import orbax as orbax_reader

ocp = pytest.importorskip("orbax.checkpoint")


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


def _assert_tree_bits(actual, expected):
    a_leaves, a_def = jax.tree_util.tree_flatten(actual)
    e_leaves, e_def = jax.tree_util.tree_flatten(expected)
    assert a_def == e_def
    for a, e in zip(a_leaves, e_leaves):
        assert _bits(a) == _bits(e)


def _mesh(shape=(4, 2), names=("x", "y")):
    return Mesh(np.array(jax.devices()).reshape(shape), names)


def _plain_tree():
    rng = np.random.default_rng(0)
    return {
        "params": {"w": rng.standard_normal((5, 3)).astype(np.float32), "b": np.arange(3, dtype=np.int32)},
        "layers": [rng.standard_normal(4), np.uint8(7)],
        "step": np.int64(12),
    }


def _sharded_tree():
    mesh = _mesh()
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 16)).astype(np.float32)
    e = rng.standard_normal((32, 8)).astype(ml_dtypes.bfloat16)
    return {
        "w": jax.device_put(w, NamedSharding(mesh, P("x", "y"))),
        "emb": jax.device_put(e, NamedSharding(mesh, P(None, "x"))),
        "bias": jnp.asarray(rng.standard_normal(16).astype(ml_dtypes.bfloat16)),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (orbax directory, the tree saved there as numpy)."""
    root = tmp_path_factory.mktemp("orbax")
    out = {}
    plain = _plain_tree()
    with ocp.StandardCheckpointer() as standard:  # asynchronous: committed when the block ends
        standard.save(root / "plain", plain)
    out["plain"] = (root / "plain", plain)
    zarr3 = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_zarr3=True))
    zarr3.save(root / "zarr3", args=ocp.args.PyTreeSave(plain))
    out["zarr3"] = (root / "zarr3", plain)
    per_leaf = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False))
    per_leaf.save(root / "per_leaf", args=ocp.args.PyTreeSave(plain))
    out["per_leaf"] = (root / "per_leaf", plain)
    sharded = _sharded_tree()
    with ocp.StandardCheckpointer() as standard:
        standard.save(root / "sharded", sharded)
    out["sharded"] = (root / "sharded", jax.tree.map(np.asarray, sharded))
    sharded_z3 = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_zarr3=True))
    sharded_z3.save(root / "sharded_zarr3", args=ocp.args.PyTreeSave(sharded))
    out["sharded_zarr3"] = (root / "sharded_zarr3", jax.tree.map(np.asarray, sharded))
    return out


@pytest.mark.parametrize("name", ["plain", "zarr3", "per_leaf", "sharded", "sharded_zarr3"])
def test_read_is_bit_exact(saved, name):
    directory, expected = saved[name]
    tree = orbax_reader.read(directory)
    _assert_tree_bits(tree, jax.tree.map(np.asarray, expected))
    if "sharded" in name:
        assert tree["emb"].dtype == ml_dtypes.bfloat16 and tree["bias"].dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("name", ["sharded", "sharded_zarr3"])
def test_read_into_another_sharding_places_each_block(saved, name):
    directory, expected = saved[name]
    mesh = _mesh((2, 4), ("a", "b"))
    target = {
        "w": jax.ShapeDtypeStruct((64, 16), jnp.float32, sharding=NamedSharding(mesh, P("b", "a"))),
        "emb": jax.ShapeDtypeStruct((32, 8), jnp.bfloat16, sharding=NamedSharding(mesh, P("a"))),
        "bias": jax.ShapeDtypeStruct((16,), jnp.bfloat16, sharding=NamedSharding(mesh, P())),
    }
    tree = orbax_reader.read(directory, target)
    for key, value in tree.items():
        assert isinstance(value, jax.Array) and value.sharding == target[key].sharding
        assert _bits(value) == _bits(expected[key])
        for shard in value.addressable_shards:
            assert _bits(shard.data) == _bits(expected[key][shard.index])


def test_read_with_a_numpy_target_and_a_subset(saved):
    directory, expected = saved["plain"]
    tree = orbax_reader.read(directory, {"params": {"w": np.zeros((5, 3), np.float32)}})
    assert _bits(tree["params"]["w"]) == _bits(expected["params"]["w"])


def test_target_mismatches_are_listed(saved):
    directory, _ = saved["sharded"]
    bad = {"w": jax.ShapeDtypeStruct((64, 8), jnp.float32), "emb": jax.ShapeDtypeStruct((32, 8), jnp.float32)}
    with pytest.raises(InvalidArgumentError) as info:
        orbax_reader.read(directory, bad)
    assert "w: shape: checkpoint has [64, 16], target [64, 8]" in str(info.value)
    assert "emb: dtype: checkpoint has bfloat16, target float32" in str(info.value)
    with pytest.raises(NotFoundError, match="2 target leaves not found .*: deep/er, nope"):
        orbax_reader.read(directory, {"nope": np.zeros(1), "deep": {"er": np.zeros(1)}})


def test_a_step_directory_with_one_item_is_read(saved, tmp_path):
    directory, expected = saved["plain"]
    shutil.copytree(directory, tmp_path / "12" / "default")  # CheckpointManager's <step>/<item>
    _assert_tree_bits(orbax_reader.read(tmp_path / "12"), jax.tree.map(np.asarray, expected))


def test_not_an_orbax_checkpoint(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="has no _METADATA"):
        orbax_reader.read(tmp_path)


def test_a_missing_chunk_is_data_loss(tmp_path):
    tree = {"w": jax.device_put(np.arange(32, dtype=np.float32).reshape(8, 4), NamedSharding(_mesh(), P("x")))}
    ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False)).save(tmp_path / "c", args=ocp.args.PyTreeSave(tree))
    os.remove(tmp_path / "c" / "w" / "1.0")  # zarr v2: one file per chunk
    with pytest.raises(DataLossError, match="orbax leaf w"):
        orbax_reader.read(tmp_path / "c")


def test_malformed_metadata_is_data_loss():
    with pytest.raises(DataLossError, match="not JSON"):
        _orbax_layout.parse_metadata(b"{")
    with pytest.raises(DataLossError, match="unreadable key entry"):
        _orbax_layout.parse_metadata(json.dumps({"tree_metadata": {"x": {"key_metadata": [{"key": "a", "key_type": 9}]}}}).encode())
    leaf = _orbax_layout.OrbaxLeaf
    with pytest.raises(DataLossError, match="both a leaf and a node"):
        _orbax_layout.build_tree([leaf(keys=("a",), value_type="scalar"), leaf(keys=("a", "b"), value_type="scalar")], [1, 2])
    with pytest.raises(DataLossError, match="indices \\[0, 2\\]"):
        _orbax_layout.build_tree([leaf(keys=("a", 0), value_type="scalar"), leaf(keys=("a", 2), value_type="scalar")], [1, 2])


# ----------------------------------------------------------------------------- convert


def _cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """Runs the ``jaxsaver`` command in this process (its exit code and output)."""
    capsys.readouterr()
    code = cli.main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.mark.parametrize("name", ["plain", "sharded", "sharded_zarr3"])
def test_convert_from_orbax_then_tensorflow_reads_bit_exactly(saved, name, tmp_path, capsys):
    tf = pytest.importorskip("tensorflow")
    directory, expected = saved[name]
    prefix = str(tmp_path / "tf" / "model-1")
    if name == "plain":  # the command line once; the API (the same call) for the others
        run = _cli(capsys, "convert", "--from-orbax", str(directory), prefix)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == prefix
    else:
        assert convert.from_orbax(directory, prefix) == prefix
    reader = tf.train.load_checkpoint(prefix)
    names = jaxsaver.restore_as_numpy(prefix)
    for key, value in jax.tree_util.tree_flatten_with_path(expected)[0]:
        tensor_name = jaxsaver.saveables.key_path_to_name(key)
        assert _bits(reader.get_tensor(tensor_name)) == _bits(value), tensor_name
    _assert_tree_bits(jax.tree.leaves(names), jax.tree.leaves(jax.tree.map(np.asarray, expected)))
    if name.startswith("sharded"):  # one slice per block orbax wrote, never gathered: TF's partitioned layout
        metadata = json.loads((directory / "_METADATA").read_text())["tree_metadata"]
        with jaxsaver.BundleReader(prefix) as bundle:
            for key in ("w", "emb"):
                write_shape = tuple(metadata[f"('{key}',)"]["value_metadata"]["write_shape"])
                slices = bundle.stored_slices(key)
                assert len(slices) == np.prod(expected[key].shape) // np.prod(write_shape) > 1
                assert {tuple(length for _, length in extents) for extents in slices} == {write_shape}


def test_convert_to_orbax_round_trips_through_orbax(tmp_path, capsys):
    state = {"params": {"w": np.random.default_rng(2).standard_normal((4, 4)).astype(ml_dtypes.bfloat16)},
             "step": np.int64(3), "tag": "run-7"}
    prefix = jaxsaver.Saver(template=state).save(state, str(tmp_path / "ckpt" / "model"))
    run = _cli(capsys, "convert", "--to-orbax", prefix, str(tmp_path / "orbax"), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["format"] == "orbax"
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "orbax")
    assert _bits(restored["params"]["w"]) == _bits(state["params"]["w"])
    assert restored["tag"] == "run-7" and int(restored["step"]) == 3
    assert _bits(orbax_reader.read(tmp_path / "orbax")["params"]["w"]) == _bits(state["params"]["w"])


def test_convert_errors_are_one_line(tmp_path, capsys):
    run = _cli(capsys, "convert", "--from-orbax", str(tmp_path), str(tmp_path / "out" / "model"))
    assert run.returncode == 2
    assert run.stderr.startswith("jaxsaver convert: error: Not an orbax checkpoint")
    assert not (tmp_path / "out").exists()
    run = _cli(capsys, "convert", str(tmp_path), "x")
    assert run.returncode == 2 and "one of the arguments --from-orbax --to-orbax is required" in run.stderr


def test_convert_api_returns_the_prefix(saved, tmp_path):
    directory, expected = saved["zarr3"]
    prefix = convert.from_orbax(directory, tmp_path / "m")
    assert prefix == str(tmp_path / "m")
    assert _bits(jaxsaver.load_variable(prefix, "layers/1")) == _bits(expected["layers"][1])
