"""Flax and optax out of the box: Saver(state) for TrainState, nnx, struct dataclasses and optax
states; the scalar rule; init_from_checkpoint's assignment_map; restore_nnx. Every test goes
through real checkpoint files, and TensorFlow reads the same files."""

import os
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax import linen as nn
from flax.training import train_state

import jaxsaver
from jaxsaver import InvalidArgumentError, NotFoundError, Saver


# ----------------------------------------------------------------------------- helpers


def assert_bit_exact(expected, actual):
    """Same tree structure; every leaf of the same type, dtype, shape and bytes (keys: key data)."""
    e_paths, e_leaves = zip(*jax.tree_util.tree_flatten_with_path(expected)[0])
    a_paths, a_leaves = zip(*jax.tree_util.tree_flatten_with_path(actual)[0])
    assert e_paths == a_paths
    for e, a in zip(e_leaves, a_leaves):
        assert type(e) is type(a), (type(e), type(a))
        if isinstance(e, jax.Array) and jax.dtypes.issubdtype(e.dtype, jax.dtypes.prng_key):
            assert a.dtype == e.dtype
            e, a = jax.random.key_data(e), jax.random.key_data(a)
        if isinstance(e, (jax.Array, np.ndarray, np.generic)):
            assert a.dtype == e.dtype and a.shape == e.shape
            assert getattr(a, "weak_type", False) == getattr(e, "weak_type", False)
            assert np.asarray(a).tobytes() == np.asarray(e).tobytes()
        else:
            assert a == e


def tf_reads_bit_exact(prefix, saver, values):
    """TensorFlow's own reader finds every saved leaf under its name with the same bytes."""
    tf = pytest.importorskip("tensorflow")
    reader = tf.train.load_checkpoint(prefix)
    assert set(reader.get_variable_to_shape_map()) == {s.name for s in saver.saveables}
    for s, leaf in zip(saver.saveables, jaxsaver.saveables.flatten_values(values, saver.saveables)):
        stored = reader.get_tensor(s.name)
        host = np.asarray(jax.random.key_data(leaf) if s.kind.value == "prng_key" else leaf)
        assert stored.dtype == host.dtype, s.name
        assert stored.tobytes() == host.tobytes(), s.name


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(8)(x)))


def make_train_state(tx, seed):
    model = MLP()
    params = model.init(jax.random.key(seed), jnp.ones((1, 4)))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def train_step(state, x):
    def loss(p):
        return jnp.mean(state.apply_fn({"params": p}, x) ** 2)

    return state.apply_gradients(grads=jax.grad(loss)(state.params))


def trained(state, steps=3):
    x = jax.random.normal(jax.random.key(42), (5, 4))
    for _ in range(steps):
        state = train_step(state, x)
    return state


def save_restore(tmp_path, state, fresh):
    saver = Saver(state)  # positional: the template
    prefix = saver.save(state, str(tmp_path / "ckpt" / "model"), global_step=3)
    restored = Saver(fresh).restore(prefix)
    return saver, prefix, restored


# ----------------------------------------------------------------------------- TrainState + optax


def adamw_masked():
    return optax.adamw(1e-2, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))


def test_train_state_adamw_masked_round_trip_and_tf_reads_it(tmp_path):
    tx = adamw_masked()
    state = trained(make_train_state(tx, 0))
    fresh = trained(make_train_state(tx, 1), 1)  # another run's state: same kinds, other values
    saver, prefix, restored = save_restore(tmp_path, state, fresh)
    names = {s.name for s in saver.saveables}
    assert {"step", "params/Dense_0/kernel", "opt_state/0/mu/Dense_0/kernel", "opt_state/0/count"} <= names
    dtypes = {s.name: s.dtype for s in saver.saveables}
    assert dtypes["step"] == np.int32 and dtypes["opt_state/0/count"] == np.int32
    assert restored.apply_fn is fresh.apply_fn and restored.tx is fresh.tx
    assert_bit_exact(state, restored)
    tf_reads_bit_exact(prefix, saver, state)


