"""``Saver``: the seed's semantics (errors, retention, state file, graph, pytrees, dtypes, TF interop).

Every test goes through real checkpoint files under ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxsaver
from jaxsaver import InvalidArgumentError, NotFoundError, Saver, latest_checkpoint
from jaxsaver._proto import saver_pb2
from jaxsaver.checkpoint_management import get_checkpoint_state


# ----------------------------------------------------------------------------- helpers


def small_tree():
    return {
        "params": {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": jnp.ones((3,), jnp.float32)},
        "step": 7,
    }


def files_of(directory):
    return sorted(os.listdir(directory))


def files_with_prefix(directory, base):
    return sorted(f for f in os.listdir(directory) if f == base or f.startswith(base + "."))


def assert_bits_equal(a, b):
    """Same structure, and every leaf equal bit for bit (dtype and shape included)."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if isinstance(x, (str, bytes, bool, int, float)) and not isinstance(x, np.generic):
            assert type(x) is type(y) and x == y, (x, y)
            continue
        if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        xa, ya = np.asarray(x), np.asarray(y)
        assert xa.dtype == ya.dtype and xa.shape == ya.shape, (xa.dtype, ya.dtype, xa.shape, ya.shape)
        if xa.dtype == object:
            assert xa.tolist() == ya.tolist() and all(type(i) is bytes for i in xa.ravel())
        else:
            assert xa.tobytes() == ya.tobytes()


class FakeClock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@contextlib.contextmanager
def x64(enabled):
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


# ----------------------------------------------------------------------------- errors


def test_no_variables_to_save(tmp_path):
    with pytest.raises(ValueError, match="^No variables to save$"):
        Saver(template={})
    with pytest.raises(ValueError, match="^No variables to save$"):
        Saver(template={"a": None, "b": []})


def test_allow_empty_is_a_noop(tmp_path):
    saver = Saver(template={}, allow_empty=True)
    assert saver.save({}, str(tmp_path / "model"), global_step=1) is None
    assert not os.path.exists(tmp_path / "checkpoint")
    assert not os.path.exists(tmp_path / "model-1.index")
    assert saver.restore(str(tmp_path / "model-1")) == {}
    assert saver.restore(None) == {}  # a no-op even for None, as in the seed
    assert saver.last_checkpoints == []


def test_defer_build_with_var_list():
    tree = small_tree()
    with pytest.raises(
        ValueError,
        match=r"^If `var_list` is provided then build cannot be deferred\. "
        r"Either set defer_build=False or var_list=None\.$",
    ):
        Saver([tree["params"]["w"]], template=tree, defer_build=True)


def test_save_before_build_with_defer_build(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, defer_build=True)
    with pytest.raises(RuntimeError, match=r"^`build\(\)` should be called before save if defer_build==True$"):
        saver.save(tree, str(tmp_path / "model"))
    assert files_of(tmp_path) == []
    saver.build()
    prefix = saver.save(tree, str(tmp_path / "model"))
    assert prefix == str(tmp_path / "model")
    assert_bits_equal(saver.restore(prefix), tree)


def test_latest_filename_with_directory(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree)
    with pytest.raises(ValueError, match="^'latest_filename' must not contain path components$"):
        saver.save(tree, str(tmp_path / "model"), latest_filename="sub/checkpoint")
    assert files_of(tmp_path) == []


def test_save_path_collides_with_latest_filename(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree)
    path = str(tmp_path / "checkpoint")
    with pytest.raises(ValueError, match="'latest_filename' collides with 'save_path': 'checkpoint' and '"):
        saver.save(tree, path)
    with pytest.raises(ValueError, match="collides with"):
        saver.save(tree, str(tmp_path / "state"), latest_filename="state")
    assert files_of(tmp_path) == []
    # With a global step the names differ: allowed.
    assert saver.save(tree, path, global_step=1) == path + "-1"


def test_missing_parent_directory(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree)
    path = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(ValueError) as info:
        saver.save(tree, path)
    assert str(info.value) == f"Parent directory of {path} doesn't exist, can't save."
    with pytest.raises(ValueError, match="^Parent directory of .* doesn't exist, can't save\\.$"):
        saver.save(tree, path, global_step=3)


def test_restore_none_and_missing_prefix(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree)
    with pytest.raises(ValueError, match="^Can't load save_path when it is None\\.$"):
        saver.restore(None)
    missing = str(tmp_path / "model-1")
    with pytest.raises(ValueError) as info:
        saver.restore(missing)
    assert str(info.value).startswith(f"The passed save_path is not a valid checkpoint: {missing} ")
    assert f"looked for {missing}.index" in str(info.value)


def test_missing_keys_are_all_listed(tmp_path):
    prefix = Saver(template={"a": np.zeros(2, np.float32)}).save(
        {"a": np.zeros(2, np.float32)}, str(tmp_path / "model")
    )
    tree = {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32), "c": {"d": 1}}
    with pytest.raises(NotFoundError) as info:
        Saver(template=tree).restore(prefix)
    message = str(info.value)
    assert "'b'" in message and "'c/d'" in message and "'a'" not in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, jaxsaver.JaxsaverError)


