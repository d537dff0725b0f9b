"""TF2 object-based checkpoints both ways, against real TensorFlow (issue 18, acceptance 1)."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxsaver
from jaxsaver import DataLossError, NotFoundError, Saver
from jaxsaver.interop import tf2

tf = pytest.importorskip("tensorflow")


class Dense(tf.Module):
    def __init__(self, seed: int, name: str | None = None, dtype=np.float32):
        super().__init__(name=name)
        rng = np.random.default_rng(seed)
        with self.name_scope:
            self.kernel = tf.Variable(rng.standard_normal((2, 3)).astype(dtype), name="kernel")
            self.bias = tf.Variable(rng.standard_normal(3).astype(dtype), name="bias")


class Model(tf.Module):
    def __init__(self):
        super().__init__(name="model")
        self.layers = [Dense(1, name="dense"), Dense(2, name="dense_1")]
        self.step = tf.Variable(41, dtype=tf.int64, name="step")
        self.table = {"a/b.c": tf.Variable(np.float32(2.5))}  # a key TF escapes to a.Sb..c


def _dense_template():
    return {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}


def _model_template():
    return {"model": {
        "layers": [_dense_template(), _dense_template()],
        "step": np.int64(0),
        "table": {"a/b.c": np.float32(0)},
    }}


@pytest.fixture(scope="module")
def tf2_checkpoint(tmp_path_factory):
    """A tf.Module tree saved by tf.train.Checkpoint, and its values by object path."""
    model = Model()
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path_factory.mktemp("tf2") / "ckpt"))
    values = {
        "model/layers/0/kernel": model.layers[0].kernel.numpy(),
        "model/layers/0/bias": model.layers[0].bias.numpy(),
        "model/layers/1/kernel": model.layers[1].kernel.numpy(),
        "model/layers/1/bias": model.layers[1].bias.numpy(),
        "model/step": model.step.numpy(),
        "model/table/a/b.c": model.table["a/b.c"].numpy(),
    }
    return prefix, values


def _named(tree):
    return {jaxsaver.saveables_from_pytree(tree)[i].name: leaf
            for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}


def _assert_bits(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


# ----------------------------------------------------------------------------- reading


def test_tf_module_tree_restores_into_jax_template_by_object_path(tf2_checkpoint, caplog):
    prefix, values = tf2_checkpoint
    with caplog.at_level(logging.INFO, logger="jaxsaver.interop.tf2"):
        restored = Saver(template=_model_template()).restore(prefix)
    assert "by object paths" in caplog.text and "fragile" not in caplog.text
    named = _named(restored)
    assert set(named) == set(values)
    for name, expected in values.items():
        _assert_bits(named[name], expected)
    assert isinstance(restored["model"]["layers"][1]["kernel"], jax.Array)


def test_restore_by_variable_names_and_from_the_directory(tf2_checkpoint, caplog):
    prefix, values = tf2_checkpoint
    template = {"dense": _dense_template(), "dense_1": _dense_template(), "step": np.int64(0)}
    with caplog.at_level(logging.WARNING, logger="jaxsaver.interop.tf2"):
        restored = Saver(template=template).restore(os.path.dirname(prefix))  # the 'checkpoint' file
    assert "object-based checkpoint using a name-based saver" in caplog.text
    _assert_bits(restored["dense_1"]["kernel"], values["model/layers/1/kernel"])
    _assert_bits(restored["dense"]["bias"], values["model/layers/0/bias"])
    _assert_bits(restored["step"], values["model/step"])


def test_restore_with_a_sharded_target(tf2_checkpoint):
    prefix, values = tf2_checkpoint
    mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
    target = _model_template()
    target["model"]["layers"][0]["kernel"] = jax.ShapeDtypeStruct((2, 3), jnp.float32, sharding=NamedSharding(mesh, P("x")))
    target["model"]["layers"][0]["bias"] = jnp.zeros(3)
    restored = Saver(template=_model_template()).restore(prefix, target=target)
    kernel = restored["model"]["layers"][0]["kernel"]
    assert kernel.sharding == NamedSharding(mesh, P("x"))
    _assert_bits(kernel, values["model/layers/0/kernel"])


def test_names_to_keys_explicit_map(tf2_checkpoint):
    prefix, values = tf2_checkpoint
    key = "model/layers/1/bias/.ATTRIBUTES/VARIABLE_VALUE"
    saver = tf2.saver_from_object_based_checkpoint(prefix, template={"b": jnp.zeros(3)}, names_to_keys={"b": key})
    _assert_bits(saver.restore(prefix)["b"], values["model/layers/1/bias"])
    mapping = tf2.object_graph_key_mapping(prefix)
    assert mapping["model/layers/1/bias"] == key and mapping["dense_1/bias"] == key
    assert mapping["model/table/a/b.c"] == "model/table/a.Sb..c/.ATTRIBUTES/VARIABLE_VALUE"


def test_incompatible_template_lists_missing_extra_and_match_count(tf2_checkpoint):
    prefix, _ = tf2_checkpoint
    template = _model_template()
    del template["model"]["layers"][1]
    template["model"]["extra"] = jnp.zeros(2)
    with pytest.raises(NotFoundError) as info:
        Saver(template=template).restore(prefix)
    message = str(info.value)
    assert "Existing variables not in the checkpoint: model/extra\n" in message
    assert ("which don't exist now: model/layers/1/bias (dense_1/bias), "
            "model/layers/1/kernel (dense_1/kernel), save_counter\n") in message
    assert "(4 variable name(s) did match)" in message


def test_ambiguous_variable_names_are_named_in_the_error(tmp_path):
    module = tf.Module()
    module.a, module.b = tf.Variable(1.0), tf.Variable(2.0)  # both eagerly named 'Variable'
    prefix = tf.train.Checkpoint(m=module).write(str(tmp_path / "amb"))
    with pytest.raises(NotFoundError, match=r"ambiguous\): Variable -> m/a/.ATTRIBUTES/VARIABLE_VALUE, m/b/"):
        Saver(template={"Variable": np.float32(0)}).restore(prefix)
    restored = Saver(template={"m": {"a": np.float32(0), "b": np.float32(0)}}).restore(prefix)
    assert restored == {"m": {"a": np.float32(1.0), "b": np.float32(2.0)}}


def test_name_based_checkpoint_keeps_the_original_error(tmp_path):
    prefix = Saver(template={"w": jnp.ones(2)}).save({"w": jnp.ones(2)}, str(tmp_path / "named"))
    with pytest.raises(NotFoundError, match="Key v not found in checkpoint"):
        Saver(template={"v": jnp.ones(2)}).restore(prefix)
    with pytest.raises(ValueError, match=r"not an object-based checkpoint"):
        tf2.saver_from_object_based_checkpoint(prefix, template={"w": jnp.ones(2)})


def test_corrupt_object_graphs_are_data_loss():
    with pytest.raises(DataLossError, match="does not hold a TrackableObjectGraph"):
        tf2.parse_object_graph(b"\xff\xff\xff")
    graph = tf2.build_object_graph([("a/b", "a/b")])
    graph.nodes[1].children[0].node_id = 99
    with pytest.raises(DataLossError, match="a child of node 1 refers to node 99; the graph has 3"):
        tf2.parse_object_graph(graph.SerializeToString())


# ----------------------------------------------------------------------------- writing


class DenseSlot(tf.Module):
    def __init__(self, dtype):
        super().__init__()
        self.kernel = tf.Variable(tf.zeros((8, 4), dtype))
        self.bias = tf.Variable(tf.zeros((4,), dtype))


class Params(tf.Module):
    def __init__(self):
        super().__init__()
        self.dense = DenseSlot(tf.float32)
        self.layers = [DenseSlot(tf.bfloat16), DenseSlot(tf.bfloat16)]


def _jax_state(sharding=None):
    rng = np.random.default_rng(0)

    def put(x):
        return jax.device_put(x, sharding) if sharding is not None and x.ndim == 2 else jnp.asarray(x)

    def dense(dtype):
        return {"kernel": put(rng.standard_normal((8, 4)).astype(dtype)), "bias": put(rng.standard_normal(4).astype(dtype))}

    return {
        "params": {"dense": dense(np.float32), "layers": [dense(ml_dtypes.bfloat16), dense(ml_dtypes.bfloat16)]},
        "step": np.int64(7),
    }


@pytest.mark.parametrize("sharded", [False, True], ids=["plain", "sharded8"])
def test_object_graph_checkpoint_passes_tf_assert_consumed(tmp_path, sharded):
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("x", "y"))
    state = _jax_state(NamedSharding(mesh, P("x", "y")) if sharded else None)
    saver = Saver(template=state, object_graph=True, sharded=sharded)
    prefix = saver.save(state, str(tmp_path / "model"), global_step=7)

    params, step = Params(), tf.Variable(np.int64(0))
    checkpoint = tf.train.Checkpoint(params=params, step=step)
    checkpoint.restore(prefix).assert_consumed()
    _assert_bits(params.dense.kernel.numpy(), state["params"]["dense"]["kernel"])
    _assert_bits(params.layers[1].bias.numpy(), state["params"]["layers"][1]["bias"])
    _assert_bits(params.layers[0].kernel.numpy(), state["params"]["layers"][0]["kernel"])
    assert step.numpy() == 7 and checkpoint.save_counter.numpy() == 7

    # Keys are TF2's; jaxsaver's name-based restore finds them through the graph's paths.
    reader = tf.train.load_checkpoint(prefix)
    key = "params/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    _assert_bits(reader.get_tensor(key), state["params"]["dense"]["kernel"])
    assert tf2.object_graph_key_mapping(prefix)["params/dense/kernel"] == key
    restored = saver.restore(prefix)
    _assert_bits(restored["params"]["layers"][0]["kernel"], state["params"]["layers"][0]["kernel"])


def test_object_graph_missing_module_fails_tf_assert_consumed(tmp_path):
    """The graph is real: TF notices a checkpointed object the Python tree lacks."""
    state = _jax_state()
    prefix = Saver(template=state, object_graph=True).save(state, str(tmp_path / "model"))
    params = tf.Module()  # no params.dense
    params.layers = [DenseSlot(tf.bfloat16), DenseSlot(tf.bfloat16)]
    status = tf.train.Checkpoint(params=params, step=tf.Variable(np.int64(0))).restore(prefix)
    with pytest.raises(AssertionError):
        status.assert_consumed()


def test_object_graph_refuses_names_tf_cannot_reach(tmp_path):
    clash = {"x": jnp.ones(2), "_CHECKPOINTABLE_OBJECT_GRAPH": b""}
    with pytest.raises(jaxsaver.InvalidArgumentError, match="writes its own _CHECKPOINTABLE_OBJECT_GRAPH"):
        Saver(template=clash, object_graph=True).save(clash, str(tmp_path / "m"))
    empty_part = {"a/": jnp.ones(2)}
    with pytest.raises(jaxsaver.InvalidArgumentError, match="'a/' has an empty part"):
        Saver(template=empty_part, object_graph=True).save(empty_part, str(tmp_path / "m"))
    assert not os.listdir(tmp_path)
    with pytest.raises(jaxsaver.InvalidArgumentError, match="empty part"):
        tf2.build_object_graph([("a//b", "k")])


def test_a_hostile_deep_graph_is_refused_not_quadratic():
    """A chain of 5000 variables would spell 12.5M path parts; the parser stops with DataLossError."""
    graph = tf2.build_object_graph([("/".join(["n"] * 5000), "k")])
    for node in graph.nodes[1:]:
        node.attributes.add(name="VARIABLE_VALUE", checkpoint_key="k")
    with pytest.raises(DataLossError, match="object paths too long"):
        tf2.parse_object_graph(graph.SerializeToString())


def test_optimizer_slots_are_named_by_variable_and_optimizer_paths():
    graph = tf2.build_object_graph([("model/w", "model/w/.ATTRIBUTES/VARIABLE_VALUE"), ("opt/iter", "opt/iter/k")])
    graph.nodes.add().attributes.add(name="VARIABLE_VALUE", checkpoint_key="slot_key")
    opt_node = next(n for n in graph.nodes if any(c.local_name == "iter" for c in n.children))
    model_w = next(i for i, n in enumerate(graph.nodes) if any(a.checkpoint_key.startswith("model/w") for a in n.attributes))
    opt_node.slot_variables.add(original_variable_node_id=model_w, slot_name="momentum",
                                slot_variable_node_id=len(graph.nodes) - 1)
    names = tf2.parse_object_graph(graph.SerializeToString())
    assert names.paths["model/w/.OPTIMIZER_SLOT/opt/momentum"] == "slot_key"
