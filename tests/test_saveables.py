"""Tests for jaxsaver.saveables: naming, var_list, leaf kinds and host round trips."""

from __future__ import annotations

import doctest
import typing

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxsaver import saveables as sv
from jaxsaver._errors import InvalidArgumentError
from jaxsaver.saveables import (
    LeafKind,
    Saveable,
    flatten_values,
    key_path_to_name,
    leaf_kind,
    saveables_from_pytree,
    unflatten_like,
)


def names(tree, var_list=None):
    return [s.name for s in saveables_from_pytree(tree, var_list)]


def round_trip(tree):
    """Saveables of tree, each leaf through to_host -> numpy -> from_host, rebuilt."""
    saveables = saveables_from_pytree(tree)
    leaves = flatten_values(tree, saveables)
    restored = {}
    for s, leaf in zip(saveables, leaves):
        host = np.asarray(s.to_host(leaf))
        assert host.dtype == s.dtype and host.shape == s.shape
        restored[s.name] = s.from_host(host.copy())
    return unflatten_like(tree, saveables, restored)


def test_doctests():
    result = doctest.testmod(sv, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- naming


def test_nested_dicts_lists_tuples_and_none():
    tree = {"a": {"b": [1, (2.0, None, "s")], "c": None}, "d": np.zeros(2), "e": {3: b"x"}}
    assert names(tree) == ["a/b/0", "a/b/1/0", "a/b/1/2", "d", "e/3"]


def test_key_path_to_name_entries():
    tu = jax.tree_util
    path = (tu.DictKey("x"), tu.SequenceKey(2), tu.GetAttrKey("mu"), tu.FlattenedIndexKey(4), tu.DictKey(7))
    assert key_path_to_name(path) == "x/2/mu/4/7"


def test_slash_in_keys_kept_verbatim():
    assert names({"mlp/~/linear": {"w": 1}}) == ["mlp/~/linear/w"]


def test_duplicate_name_error_lists_both_paths():
    with pytest.raises(ValueError, match="same name: a/b") as e:
        saveables_from_pytree({"a/b": 1, "a": {"b": 2}})
    msg = str(e.value)
    assert "['a/b']" in msg and "['a']['b']" in msg


def test_empty_key_component_error():
    with pytest.raises(InvalidArgumentError, match=r"\['a'\]\[''\]"):
        saveables_from_pytree({"a": {"": 1}})


def test_bare_leaf_error():
    with pytest.raises(InvalidArgumentError, match="var_list"):
        saveables_from_pytree(jnp.ones(3))


def test_unsupported_leaf_type_names_path():
    class Foo:
        pass

    with pytest.raises(InvalidArgumentError, match=r"\['x'\]\[0\].*Foo"):
        saveables_from_pytree({"x": [Foo()]})


def test_flax_struct_dataclass_fields():
    from flax import struct

    @struct.dataclass
    class Box:
        w: jax.Array
        meta: dict
        name: str = struct.field(pytree_node=False, default="static")

    tree = {"box": Box(w=jnp.ones(2), meta={"k": 1})}
    assert names(tree) == ["box/w", "box/meta/k"]
    out = round_trip(tree)
    assert out["box"].name == "static" and out["box"].meta == {"k": 1}


def test_train_state_with_optax_adam():
    import flax.linen as nn
    import optax
    from flax.training import train_state

    model = nn.Dense(3)
    params = model.init(jax.random.key(0), jnp.ones((1, 2)))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
    got = names(state)
    assert got == [
        "step",
        "params/params/bias",
        "params/params/kernel",
        "opt_state/0/count",
        "opt_state/0/mu/params/bias",
        "opt_state/0/mu/params/kernel",
        "opt_state/0/nu/params/bias",
        "opt_state/0/nu/params/kernel",
    ]
    # Values from a second state (e.g. after a jitted step: step becomes a jax int32 array).
    state2 = jax.jit(lambda s: s.replace(step=s.step + 1))(state)
    saveables = saveables_from_pytree(state)
    values = flatten_values(state2, saveables)
    step = saveables[0]
    assert step.kind is LeafKind.INT
    host = step.to_host(values[0])
    assert host.dtype == np.int64 and host[()] == 1


class MLP(typing.NamedTuple):  # noqa: D101 - test fixture
    mu: dict
    nu: dict


def test_namedtuple_fields_by_name():
    assert names({"s": MLP(mu={"w": 1}, nu={"w": 2})}) == ["s/mu/w", "s/nu/w"]


def _nnx_model():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 3, rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)
            self.rngs = rngs

    return Model(nnx.Rngs(0))