def test_shape_and_dtype_mismatch_are_all_listed(tmp_path):
    saved = {
        "w": np.zeros((2, 3), np.float32),
        "v": np.zeros((4,), np.float32),
        "i": np.zeros((2,), np.int32),
        "ok": np.ones((2,), np.float32),
    }
    prefix = Saver(template=saved).save(saved, str(tmp_path / "model"))
    target = {
        "w": jnp.zeros((3, 2), jnp.float32),  # shape
        "v": np.zeros((4,), np.float64),  # dtype: never cast silently
        "i": jnp.zeros((2,), jnp.float32),  # dtype
        "ok": np.ones((2,), np.float32),
    }
    with pytest.raises(InvalidArgumentError) as info:
        Saver(template=target).restore(prefix)
    message = str(info.value)
    lines = [line.strip() for line in message.splitlines()]
    assert "w: shape: checkpoint has [2, 3], expected [3, 2]" in lines
    assert (
        "v: dtype: checkpoint has DT_FLOAT, expected DT_DOUBLE "
        "(tensor_name = v; expected dtype double does not equal original dtype float)"
    ) in lines
    assert (
        "i: dtype: checkpoint has DT_INT32, expected DT_FLOAT "
        "(tensor_name = i; expected dtype float does not equal original dtype int32)"
    ) in lines
    assert not any(line.startswith("ok") for line in lines)
    assert isinstance(info.value, ValueError)


