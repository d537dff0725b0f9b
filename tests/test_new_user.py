"""What a new user hit (issue: silent drops, ignored targets, renames, prefix/directory traps, TF parity).

Each test reproduces the old behaviour through real files and pins the fixed one.
"""

import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxsaver
from jaxsaver import (
    CheckpointNotFoundError,
    InvalidArgumentError,
    NotACheckpointError,
    NotFoundError,
    Saver,
    latest_checkpoint,
)


def _state():
    return {"w": jnp.arange(12, dtype=jnp.float32).reshape(4, 3), "step": 3}


# ----------------------------------------------------------------------------- 1. silent drops


def test_save_refuses_a_leaf_the_template_lacks(tmp_path):
    saver = Saver(template=_state())
    grown = {**_state(), "new_field": jnp.ones(2), "other": 1.0}
    with pytest.raises(InvalidArgumentError) as info:
        saver.save(grown, tmp_path / "m")
    assert "unexpected: new_field" in str(info.value) and "unexpected: other" in str(info.value)
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_second_save_of_a_saver_built_from_its_first_values_refuses_a_grown_tree(tmp_path):
    saver = Saver()
    saver.save(_state(), tmp_path / "m", global_step=1)
    with pytest.raises(InvalidArgumentError, match="unexpected: new_field"):
        saver.save({**_state(), "new_field": jnp.ones(2)}, tmp_path / "m", global_step=2)
    assert latest_checkpoint(tmp_path) == str(tmp_path / "m-1")


def test_save_lists_every_missing_leaf(tmp_path):
    saver = Saver(template={"a": 1, "b": 2.0, "c": jnp.ones(2)})
    with pytest.raises(InvalidArgumentError) as info:
        saver.save({"a": 1}, tmp_path / "m")
    assert "missing: b" in str(info.value) and "missing: c" in str(info.value)


def test_a_subset_saver_still_saves_part_of_a_bigger_tree(tmp_path):
    state = _state()
    saver = Saver([state["w"]], template=state)
    prefix = saver.save(state, tmp_path / "m")
    assert [name for name, _ in jaxsaver.list_variables(prefix)] == ["w"]


# ----------------------------------------------------------------------------- 2. restore targets


def test_restore_checks_the_targets_shapes_and_dtypes(tmp_path):
    saver = Saver(template=_state())
    prefix = saver.save(_state(), tmp_path / "m")
    target = {"w": jax.ShapeDtypeStruct((4, 4), jnp.bfloat16), "step": 0}
    with pytest.raises(InvalidArgumentError) as info:
        saver.restore(prefix, target=target)
    message = str(info.value)
    assert "w: dtype: checkpoint has DT_FLOAT, expected DT_BFLOAT16" in message
    assert "w: shape: checkpoint has [4, 3], expected [4, 4]" in message