def test_nnx_state_names_and_round_trip():
    from flax import nnx

    state = nnx.state(_nnx_model())
    got = names(state)
    assert "linear/kernel" in got and "bn/mean" in got and "rngs/default/key" in got
    assert not any(n.endswith("/value") for n in got)
    saveables = saveables_from_pytree(state)
    assert {s.name: s.kind for s in saveables}["rngs/default/key"] is LeafKind.PRNG_KEY

    other = nnx.state(_nnx_model())
    other = jax.tree.map(lambda x: x + 1 if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, other)
    values = flatten_values(other, saveables)
    restored = {s.name: s.from_host(np.asarray(s.to_host(v))) for s, v in zip(saveables, values)}
    out = unflatten_like(state, saveables, restored)
    assert isinstance(out, nnx.State)
    np.testing.assert_array_equal(out["linear"]["kernel"][...], other["linear"]["kernel"][...])
    assert jax.tree.structure(out) == jax.tree.structure(state)
    # The template is not mutated.
    assert not np.array_equal(state["linear"]["kernel"][...], other["linear"]["kernel"][...])


# ----------------------------------------------------------------------------- var_list


def test_var_list_dict():
    w = jnp.ones((2, 2))
    sav = saveables_from_pytree(None, {"global_step": 5, "net": {"w": w, "b": [w, 1.0]}})
    assert [s.name for s in sav] == ["global_step", "net/b/0", "net/b/1", "net/w"]
    assert sav[3].path == (jax.tree_util.DictKey("net"), jax.tree_util.DictKey("w"))
    vals = flatten_values({"global_step": 6, "net": {"w": w * 2, "b": [w, 2.0]}}, sav)
    assert vals[0] == 6 and vals[2] == 2.0


def test_var_list_dict_bad_key():
    with pytest.raises(InvalidArgumentError):
        saveables_from_pytree(None, {"": 1})


def test_var_list_list_subset_by_identity():
    tree = {"params": {"w": jnp.ones(2), "b": jnp.zeros(2)}, "opt": {"m": jnp.ones(3)}, "step": 7}
    sav = saveables_from_pytree(tree, [tree["opt"], tree["params"]["w"]])
    assert [s.name for s in sav] == ["opt/m", "params/w"]  # flatten order of the tree
    # Flattening the full tree finds the subset by name.
    assert flatten_values(tree, sav)[1] is tree["params"]["w"]


def test_var_list_list_not_found():
    tree = {"w": jnp.ones(2)}
    with pytest.raises(InvalidArgumentError, match="index 1"):
        saveables_from_pytree(tree, [tree["w"], jnp.ones(2)])


def test_var_list_list_without_tree():
    assert names(None, [jnp.ones(1), {"w": jnp.ones(2)}]) == ["0", "1/w"]


def test_flatten_values_mismatch_lists_names():
    sav = saveables_from_pytree({"a": 1, "b": 2})
    with pytest.raises(InvalidArgumentError, match=r"(?s)missing: b.*unexpected: c"):
        flatten_values({"a": 1, "c": 2}, sav)
    treedef = jax.tree.structure({"a": 1, "b": 2})
    with pytest.raises(InvalidArgumentError, match="unexpected: c"):
        flatten_values({"a": 1, "b": 2, "c": 3}, sav, template_treedef=treedef)
    assert flatten_values({"a": 1, "b": 2, "c": 3}, sav) == [1, 2]


def test_unflatten_like_keeps_unnamed_and_rejects_unknown():
    tree = {"a": 1, "b": [2.0, "x"]}
    sav = saveables_from_pytree(tree)
    assert unflatten_like(tree, sav, {"a": 5}) == {"a": 5, "b": [2.0, "x"]}
    with pytest.raises(InvalidArgumentError, match="zzz"):
        unflatten_like(tree, sav, {"zzz": 1})