def test_reshape_restores_into_other_shapes(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    prefix = Saver(template={"w": w}).save({"w": w}, str(tmp_path / "model"))
    for shape in [(3, 2), (6,)]:
        target = {"w": jnp.zeros(shape, jnp.float32)}
        with pytest.raises(InvalidArgumentError, match="shape"):
            Saver(template=target).restore(prefix)
        out = Saver(template=target, reshape=True).restore(prefix)
        assert out["w"].shape == shape and isinstance(out["w"], jax.Array)
        np.testing.assert_array_equal(np.asarray(out["w"]), w.reshape(shape))
        target_np = {"w": np.zeros(shape, np.float32)}
        out = Saver(template=target_np, reshape=True).restore(prefix)
        np.testing.assert_array_equal(out["w"], w.reshape(shape))
    # reshape never allows a different number of elements
    with pytest.raises(InvalidArgumentError, match="shape"):
        Saver(template={"w": np.zeros((5,), np.float32)}, reshape=True).restore(prefix)


def test_parent_created_when_grandparent_exists(tmp_path):
    # TF's bundle writer creates the (single) missing parent directory, like CreateDir.
    tree = small_tree()
    path = str(tmp_path / "new" / "model")
    assert Saver(template=tree).save(tree, path) == path
    assert latest_checkpoint(str(tmp_path / "new")) == path


# ----------------------------------------------------------------------------- retention


def test_max_to_keep_deletes_every_file_of_the_oldest(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, max_to_keep=2, sharded=True)
    d = str(tmp_path)
    s1 = saver.save(tree, os.path.join(d, "s1"))
    s1_files = files_with_prefix(d, "s1")
    assert "s1.index" in s1_files and "s1.meta" in s1_files
    assert sum(f.startswith("s1.data-") for f in s1_files) >= 1
    s2 = saver.save(tree, os.path.join(d, "s2"))
    s3 = saver.save(tree, os.path.join(d, "s3"))
    assert saver.last_checkpoints == [s2, s3]
    assert files_with_prefix(d, "s1") == []
    assert files_with_prefix(d, "s2") and files_with_prefix(d, "s3")
    state = get_checkpoint_state(d)
    assert state.model_checkpoint_path == s3
    assert list(state.all_model_checkpoint_paths) == [s2, s3]
    assert not any(f.endswith("_temp") for f in files_of(d))


def test_max_to_keep_non_sharded_multi_data_files(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, max_to_keep=1)
    d = str(tmp_path)
    saver.save(tree, os.path.join(d, "s1"))
    # Add an extra data file as a multi-shard checkpoint would have: all are deleted.
    with open(os.path.join(d, "s1.data-00001-of-00002"), "wb") as f:
        f.write(b"x")
    saver.save(tree, os.path.join(d, "s2"))
    assert files_with_prefix(d, "s1") == []
    assert saver.last_checkpoints == [os.path.join(d, "s2")]


def test_resaving_an_existing_name_moves_it_last(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, max_to_keep=2)
    d = str(tmp_path)
    s1 = saver.save(tree, os.path.join(d, "s1"))
    s2 = saver.save(tree, os.path.join(d, "s2"))
    assert saver.save(tree, os.path.join(d, "s1")) == s1
    assert saver.last_checkpoints == [s2, s1]
    assert files_with_prefix(d, "s1") and files_with_prefix(d, "s2")
    assert list(get_checkpoint_state(d).all_model_checkpoint_paths) == [s2, s1]
    s3 = saver.save(tree, os.path.join(d, "s3"))
    assert saver.last_checkpoints == [s1, s3]
    assert files_with_prefix(d, "s2") == []


@pytest.mark.parametrize("max_to_keep", [None, 0])
def test_max_to_keep_none_keeps_everything(tmp_path, max_to_keep):
    tree = small_tree()
    saver = Saver(template=tree, max_to_keep=max_to_keep)
    assert saver.as_saver_def().max_to_keep == 0
    d = str(tmp_path)
    prefixes = [saver.save(tree, os.path.join(d, "model"), global_step=i) for i in range(4)]
    assert saver.last_checkpoints == []
    for p in prefixes:
        assert jaxsaver.checkpoint_exists(p)
    state = get_checkpoint_state(d)
    assert state.model_checkpoint_path == prefixes[-1]
    assert list(state.all_model_checkpoint_paths) == [prefixes[-1]]


def test_keep_checkpoint_every_n_hours_with_injected_clock(tmp_path):
    # The seed: a checkpoint dropped from the list is kept on disk when it was written after
    # next_checkpoint_time (= build time + period), which then advances by one period.
    tree = small_tree()
    clock = FakeClock(1000.0)
    saver = Saver(template=tree, max_to_keep=2, keep_checkpoint_every_n_hours=1.0, clock=clock)
    d = str(tmp_path)
    saved = {}
    # build at t=1000 -> next_checkpoint_time = 4600
    for step, now in [(1, 1100.0), (2, 4000.0), (3, 4700.0), (4, 5000.0), (5, 5500.0), (6, 8300.0),
                      (7, 8400.0), (8, 8500.0)]:
        clock.now = now
        saved[step] = saver.save(tree, os.path.join(d, "model"), global_step=step)
    # model-1 (1100 <= 4600) deleted when 3 was saved; model-2 (4000) deleted at 4;
    # model-3 (4700 > 4600) preserved at 5 -> next 8200; model-4 (5000) deleted at 6;
    # model-5 (5500) deleted at 7; model-6 (8300 > 8200) preserved at 8 -> next 11800.
    exists = {step: jaxsaver.checkpoint_exists(p) for step, p in saved.items()}
    assert exists == {1: False, 2: False, 3: True, 4: False, 5: False, 6: True, 7: True, 8: True}
    assert saver.last_checkpoints == [saved[7], saved[8]]
    assert not os.path.exists(saved[2] + ".meta")
    assert os.path.exists(saved[3] + ".meta")


def test_recover_last_checkpoints_uses_mtimes_and_skips_vanished(tmp_path):
    tree = small_tree()
    d = str(tmp_path)
    first = Saver(template=tree, max_to_keep=5)
    prefixes = [first.save(tree, os.path.join(d, "model"), global_step=i) for i in range(3)]
    for i, p in enumerate(prefixes):
        os.utime(p + ".index", (1_000_000 + i * 10, 1_000_000 + i * 10))
    jaxsaver.remove_checkpoint(prefixes[1])
    saver = Saver(template=tree, max_to_keep=2)
    saver.recover_last_checkpoints(prefixes)
    assert saver.last_checkpoints == [prefixes[0], prefixes[2]]
    assert saver._retention.last_checkpoints == ((prefixes[0], 1_000_000.0), (prefixes[2], 1_000_020.0))
    p3 = saver.save(tree, os.path.join(d, "model"), global_step=3)
    assert saver.last_checkpoints == [prefixes[2], p3]
    assert not jaxsaver.checkpoint_exists(prefixes[0])


def test_set_last_checkpoints_never_deleted_by_hours_rule(tmp_path):
    tree = small_tree()
    d = str(tmp_path)
    old = Saver(template=tree).save(tree, os.path.join(d, "old"))
    saver = Saver(template=tree, max_to_keep=1)
    saver.set_last_checkpoints([old])
    assert saver.last_checkpoints == [old]
    new = saver.save(tree, os.path.join(d, "new"))
    assert saver.last_checkpoints == [new]
    assert jaxsaver.checkpoint_exists(old)  # timestamp +inf: preserved
    with pytest.raises(AssertionError):
        saver.set_last_checkpoints((old,))


def test_fresh_saver_never_deletes_unrecorded_checkpoints(tmp_path):
    tree = small_tree()
    d = str(tmp_path)
    model0 = Saver(template=tree).save(tree, os.path.join(d, "model"), global_step=0)
    saver = Saver(template=tree, max_to_keep=1)
    for step in (1, 2, 3):
        saver.save(tree, os.path.join(d, "model"), global_step=step)
    assert jaxsaver.checkpoint_exists(model0) and os.path.exists(model0 + ".meta")
    assert saver.last_checkpoints == [os.path.join(d, "model-3")]
    assert not jaxsaver.checkpoint_exists(os.path.join(d, "model-1"))


def test_write_state_false_records_nothing(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, max_to_keep=1)
    d = str(tmp_path)
    p = saver.save(tree, os.path.join(d, "model"), global_step=1, write_state=False, write_meta_graph=False)
    assert files_with_prefix(d, "model-1") == ["model-1.data-00000-of-00001", "model-1.index"]
    assert saver.last_checkpoints == [] and not os.path.exists(os.path.join(d, "checkpoint"))
    assert jaxsaver.checkpoint_exists(p)


# ----------------------------------------------------------------------------- names and state file


@pytest.mark.parametrize(
    "step", [5, np.int64(5), np.int32(5), np.array(5), jnp.array(5), jnp.array(5, jnp.uint32)],
    ids=["int", "np.int64", "np.int32", "np-0d", "jax-0d", "jax-uint32"],
)
def test_global_step_kinds(tmp_path, step):
    tree = small_tree()
    saver = Saver(template=tree)
    prefix = saver.save(tree, str(tmp_path / "model"), global_step=step)
    assert prefix == str(tmp_path / "model-5")
    assert jaxsaver.checkpoint_exists(prefix) and os.path.exists(prefix + ".meta")


def test_global_step_rejects_non_integers(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree)
    for bad in (1.5, jnp.array([1, 2]), "5"):
        with pytest.raises(ValueError):
            saver.save(tree, str(tmp_path / "model"), global_step=bad)


def test_pad_step_number(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, pad_step_number=True)
    prefix = saver.save(tree, str(tmp_path / "model"), global_step=5)
    assert prefix == str(tmp_path / "model-00000005")
    assert os.path.exists(prefix + ".index") and os.path.exists(prefix + ".meta")
    assert latest_checkpoint(str(tmp_path)) == prefix


def test_state_file_absolute_paths(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, max_to_keep=3)
    d = str(tmp_path)
    p1 = saver.save(tree, os.path.join(d, "model"), global_step=1)
    p2 = saver.save(tree, os.path.join(d, "model"), global_step=2)
    with open(os.path.join(d, "checkpoint")) as f:
        content = f.read()
    assert content == (
        f'model_checkpoint_path: "{p2}"\n'
        f'all_model_checkpoint_paths: "{p1}"\n'
        f'all_model_checkpoint_paths: "{p2}"\n'
    )
    # a custom state-file name
    saver.save(tree, os.path.join(d, "other"), latest_filename="my_state")
    assert get_checkpoint_state(d, "my_state").model_checkpoint_path == os.path.join(d, "other")
    assert latest_checkpoint(d) == p2


def test_save_relative_paths_survives_a_move(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, save_relative_paths=True, max_to_keep=3)
    d = str(tmp_path / "a")
    os.mkdir(d)
    saver.save(tree, os.path.join(d, "model"), global_step=1)
    saver.save(tree, os.path.join(d, "model"), global_step=2)
    with open(os.path.join(d, "checkpoint")) as f:
        content = f.read()
    assert content == (
        'model_checkpoint_path: "model-2"\n'
        'all_model_checkpoint_paths: "model-1"\n'
        'all_model_checkpoint_paths: "model-2"\n'
    )
    moved = str(tmp_path / "b")
    shutil.move(d, moved)
    latest = latest_checkpoint(moved)
    assert latest == os.path.join(moved, "model-2")
    restored = Saver(template=tree).restore(latest)
    assert_bits_equal(restored, tree)


def test_relative_save_path(tmp_path, monkeypatch):
    tree = small_tree()
    monkeypatch.chdir(tmp_path)
    os.mkdir("ckpts")
    saver = Saver(template=tree, max_to_keep=1)
    p1 = saver.save(tree, "ckpts/model", global_step=1)
    assert p1 == "ckpts/model-1"
    p2 = saver.save(tree, os.path.join("ckpts", "model"), global_step=2)
    assert saver.last_checkpoints == [p2]
    assert not os.path.exists("ckpts/model-1.index")
    with open("ckpts/checkpoint") as f:
        assert f.read() == 'model_checkpoint_path: "model-2"\nall_model_checkpoint_paths: "model-2"\n'
    assert latest_checkpoint("ckpts") == "ckpts/model-2"
    assert_bits_equal(saver.restore(latest_checkpoint("ckpts")), tree)
    # a bare relative name in the current directory
    p = Saver(template=tree).save(tree, "bare")
    assert p == "bare" and os.path.exists("bare.index") and os.path.exists("checkpoint")
    assert latest_checkpoint(".") == os.path.join(".", "bare")


# ----------------------------------------------------------------------------- graph & SaverDef


def test_compiles_once_for_many_filenames(tmp_path):
    mesh = jax.make_mesh((8,), ("x",))
    sharded = jax.device_put(jnp.arange(16.0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x")))
    tree = {"a": sharded, "b": jnp.ones((2, 2), jnp.bfloat16), "key": jax.random.key(1), "n": 3}
    saver = Saver(template=tree, max_to_keep=2)
    fn = saver.builder.snapshot_fn
    calls = []
    original = saver.builder._snapshot_fn

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    saver.builder._snapshot_fn = counting
    for i in range(5):
        tree = {**tree, "a": tree["a"] + 1}
        saver.save(tree, str(tmp_path / f"file{i}"))
    assert len(calls) == 5
    assert fn._cache_size() == 1
    assert_bits_equal(saver.restore(str(tmp_path / "file4")), tree)


def test_saver_def_fields():
    tree = small_tree()
    saver = Saver(template=tree, max_to_keep=3, keep_checkpoint_every_n_hours=2.5, sharded=True)
    sd = saver.as_saver_def()
    assert isinstance(sd, saver_pb2.SaverDef)
    assert sd.filename_tensor_name == "save/Const:0"
    assert sd.save_tensor_name == "save/save_all:0"
    assert sd.restore_op_name == "save/restore_all"
    assert sd.max_to_keep == 3
    assert sd.sharded is True
    assert sd.keep_checkpoint_every_n_hours == 2.5
    assert sd.version == saver_pb2.SaverDef.V2
    named = Saver(template=tree, name="my_saver").as_saver_def()
    assert named.filename_tensor_name == "my_saver/Const:0"
    assert named.restore_op_name == "my_saver/restore_all"
    assert Saver(template=tree, max_to_keep=None).as_saver_def().max_to_keep == 0


def test_saver_from_saver_def(tmp_path):
    tree = small_tree()
    original = Saver(template=tree, max_to_keep=2, keep_checkpoint_every_n_hours=3.0)
    sd = original.as_saver_def()
    again = Saver(saver_def=sd, template=tree)
    assert again.as_saver_def() == sd
    prefixes = [again.save(tree, str(tmp_path / "model"), global_step=i) for i in range(3)]
    assert again.last_checkpoints == prefixes[1:]  # max_to_keep from the SaverDef
    assert not jaxsaver.checkpoint_exists(prefixes[0])
    assert_bits_equal(again.restore(prefixes[-1]), tree)
    assert_bits_equal(original.restore(prefixes[-1]), tree)
    with pytest.raises(ValueError, match="saver_def must be a saver_pb2.SaverDef"):
        Saver(saver_def="not a proto")
    with pytest.raises(ValueError, match="must specify the restore_op_name"):
        Saver(saver_def=saver_pb2.SaverDef(save_tensor_name="save/save_all:0"))


def test_from_proto_with_import_scope_and_to_proto(tmp_path):
    tree = small_tree()
    sd = Saver(template=tree).as_saver_def()
    scoped = Saver.from_proto(sd, import_scope="scope", template=tree)
    ssd = scoped.as_saver_def()
    assert ssd.filename_tensor_name == "scope/save/Const:0"
    assert ssd.save_tensor_name == "scope/save/save_all:0"
    assert ssd.restore_op_name == "scope/save/restore_all"
    assert sd.filename_tensor_name == "save/Const:0"  # the caller's proto is not modified
    assert scoped.graph.op("scope/save/Const:0")() == "model"
    prefix = scoped.save(tree, str(tmp_path / "model"), global_step=1)
    assert prefix == str(tmp_path / "model-1")
    assert_bits_equal(scoped.restore(prefix), tree)
    stripped = scoped.to_proto(export_scope="scope")
    assert stripped.filename_tensor_name == "save/Const:0"
    assert stripped.save_tensor_name == "save/save_all:0"
    assert stripped.restore_op_name == "save/restore_all"
    assert scoped.to_proto() == ssd
    assert scoped.to_proto(export_scope="other") is None
    assert Saver(template=tree).to_proto(export_scope="scope") is None
    # the stripped proto rebuilds a working saver again
    assert_bits_equal(Saver.from_proto(stripped, template=tree).restore(prefix), tree)


def test_graph_ops(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree, filename=str(tmp_path / "default"))
    graph = saver.graph
    assert graph.op("save/Const:0")() == str(tmp_path / "default")
    assert graph.op("save/Const")("x") == "x"
    leaves = jaxsaver.saveables.flatten_values(tree, saver.saveables)
    target = str(tmp_path / "override")
    assert graph.run("save/save_all", leaves, filename=target) == target
    assert jaxsaver.checkpoint_exists(target)
    assert not jaxsaver.checkpoint_exists(str(tmp_path / "default"))
    assert graph.run("save/save_all", leaves) == str(tmp_path / "default")
    assert jaxsaver.checkpoint_exists(str(tmp_path / "default"))
    restored = graph.run("save/restore_all", filename=target)
    assert [s.name for s in saver.saveables] == ["params/b", "params/w", "step"]
    np.testing.assert_array_equal(np.asarray(restored[1]), np.asarray(tree["params"]["w"]))
    assert restored[2] == 7
    with pytest.raises(NotFoundError, match="not in saver graph"):
        graph.op("save/nope")


def test_restore_without_template_returns_numpy_dict(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree)
    prefix = saver.save(tree, str(tmp_path / "model"))
    bare = Saver.from_proto(saver.as_saver_def())
    out = bare.restore(prefix)
    assert set(out) == {"params", "step"} and set(out["params"]) == {"w", "b"}
    assert isinstance(out["params"]["w"], np.ndarray) and out["params"]["w"].dtype == np.float32
    np.testing.assert_array_equal(out["params"]["w"], np.asarray(tree["params"]["w"]))
    assert out["step"].dtype == np.int64 and out["step"] == 7
    assert jaxsaver.restore_as_numpy(prefix)["step"] == 7
    # it then builds from the first values it saves
    assert bare.save(tree, str(tmp_path / "again")) == str(tmp_path / "again")
    assert_bits_equal(bare.restore(str(tmp_path / "again")), tree)


def test_restore_as_numpy_name_conflicts(tmp_path):
    prefix = str(tmp_path / "model")
    with jaxsaver.BundleWriter(prefix) as writer:
        writer.add("a", np.array(1.0, np.float32))
        writer.add("a/b", np.arange(3))
        writer.add("c/d/e", np.array(2, np.int32))
    out = jaxsaver.restore_as_numpy(prefix)
    assert set(out) == {"a", "a/b", "c"}
    assert out["c"]["d"]["e"] == 2
    np.testing.assert_array_equal(out["a/b"], np.arange(3))


# ----------------------------------------------------------------------------- pytrees


def test_flax_linen_train_state_round_trip(tmp_path):
    import optax
    from flax import linen as nn
    from flax.training import train_state

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(4)(x)))

    model = MLP()
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)
    params = model.init(jax.random.key(0), x)
    tx = optax.adam(1e-2)

    def make():
        return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    state = make()

    def loss(p):
        return jnp.mean(state.apply_fn(p, x) ** 2)

    for _ in range(2):
        state = state.apply_gradients(grads=jax.grad(loss)(state.params))
    saver = Saver(template=make(), max_to_keep=2)
    names = [s.name for s in saver.saveables]
    assert "params/params/Dense_0/kernel" in names
    assert "opt_state/0/mu/params/Dense_1/bias" in names and "opt_state/0/count" in names
    prefix = saver.save(state, str(tmp_path / "model"), global_step=state.step)
    assert prefix.endswith("model-2")
    restored = saver.restore(latest_checkpoint(str(tmp_path)))
    assert isinstance(restored, train_state.TrainState) and restored.step == 2
    assert_bits_equal(restored, state)
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), restored, state)
    assert all(jax.tree.leaves(same))