def test_train_state_chained_transforms_with_schedule(tmp_path):
    def tx():
        schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10)
        return optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale_by_schedule(schedule))

    tx = tx()
    state = trained(make_train_state(tx, 0))
    saver, prefix, restored = save_restore(tmp_path, state, trained(make_train_state(tx, 1), 1))
    dtypes = {s.name: s.dtype for s in saver.saveables}
    assert dtypes["opt_state/2/count"] == np.int32 and int(restored.opt_state[2].count) == 3
    assert_bit_exact(state, restored)
    tf_reads_bit_exact(prefix, saver, state)


def test_optax_multisteps(tmp_path):
    tx = optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2)
    state = trained(make_train_state(tx, 0), steps=3)  # mid-accumulation: mini_step == 1
    saver, prefix, restored = save_restore(tmp_path, state, trained(make_train_state(tx, 1), 1))
    names = {s.name for s in saver.saveables}
    assert {"opt_state/mini_step", "opt_state/gradient_step", "opt_state/acc_grads/Dense_0/kernel"} <= names
    assert int(restored.opt_state.mini_step) == 1
    assert_bit_exact(state, restored)
    tf_reads_bit_exact(prefix, saver, state)
    # the restored state trains on exactly like the original
    assert_bit_exact(trained(state, 2), trained(restored, 2))


def test_optax_state_alone_positionally(tmp_path):
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    tx = optax.chain(optax.scale_by_adam(), optax.scale(-0.1))
    opt_state = tx.update(params, tx.init(params), params)[1]
    saver, prefix, restored = save_restore(tmp_path, opt_state, tx.init(jax.tree.map(jnp.zeros_like, params)))
    assert [s.name for s in saver.saveables] == ["0/count", "0/mu/w", "0/nu/w"]
    assert_bit_exact(opt_state, restored)
    tf_reads_bit_exact(prefix, saver, opt_state)


# ----------------------------------------------------------------------------- struct dataclass


@flax.struct.dataclass
class Stats:
    params: dict
    rng: jax.Array
    count: jax.Array
    lr: float
    label: str = flax.struct.field(pytree_node=False, default="run")


def test_struct_dataclass_with_prng_key(tmp_path):
    stats = Stats(
        params={"w": jnp.linspace(0, 1, 6, dtype=jnp.bfloat16).reshape(2, 3)},
        rng=jax.random.split(jax.random.key(3), 2),
        count=jnp.array(7, jnp.int32),
        lr=0.125,
    )
    fresh = Stats(params={"w": jnp.zeros((2, 3), jnp.bfloat16)}, rng=jax.random.split(jax.random.key(0), 2),
                  count=jnp.array(0, jnp.int32), lr=0.0)
    saver, prefix, restored = save_restore(tmp_path, stats, fresh)
    assert [s.name for s in saver.saveables] == ["params/w", "rng", "count", "lr"]
    assert jax.dtypes.issubdtype(restored.rng.dtype, jax.dtypes.prng_key)
    assert_bit_exact(stats, restored)
    tf_reads_bit_exact(prefix, saver, stats)


# ----------------------------------------------------------------------------- nnx


class NnxModel(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(4, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(nnx.relu(self.bn(self.l1(x)))))


def nnx_trained(seed, steps):
    model = NnxModel(nnx.Rngs(seed, dropout=seed + 1))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)

    x = jax.random.normal(jax.random.key(5), (6, 4))
    for _ in range(steps):
        step(model, optimizer, x)
    return model, optimizer