# ----------------------------------------------------------------------------- leaf kinds


def _bits(x):
    if isinstance(x, (str, bytes)):
        return x
    x = np.asarray(x)
    return (x.dtype.str, x.tobytes()) if x.dtype != object else x.tolist()


@pytest.mark.parametrize(
    "leaf,kind,dtype,shape",
    [
        (jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3) / 3, LeafKind.JAX_ARRAY, ml_dtypes.bfloat16, (2, 3)),
        (np.array([2**62 + 1, -(2**63)], np.int64), LeafKind.NUMPY, np.int64, (2,)),
        (np.array([2**64 - 1], np.uint64), LeafKind.NUMPY, np.uint64, (1,)),
        (np.float64(0.1), LeafKind.NUMPY_SCALAR, np.float64, ()),
        (ml_dtypes.bfloat16(1.5), LeafKind.NUMPY_SCALAR, ml_dtypes.bfloat16, ()),
        (0.1, LeafKind.FLOAT, np.float64, ()),
        (2**62 + 3, LeafKind.INT, np.int64, ()),
        (True, LeafKind.BOOL, np.bool_, ()),
        ("héllo", LeafKind.STR, object, ()),
        (b"\x00\xff", LeafKind.BYTES, object, ()),
        (np.array([b"a", b"bc"], dtype=object), LeafKind.NUMPY, object, (2,)),
        (jax.random.PRNGKey(0), LeafKind.JAX_ARRAY, np.uint32, (2,)),
    ],
)
def test_leaf_kind_round_trip_bit_exact(leaf, kind, dtype, shape):
    assert not jax.config.jax_enable_x64
    [s] = saveables_from_pytree({"x": leaf})
    assert s.kind is kind and s.dtype == np.dtype(dtype) and s.shape == shape
    host = np.asarray(s.to_host(leaf))
    out = s.from_host(host)
    assert type(out) is type(leaf) or (kind is LeafKind.JAX_ARRAY and isinstance(out, jax.Array))
    assert _bits(out) == _bits(leaf)
    if kind in (LeafKind.JAX_ARRAY, LeafKind.NUMPY, LeafKind.NUMPY_SCALAR):
        assert out.dtype == leaf.dtype
    else:
        assert out == leaf


def test_str_stored_as_utf8_bytes():
    [s] = saveables_from_pytree({"x": "é"})
    host = s.to_host("é")
    assert host.dtype == object and host.shape == () and host[()] == "é".encode()
    assert s.from_host(host) == "é"


def test_numpy_unicode_array_stored_as_object_bytes():
    [s] = saveables_from_pytree({"x": np.array(["a", "bé"])})
    host = s.to_host(np.array(["a", "bé"]))
    assert host.dtype == object and host.tolist() == [b"a", "bé".encode()]


def test_prng_typed_key_round_trip():
    key = jax.random.key(0)
    [s] = saveables_from_pytree({"k": key})
    assert s.kind is LeafKind.PRNG_KEY and s.dtype == np.uint32 and s.shape == (2,)
    assert s.prng_impl == "threefry2x32"
    out = s.from_host(np.asarray(s.to_host(key)))
    assert jax.random.key_impl(out) == jax.random.key_impl(key)
    np.testing.assert_array_equal(jax.random.key_data(out), jax.random.key_data(key))
    np.testing.assert_array_equal(jax.random.uniform(out, (3,)), jax.random.uniform(key, (3,)))


def test_prng_rbg_keys_and_shape_dtype_struct_template():
    keys = jax.random.split(jax.random.key(1, impl="rbg"), 3)
    [s] = saveables_from_pytree({"k": keys})
    assert s.prng_impl == "rbg" and s.shape == (3, 4)
    [t] = saveables_from_pytree({"k": jax.ShapeDtypeStruct(keys.shape, keys.dtype)})
    assert (t.kind, t.prng_impl, t.shape, t.dtype) == (s.kind, s.prng_impl, s.shape, s.dtype)
    out = t.from_host(np.asarray(s.to_host(keys)))
    np.testing.assert_array_equal(jax.random.key_data(out), jax.random.key_data(keys))
    with pytest.raises(InvalidArgumentError, match="PRNG impl"):
        s.to_host(jax.random.split(jax.random.key(1), 3))