def test_restore_target_with_reshape(tmp_path):
    saver = Saver(template=_state(), reshape=True)
    prefix = saver.save(_state(), tmp_path / "m")
    out = saver.restore(prefix, target={"w": jnp.zeros((2, 6), jnp.float32), "step": 0})
    assert out["w"].shape == (2, 6)
    np.testing.assert_array_equal(np.asarray(out["w"]).reshape(-1), np.arange(12, dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match=r"w: shape: checkpoint has \[4, 3\], expected \[5, 3\]"):
        saver.restore(prefix, target={"w": jnp.zeros((5, 3), jnp.float32), "step": 0})


def test_restore_returns_the_targets_kind(tmp_path):
    saver = Saver(template=_state())
    prefix = saver.save(_state(), tmp_path / "m")
    out = saver.restore(prefix, target={"w": np.zeros((4, 3), np.float32), "step": 0})
    assert isinstance(out["w"], np.ndarray) and out["step"] == 3


# ----------------------------------------------------------------------------- 3. renames


def test_var_list_renames_with_a_template_both_ways(tmp_path):
    state = _state()
    saver = Saver({"renamed/w": state["w"], "global_step": state["step"]}, template=state)
    prefix = saver.save(state, tmp_path / "m")
    assert dict(jaxsaver.list_variables(prefix)) == {"global_step": [], "renamed/w": [4, 3]}
    restored = saver.restore(prefix, target={"w": jnp.zeros((4, 3), jnp.float32), "step": 0})
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert restored["step"] == 3


def test_loading_tf1_names_into_a_flax_tree(tmp_path):
    # A TF1-style checkpoint: names that are not the tree's key paths.
    tf1 = {"dense/kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "dense/bias": np.ones(3, np.float32)}
    with jaxsaver.BundleWriter(str(tmp_path / "tf1")) as writer:
        for name, value in tf1.items():
            writer.add(name, value)
    params = {"params": {"Dense_0": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}}
    dense = params["params"]["Dense_0"]
    saver = Saver({"dense/kernel": dense["kernel"], "dense/bias": dense["bias"]}, template=params)
    out = saver.restore(str(tmp_path / "tf1"))
    np.testing.assert_array_equal(out["params"]["Dense_0"]["kernel"], tf1["dense/kernel"])
    np.testing.assert_array_equal(out["params"]["Dense_0"]["bias"], tf1["dense/bias"])


def test_rename_of_a_value_not_in_the_template_names_it():
    with pytest.raises(InvalidArgumentError, match="renamed: the value is not in the tree"):
        Saver({"renamed": jnp.ones(3)}, template=_state())


# ----------------------------------------------------------------------------- 4. prefix or directory


def test_restore_accepts_a_directory(tmp_path):
    saver = Saver(template=_state())
    saver.save(_state(), tmp_path / "m", global_step=1)
    saver.save({**_state(), "step": 9}, tmp_path / "m", global_step=2)
    assert saver.restore(tmp_path)["step"] == 9
    assert jaxsaver.restore_as_numpy(tmp_path)["step"] == 9


def test_restore_of_a_missing_prefix_says_what_was_looked_for_and_what_is_near(tmp_path):
    saver = Saver(template=_state())
    saver.save(_state(), tmp_path / "model", global_step=10)
    with pytest.raises(NotACheckpointError) as info:
        saver.restore(tmp_path / "model-1")
    message = str(info.value)
    assert message.startswith(f"The passed save_path is not a valid checkpoint: {tmp_path / 'model-1'}")
    assert f"looked for {tmp_path / 'model-1'}.index" in message
    assert str(tmp_path / "model-10") in message


def test_restore_of_a_directory_without_checkpoints(tmp_path):
    with pytest.raises(NotACheckpointError, match="it holds no checkpoint"):
        jaxsaver.restore_as_numpy(tmp_path)


@pytest.mark.parametrize("suffix", ["/", ""])
def test_save_into_a_directory_path_is_refused_with_a_hint(tmp_path, suffix):
    (tmp_path / "ck").mkdir()
    saver = Saver(template=_state())
    with pytest.raises(InvalidArgumentError, match="names a directory, not a checkpoint prefix") as info:
        saver.save(_state(), str(tmp_path / "ck") + suffix)
    assert os.path.join(str(tmp_path / "ck"), "model") in str(info.value)
    assert os.listdir(tmp_path / "ck") == []


# ----------------------------------------------------------------------------- 5./9. typed errors, TF parity


def test_not_a_checkpoint_is_typed_and_still_a_value_error(tmp_path):
    saver = Saver(template=_state())
    with pytest.raises(NotACheckpointError) as info:
        saver.restore(tmp_path / "nope")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, NotFoundError) and isinstance(info.value, CheckpointNotFoundError)


def test_checkpoint_not_found_is_a_not_found_error():
    assert issubclass(CheckpointNotFoundError, NotFoundError)
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)


def test_parent_directory_that_is_a_file_gives_tfs_message(tmp_path):
    (tmp_path / "file").write_text("x")
    saver = Saver(template=_state())
    with pytest.raises(ValueError, match=r"^Parent directory of .*/file/model doesn't exist, can't save\.$"):
        saver.save(_state(), tmp_path / "file" / "model")


def test_missing_keys_start_with_tfs_phrase_and_list_all(tmp_path):
    Saver(template={"a": jnp.ones(2)}).save({"a": jnp.ones(2)}, tmp_path / "m")
    saver = Saver(template={"a": jnp.ones(2), "b": jnp.ones(2), "c": 1})
    with pytest.raises(NotFoundError) as info:
        saver.restore(tmp_path / "m")
    message = str(info.value)
    assert message.startswith("Key b not found in checkpoint")
    assert "'b'" in message and "'c'" in message


def test_dtype_error_carries_tfs_original_dtype_wording(tmp_path):
    Saver(template={"a": jnp.ones(2, jnp.float32)}).save({"a": jnp.ones(2, jnp.float32)}, tmp_path / "m")
    saver = Saver(template={"a": jnp.ones(2, jnp.int32)})
    with pytest.raises(InvalidArgumentError) as info:
        saver.restore(tmp_path / "m")
    assert "expected dtype int32 does not equal original dtype float" in str(info.value)
    assert "a: dtype: checkpoint has DT_FLOAT, expected DT_INT32" in str(info.value)


# ----------------------------------------------------------------------------- weak types through files


@pytest.mark.parametrize("sharded", [False, True])
def test_weak_typed_leaves_round_trip_through_files(tmp_path, sharded):
    state = {"lr": jnp.asarray(0.5), "scale": jnp.asarray(2.0, dtype=jnp.float32)}
    assert state["lr"].weak_type and not state["scale"].weak_type
    saver = Saver(template=state, sharded=sharded)
    prefix = saver.save(state, tmp_path / "m")
    out = Saver(template=state, sharded=sharded).restore(prefix)
    assert out["lr"].weak_type and not out["scale"].weak_type
    assert float(out["lr"]) == 0.5 and out["lr"].dtype == state["lr"].dtype


def test_bfloat16_round_trips_bit_exactly(tmp_path):
    values = jnp.asarray(np.linspace(-3, 3, 7).astype(ml_dtypes.bfloat16))
    saver = Saver(template={"x": values})
    out = saver.restore(saver.save({"x": values}, tmp_path / "m"))
    assert out["x"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out["x"]).view(np.uint16), np.asarray(values).view(np.uint16))