def test_nnx_model_and_optimizer(tmp_path):
    model, optimizer = nnx_trained(0, 3)
    nodes = {"model": model, "optimizer": optimizer}
    state = nnx.state(nodes)
    saver = Saver(state)  # an nnx.State positionally: the template
    names = {s.name: s for s in saver.saveables}
    assert {"model/l1/kernel", "model/bn/mean", "optimizer/step", "optimizer/opt_state/0/mu/l1/kernel"} <= set(names)
    assert names["model/drop/rngs/key"].kind.value == "prng_key"
    assert names["optimizer/opt_state/0/count"].dtype == np.int32
    prefix = saver.save(state, str(tmp_path / "nnx" / "model"), global_step=3)
    tf_reads_bit_exact(prefix, saver, state)

    # Saver(nnx.State).restore into a fresh state
    fresh_model, fresh_opt = nnx_trained(7, 0)
    restored = Saver(nnx.state({"model": fresh_model, "optimizer": fresh_opt})).restore(prefix)
    assert_bit_exact(state, restored)

    # restore_nnx: split, restore, nnx.update in one call; the modules then train on identically
    out = jaxsaver.restore_nnx(prefix, {"model": fresh_model, "optimizer": fresh_opt})
    assert out["model"] is fresh_model
    assert_bit_exact(state, nnx.state({"model": fresh_model, "optimizer": fresh_opt}))
    x = jnp.ones((2, 4))
    model.eval(), fresh_model.eval()
    assert np.asarray(model(x)).tobytes() == np.asarray(fresh_model(x)).tobytes()


def test_restore_nnx_lists_every_missing_name(tmp_path):
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    prefix = jaxsaver.save_nnx(model, str(tmp_path / "lin"))
    bigger = NnxModel(nnx.Rngs(0))
    with pytest.raises(NotFoundError, match=r"l1/kernel.*l2/kernel"):
        jaxsaver.restore_nnx(prefix, bigger)


# ----------------------------------------------------------------------------- Saver(positional)


def test_positional_plain_nested_dict_is_the_template(tmp_path):
    tree = {"params": {"w": jnp.arange(4.0), "b": np.float32(2)}, "step": 5, "tag": "x"}
    saver = Saver(tree)
    assert saver._template is tree and saver._var_list is None
    prefix = saver.save(tree, str(tmp_path / "m"))
    restored = Saver({"params": {"w": jnp.zeros(4), "b": np.float32(0)}, "step": 0, "tag": ""}).restore(prefix)
    assert_bit_exact(tree, restored)
    # the template's rule: a save must get every leaf, extras are refused
    with pytest.raises(InvalidArgumentError, match="unexpected: extra"):
        saver.save({**tree, "extra": 1}, str(tmp_path / "m2"))


def test_positional_dict_and_list_of_leaves_keep_tf_meaning(tmp_path):
    w, step = jnp.ones((2,)), 3
    renaming = Saver({"dense/kernel": w, "global_step": step})  # TF's {name: variable}
    assert renaming._var_list is not None and renaming._template is None
    prefix = renaming.save({"dense/kernel": w, "global_step": step}, str(tmp_path / "tf1"))
    assert sorted(jaxsaver.restore_as_numpy(prefix)) == ["dense", "global_step"]
    listing = Saver([w, np.int32(4)])  # TF's list: leaves named by their positions
    assert [s.name for s in listing.saveables] == ["0", "1"]
    assert listing._template is None


def test_positional_with_template_keeps_var_list_meanings_and_refuses_others():
    state = make_train_state(optax.sgd(0.1), 0)
    with pytest.raises(InvalidArgumentError, match="got TrainState.*without template"):
        Saver(state, template=state)
    subset = Saver([state.params["Dense_0"]["kernel"]], template=state)
    assert [s.name for s in subset.saveables] == ["params/Dense_0/kernel"]


def test_positional_template_with_defer_build(tmp_path):
    state = {"a": {"b": jnp.ones(2)}}
    saver = Saver(state, defer_build=True)
    with pytest.raises(jaxsaver.FailedPreconditionError):
        saver.save(state, str(tmp_path / "m"))
    saver.build()
    assert [s.name for s in saver.saveables] == ["a/b"]