def test_shape_dtype_struct_template_with_sharding():
    mesh = jax.make_mesh((8,), ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    [s] = saveables_from_pytree({"w": jax.ShapeDtypeStruct((16,), jnp.float32, sharding=sharding)})
    assert s.kind is LeafKind.JAX_ARRAY and s.sharding == sharding
    out = s.from_host(np.arange(16, dtype=np.float32))
    assert out.sharding == sharding


def test_weak_type_preserved_with_sharding():
    mesh = jax.make_mesh((8,), ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    weak = sv._as_weak(jax.device_put(np.full((8,), 2.0, np.float32), sharding))
    assert weak.weak_type
    [s] = saveables_from_pytree({"w": weak})
    assert s.weak_type and s.sharding == sharding
    out = s.from_host(np.asarray(s.to_host(weak)))
    assert out.weak_type and out.sharding == sharding
    [t] = saveables_from_pytree({"w": jnp.ones(3)})
    assert not t.weak_type and not t.from_host(np.ones(3, np.float32)).weak_type
    [u] = saveables_from_pytree({"w": jnp.asarray(3)})  # Python-scalar-born arrays are weak
    assert u.weak_type and u.from_host(np.asarray(3, np.int32)).weak_type


def test_int_out_of_int64_range():
    with pytest.raises(InvalidArgumentError, match="'big'"):
        saveables_from_pytree({"big": 2**64})
    [s] = saveables_from_pytree({"i": 1})
    with pytest.raises(InvalidArgumentError, match="i: Python int"):
        s.to_host(-(2**70))


def test_to_host_mismatch_names_leaf():
    [s] = saveables_from_pytree({"params": {"w": jnp.ones((2, 3))}})
    with pytest.raises(InvalidArgumentError, match=r"params/w.*float32\[2, 3\].*float32\[3, 2\]"):
        s.to_host(jnp.ones((3, 2)))
    with pytest.raises(InvalidArgumentError, match=r"params/w.*float32\[2, 3\].*int32\[2, 3\]"):
        s.to_host(jnp.ones((2, 3), jnp.int32))
    [n] = saveables_from_pytree({"n": np.zeros(2, np.int64)})
    with pytest.raises(InvalidArgumentError, match="n: .*int64.*int32"):
        n.to_host(np.zeros(2, np.int32))
    [t] = saveables_from_pytree({"t": "s"})
    with pytest.raises(InvalidArgumentError, match="t: "):
        t.to_host(b"s")
    [f] = saveables_from_pytree({"f": 1.0})
    assert f.to_host(2)[()] == 2.0
    with pytest.raises(InvalidArgumentError, match="f: "):
        f.to_host("1.0")


def test_from_host_mismatch_names_leaf():
    [s] = saveables_from_pytree({"w": np.zeros(3, np.float32)})
    with pytest.raises(InvalidArgumentError, match=r"w: .*float32\[3\].*float64\[3\]"):
        s.from_host(np.zeros(3))


def test_leaf_kind_dispatch_order():
    assert leaf_kind(True) is LeafKind.BOOL
    assert leaf_kind(np.bool_(True)) is LeafKind.NUMPY_SCALAR
    assert leaf_kind(np.float64(1.0)) is LeafKind.NUMPY_SCALAR
    assert leaf_kind(np.str_("a")) is LeafKind.STR
    assert leaf_kind(1) is LeafKind.INT
    assert leaf_kind(jax.ShapeDtypeStruct((2,), jnp.float32)) is LeafKind.JAX_ARRAY
    assert leaf_kind(jax.ShapeDtypeStruct((), jax.random.key(0).dtype)) is LeafKind.PRNG_KEY
    with pytest.raises(InvalidArgumentError, match="object"):
        leaf_kind(object())


def test_saveable_is_frozen():
    [s] = saveables_from_pytree({"a": 1})
    assert isinstance(s, Saveable)
    with pytest.raises(AttributeError):
        s.name = "b"  # type: ignore[misc]