def test_flax_nnx_state_round_trip(tmp_path):
    from flax import nnx

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    saver = Saver(template=state)
    assert sorted(s.name for s in saver.saveables) == ["bias", "kernel"]
    prefix = saver.save(state, str(tmp_path / "model"))
    other = nnx.Linear(3, 2, rngs=nnx.Rngs(1))
    restored = saver.restore(prefix, target=nnx.state(other))
    assert_bits_equal(jax.tree.leaves(restored), jax.tree.leaves(state))
    nnx.update(other, restored)
    x = jnp.ones((1, 3))
    np.testing.assert_array_equal(np.asarray(other(x)), np.asarray(model(x)))


def test_subset_saver_list_form(tmp_path):
    full = {"params": {"w": jnp.full((2,), 1.0), "b": jnp.full((2,), 2.0)}, "step": 1}
    prefix = Saver(template=full).save(full, str(tmp_path / "full"))
    target = {"params": {"w": jnp.zeros((2,)), "b": jnp.zeros((2,))}, "step": 0}
    subset = Saver([target["params"]["w"]], template=target)
    assert [s.name for s in subset.saveables] == ["params/w"]
    out = subset.restore(prefix, target=target)
    np.testing.assert_array_equal(np.asarray(out["params"]["w"]), [1.0, 1.0])
    assert out["params"]["b"] is target["params"]["b"] and out["step"] == 0
    out = subset.restore(prefix)  # the template as the target
    np.testing.assert_array_equal(np.asarray(out["params"]["w"]), [1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(out["params"]["b"]), [0.0, 0.0])
    # a subset save writes only its keys
    p2 = subset.save(full, str(tmp_path / "subset"))
    assert sorted(jaxsaver.restore_as_numpy(p2)) == ["params"]
    assert sorted(jaxsaver.restore_as_numpy(p2)["params"]) == ["w"]


def test_subset_saver_dict_form(tmp_path):
    full = {"params": {"w": jnp.full((2,), 1.0), "b": jnp.full((2,), 2.0)}, "step": 1}
    prefix = Saver(template=full).save(full, str(tmp_path / "full"))
    subset = Saver({"params/w": jnp.zeros((2,)), "step": 0})
    assert sorted(s.name for s in subset.saveables) == ["params/w", "step"]
    out = subset.restore(prefix)
    assert set(out) == {"params/w", "step"} and out["step"] == 1
    np.testing.assert_array_equal(np.asarray(out["params/w"]), [1.0, 1.0])
    # save with the dict form writes its own names
    p2 = subset.save({"params/w": jnp.full((2,), 5.0), "step": 3}, str(tmp_path / "subset"))
    np.testing.assert_array_equal(jaxsaver.restore_as_numpy(p2)["params"]["w"], [5.0, 5.0])
    with pytest.raises(NotFoundError, match="params/b"):  # the full saver cannot restore the subset
        Saver(template=full).restore(p2)


# ----------------------------------------------------------------------------- TF interop


def test_tensorflow_reads_jaxsaver_checkpoints(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tree = {
        "params": {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)},
        "i64": np.array([2**40, -3], np.int64),
        "name": "héllo",
        "step": 9,
    }
    saver = Saver(template=tree)
    d = str(tmp_path)
    prefix = saver.save(tree, os.path.join(d, "model"), global_step=9)
    assert tf.train.latest_checkpoint(d) == prefix
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    assert shapes == {"params/w": [2, 3], "i64": [2], "name": [], "step": []}
    np.testing.assert_array_equal(reader.get_tensor("params/w"), np.asarray(tree["params"]["w"]))
    np.testing.assert_array_equal(reader.get_tensor("i64"), tree["i64"])
    assert reader.get_tensor("name") == "héllo".encode()
    assert reader.get_tensor("step") == 9
    assert tf.train.get_checkpoint_state(d).model_checkpoint_path == prefix


def test_jaxsaver_restores_tf1_saver_checkpoints(tmp_path):
    tf = pytest.importorskip("tensorflow")
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    d = str(tmp_path)
    with tf.Graph().as_default():
        vw = tf.compat.v1.get_variable("params/w", initializer=tf.constant(w))
        vb = tf.compat.v1.get_variable("params/b", initializer=tf.constant([1.5, 2.5], tf.float64))
        vs = tf.compat.v1.get_variable("step", initializer=tf.constant(42, tf.int64))
        tf_saver = tf.compat.v1.train.Saver([vw, vb, vs])
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf_prefix = tf_saver.save(sess, os.path.join(d, "tfmodel"), global_step=3)
    assert latest_checkpoint(d) == tf_prefix
    template = {"params": {"w": jnp.zeros((2, 3)), "b": np.zeros(2)}, "step": 0}
    out = Saver(template=template).restore(latest_checkpoint(d))
    np.testing.assert_array_equal(np.asarray(out["params"]["w"]), w)
    assert out["params"]["w"].dtype == jnp.float32
    np.testing.assert_array_equal(out["params"]["b"], [1.5, 2.5])
    assert out["step"] == 42 and type(out["step"]) is int
    # and jaxsaver's retention takes over the TF state file
    saver = Saver(template=template, max_to_keep=1)
    p = saver.save(out, os.path.join(d, "tfmodel"), global_step=4)
    assert tf.train.latest_checkpoint(d) == p


# ----------------------------------------------------------------------------- dtypes


def _dtype_tree():
    return {
        "i64": np.array([2**62 + 1, -(2**62) - 3], np.int64),
        "u64": np.array([2**64 - 1, 2**63 + 5], np.uint64),
        "f64": np.array([1 / 3, 1e300, np.pi], np.float64),
        "i64s": np.int64(2**53 + 1),
        "u64s": np.uint64(2**64 - 2),
        "f64s": np.float64(0.1),
        "pyfloat": 1 / 3,
        "pyint": 2**62 + 7,
        "pybool": True,
        "bf16": jnp.array([1.5, -2.25, 3.0e38], jnp.bfloat16),
        "bf16np": np.array([0.1, 7.0], ml_dtypes.bfloat16),
        "key": jax.random.key(0),
        "rbg": jax.random.key(3, impl="rbg"),
        "legacy": jax.random.PRNGKey(0),
        "text": "naïve ✓",
        "raw": b"\x00\xffbytes",
        "strs": np.array([b"a", "bc".encode()], dtype=object),
    }


@pytest.mark.parametrize("enable_x64", [False, True], ids=["x64-off", "x64-on"])
def test_dtypes_round_trip_exactly(tmp_path, enable_x64):
    with x64(enable_x64):
        tree = _dtype_tree()
        if enable_x64:
            tree["jf64"] = jnp.array([1 / 3, 1e-300], jnp.float64)
            tree["ji64"] = jnp.array([2**62 + 1], jnp.int64)
            tree["ju64"] = jnp.array([2**64 - 1], jnp.uint64)
        saver = Saver(template=tree)
        prefix = saver.save(tree, str(tmp_path / "model"))
        stored = jaxsaver.restore_as_numpy(prefix)
        assert stored["i64"].dtype == np.int64 and stored["u64"].dtype == np.uint64
        assert stored["f64"].dtype == np.float64 and stored["pyfloat"].dtype == np.float64
        assert stored["pyint"].dtype == np.int64 and stored["pyint"] == 2**62 + 7
        assert stored["bf16"].dtype == ml_dtypes.bfloat16
        assert stored["legacy"].dtype == np.uint32 and stored["key"].dtype == np.uint32
        restored = saver.restore(prefix)
        assert_bits_equal(restored, tree)
        assert type(restored["pyfloat"]) is float and type(restored["pyint"]) is int
        assert type(restored["pybool"]) is bool
        assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
        assert jax.random.key_impl(restored["rbg"]) == jax.random.key_impl(tree["rbg"])
        np.testing.assert_array_equal(
            jax.random.uniform(restored["key"], (3,)), jax.random.uniform(tree["key"], (3,))
        )
        assert restored["text"] == "naïve ✓" and restored["raw"] == b"\x00\xffbytes"
        if enable_x64:
            assert restored["jf64"].dtype == jnp.float64
    # what was saved with x64 on reads back with x64 off (no 64-bit jax leaves in the template)
    if enable_x64:
        plain = _dtype_tree()
        assert_bits_equal(Saver(template=plain).restore(prefix), plain)


def test_numpy_str_array_keeps_its_dtype(tmp_path):
    tree = {"strs": np.array([["a", "bc"], ["héllo", ""]]), "raw": np.array([b"x", b"yz\xff"])}
    saver = Saver(template=tree)
    out = saver.restore(saver.save(tree, str(tmp_path / "model")))
    np.testing.assert_array_equal(out["raw"], tree["raw"])
    np.testing.assert_array_equal(out["strs"], tree["strs"])
    assert out["strs"].dtype == tree["strs"].dtype and out["raw"].dtype == tree["raw"].dtype


def test_x64_off_never_stores_32_bit(tmp_path):
    with x64(False):
        tree = {"f": 0.1, "i": 2**40, "a": np.float64(0.1), "b": np.arange(3, dtype=np.int64)}
        prefix = Saver(template=tree).save(tree, str(tmp_path / "model"))
    with x64(True):
        out = jaxsaver.restore_as_numpy(prefix)
    assert out["f"].dtype == np.float64 and out["f"] == 0.1
    assert out["i"].dtype == np.int64 and out["i"] == 2**40
    assert out["b"].dtype == np.int64


# ----------------------------------------------------------------------------- placement


def test_restore_follows_target_shardings(tmp_path):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((4, 2), ("x", "y"))
    a = jax.device_put(jnp.arange(32.0).reshape(8, 4), NamedSharding(mesh, P("x", "y")))
    tree = {"a": a, "k": jax.random.key(0)}
    saver = Saver(template=tree, sharded=True)
    prefix = saver.save(tree, str(tmp_path / "model"))
    assert saver.restore(prefix)["a"].sharding == a.sharding
    target = {
        "a": jax.device_put(jnp.zeros((8, 4)), NamedSharding(mesh, P(None, "x"))),
        "k": jax.device_put(jax.random.key(1), NamedSharding(mesh, P())),
    }
    out = saver.restore(prefix, target=target)
    assert out["a"].sharding == target["a"].sharding
    assert out["k"].sharding == target["k"].sharding
    assert_bits_equal(out, tree | {"a": out["a"]})
    np.testing.assert_array_equal(np.asarray(out["a"]), np.asarray(a))
    # a template whose key lives on a mesh restores without a target too
    out = Saver(template=target).restore(prefix)
    assert out["k"].sharding == target["k"].sharding and out["a"].sharding == target["a"].sharding


def test_leaves_committed_to_different_devices(tmp_path):
    devices = jax.devices()
    tree = {
        "k1": jax.device_put(jax.random.key(5), devices[1]),
        "k3": jax.device_put(jax.random.key(6), devices[3]),
        "x": jax.device_put(jnp.ones(2), devices[2]),
        "y": jnp.zeros(3),  # uncommitted
    }
    saver = Saver(template=tree)
    prefix = saver.save(tree, str(tmp_path / "model"))
    out = saver.restore(prefix)
    assert_bits_equal(out, tree)
    assert {k: v.devices() for k, v in out.items()} == {k: v.devices() for k, v in tree.items()}


def test_global_step_bool_like_the_seed(tmp_path):
    tree = small_tree()
    assert Saver(template=tree).save(tree, str(tmp_path / "model"), global_step=True) == str(tmp_path / "model-1")


def test_save_path_as_pathlike_and_bytes(tmp_path):
    tree = small_tree()
    saver = Saver(template=tree)
    assert saver.save(tree, tmp_path / "p", global_step=2) == str(tmp_path / "p-2")
    assert saver.save(tree, str(tmp_path / "b").encode()) == str(tmp_path / "b")
    assert_bits_equal(saver.restore(tmp_path / "p-2"), tree)


def test_bad_values_write_nothing(tmp_path):
    full = {"params": {"w": jnp.ones(2), "b": jnp.zeros(2)}, "step": 1}
    saver = Saver(template=full, sharded=True, max_to_keep=1)
    with pytest.raises(InvalidArgumentError, match=r"params/w: value has float32\[3\]"):
        saver.save({"params": {"w": jnp.ones(3), "b": jnp.zeros(2)}, "step": 1}, str(tmp_path / "bad"))
    with pytest.raises(InvalidArgumentError, match="missing: step"):
        saver.save({"params": full["params"]}, str(tmp_path / "bad"))
    assert files_of(tmp_path) == [] and saver.last_checkpoints == []


def test_dict_var_list_with_template(tmp_path):
    full = {"params": {"w": jnp.full((2,), 3.0), "b": jnp.full((2,), 4.0)}, "step": 1}
    prefix = Saver(template=full).save(full, str(tmp_path / "full"))
    target = {"params": {"w": jnp.zeros(2), "b": jnp.zeros(2)}, "step": 0}
    subset = Saver({"params/w": target["params"]["w"]}, template=target)
    out = subset.restore(prefix)
    np.testing.assert_array_equal(np.asarray(out["params"]["w"]), [3.0, 3.0])
    assert out["params"]["b"] is target["params"]["b"] and out["step"] == 0
    p = subset.save(full, str(tmp_path / "subset"))
    assert jaxsaver.restore_as_numpy(p).keys() == {"params"}
    assert jaxsaver.restore_as_numpy(p)["params"].keys() == {"w"}


def test_copy_snapshot_builder_saves_device_copies(tmp_path):
    """A builder with copy_snapshot=True copies arrays on device first; values are unchanged."""
    from jaxsaver import SaverBuilder

    state = {"w": jnp.arange(12.0).reshape(3, 4), "key": jax.random.key(3)}
    builder = SaverBuilder(copy_snapshot=True)
    saver = Saver(template=state, builder=builder)
    for k in range(3):
        saver.save(state, str(tmp_path / f"m{k}"))
    assert builder.snapshot_fn._cache_size() == 1
    restored = saver.restore(str(tmp_path / "m2"))
    assert np.array_equal(np.asarray(restored["w"]), np.asarray(state["w"]))
    assert np.array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(state["key"]))


def test_numpy_value_for_a_jax_leaf_is_saved_and_checked(tmp_path):
    """Values may hold a host array where the template has a jax.Array (same shape and dtype)."""
    template = {"w": jnp.zeros((2, 3), jnp.float32)}
    saver = Saver(template=template)
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    restored = saver.restore(saver.save({"w": host}, str(tmp_path / "m")))
    assert isinstance(restored["w"], jax.Array)
    np.testing.assert_array_equal(np.asarray(restored["w"]), host)
    with pytest.raises(InvalidArgumentError, match="w"):
        saver.save({"w": host.astype(np.float64)}, str(tmp_path / "bad"))