# ----------------------------------------------------------------------------- the scalar rule


def test_step_int64_checkpoint_restores_into_a_jitted_weak_int32_template(tmp_path):
    fresh = make_train_state(optax.adam(1e-3), 0)  # step = 0, a Python int (stored int64)
    prefix = Saver(fresh).save(fresh, str(tmp_path / "fresh"))
    assert jaxsaver.CheckpointReader(prefix).get_variable_to_dtype_map()["step"] == "int64"
    stepped = trained(make_train_state(optax.adam(1e-3), 1), 1)  # step: weak int32 array
    assert stepped.step.dtype == jnp.int32 and stepped.step.weak_type
    restored = Saver(stepped).restore(prefix)
    assert restored.step.dtype == jnp.int32 and restored.step.weak_type and int(restored.step) == 0
    assert_bit_exact(fresh.params, restored.params)
    # and the other way: an int32 checkpoint into a Python-int template gives a Python int
    prefix32 = Saver(stepped).save(stepped, str(tmp_path / "stepped"))
    back = Saver(fresh).restore(prefix32)
    assert type(back.step) is int and back.step == 1


def test_scalar_rule_exact_value_check_and_strictness(tmp_path):
    saved = {"big": 2**40, "lr": 0.1, "half": 0.5, "i": np.int64(3), "arr": jnp.array(1, jnp.int32)}
    prefix = Saver(saved).save(saved, str(tmp_path / "m"))
    weak_i32 = jnp.asarray(0)  # weak int32
    weak_f32 = jnp.asarray(0.0)  # weak float32
    assert weak_i32.weak_type and weak_f32.weak_type
    # values the template's dtype holds exactly: accepted, returned as the template's type
    out = Saver({"half": weak_f32}).restore(prefix)
    assert out["half"].dtype == jnp.float32 and out["half"].weak_type and float(out["half"]) == 0.5
    assert Saver({"arr": 0}).restore(prefix)["arr"] == 1
    # values it cannot hold: an error naming the leaf and the value
    with pytest.raises(InvalidArgumentError, match=r"big: .*int64 value 1099511627776 does not fit in .*int32"):
        Saver({"big": weak_i32}).restore(prefix)
    with pytest.raises(InvalidArgumentError, match=r"lr: .*float64 value 0\.1 is not exactly representable"):
        Saver({"lr": weak_f32}).restore(prefix)
    # another kind (float stored, integer template): strict
    with pytest.raises(InvalidArgumentError, match=r"half: dtype: checkpoint has DT_DOUBLE, expected DT_INT64"):
        Saver({"half": 0}).restore(prefix)
    # a leaf that is neither a Python number nor weak-typed keeps the strict check
    with pytest.raises(InvalidArgumentError, match=r"i: dtype: checkpoint has DT_INT64, expected DT_INT32"):
        Saver({"i": jnp.array(0, jnp.int32)}).restore(prefix)
    with pytest.raises(InvalidArgumentError, match=r"i: dtype: checkpoint has DT_INT64, expected DT_INT32"):
        Saver({"i": np.int32(0)}).restore(prefix)


def test_scalar_rule_with_a_sharded_weak_template(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("x",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    prefix = Saver({"step": 12}).save({"step": 12}, str(tmp_path / "m"))
    target = {"step": jax.device_put(jnp.asarray(0), replicated)}
    out = Saver(target).restore(prefix, target=target)
    assert out["step"].sharding == replicated and out["step"].weak_type and int(out["step"]) == 12


# ----------------------------------------------------------------------------- assignment_map


def write_tf1_checkpoint(tmp_path):
    """A TF1-style checkpoint written by TensorFlow itself (graph-mode tf.compat.v1 Saver)."""
    tf = pytest.importorskip("tensorflow")
    values = {
        "bert/encoder/layer_0/kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
        "bert/encoder/layer_1/kernel": np.arange(6, 12, dtype=np.float32).reshape(3, 2),
        "cls/bias": np.array([1.5, -2.0], np.float32),
        "global_step": np.int64(1000),
        "bert/encoder/layer_0/kernel/adam_m": np.zeros((2, 3), np.float32),
    }
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=n) for n, v in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(sess, str(tmp_path / "tf1" / "model"))
    return prefix, values


def test_init_from_checkpoint_prefix_regex_and_name_rules(tmp_path):
    prefix, values = write_tf1_checkpoint(tmp_path)
    target = {
        "params": {"Dense_0": {"kernel": jnp.zeros((2, 3))}, "Dense_1": {"kernel": jnp.zeros((3, 2))}},
        "head": {"bias": np.zeros(2, np.float32)},
        "step": 0,
    }
    rules = {
        re.compile(r"bert/encoder/layer_(\d+)/kernel"): r"params/Dense_\1/kernel",
        "cls/": "head/",
        "global_step": "step",
    }
    out = jaxsaver.init_from_checkpoint(os.path.dirname(prefix), rules, target)
    assert out["step"] == 1000 and type(out["step"]) is int
    assert np.asarray(out["params"]["Dense_1"]["kernel"]).tobytes() == values["bert/encoder/layer_1/kernel"].tobytes()
    assert out["head"]["bias"].tobytes() == values["cls/bias"].tobytes()
    assert isinstance(out["params"]["Dense_0"]["kernel"], jax.Array)


def test_init_from_checkpoint_lists_every_unmapped_leaf(tmp_path):
    prefix, _ = write_tf1_checkpoint(tmp_path)
    target = {"params": {"a": jnp.zeros(2), "b": jnp.zeros(2)}, "head": {"bias": np.zeros(2, np.float32)}}
    with pytest.raises(NotFoundError) as info:
        jaxsaver.init_from_checkpoint(prefix, {"cls/": "head/"}, target)
    message = str(info.value)
    assert "params/a" in message and "params/b" in message and "head/bias" not in message.split("checkpoint")[0]
    assert "global_step" in message  # the checkpoint names no rule maps are listed as hints


def test_init_from_checkpoint_rule_errors(tmp_path):
    prefix, _ = write_tf1_checkpoint(tmp_path)
    with pytest.raises(InvalidArgumentError, match="scope"):
        jaxsaver.init_from_checkpoint(prefix, {"cls/": "head"}, {"head": 1})
    with pytest.raises(InvalidArgumentError, match=r"several checkpoint tensors to one leaf:\n  w: from"):
        jaxsaver.init_from_checkpoint(prefix, {re.compile(r"bert/encoder/layer_\d+/kernel"): "w"}, {"w": 1.0})
    with pytest.raises(InvalidArgumentError, match="bias: shape"):
        jaxsaver.init_from_checkpoint(prefix, {"cls/": "head/"}, {"head": {"bias": np.zeros(3, np.float32)}})


def test_init_from_checkpoint_root_scope_and_pairs(tmp_path):
    saved = {"w": np.arange(3, dtype=np.float32), "b": np.float32(2)}
    prefix = Saver(saved).save(saved, str(tmp_path / "m"))
    target = {"params": {"w": np.zeros(3, np.float32), "b": np.float32(0)}}
    out = jaxsaver.init_from_checkpoint(prefix, [("/", "params/")], target)  # every name, under params/
    assert out["params"]["w"].tobytes() == saved["w"].tobytes() and out["params"]["b"] == 2
    back = jaxsaver.init_from_checkpoint(prefix, {"/": "/"}, saved)  # the identity
    assert back["w"].tobytes() == saved["w"].tobytes()
    with pytest.raises(InvalidArgumentError, match="non-empty checkpoint names"):
        jaxsaver.init_from_checkpoint(prefix, {3: "w"}, saved)
