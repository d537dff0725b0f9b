"""export_meta_graph / import_meta_graph: a model restored and run from its .meta without its code."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsaver
from jaxsaver import _treedef_codec as trees
from jaxsaver._proto import meta_graph_pb2
from jaxsaver.meta_graph import FORMAT_VERSION

TESTS = pathlib.Path(__file__).resolve().parent

# The fresh process: imports only jaxsaver (never the model's module, flax or optax), imports the
# .meta, restores, predicts, trains 3 steps with the exported train_step, saves, re-imports.
CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import jaxsaver

    work = sys.argv[1]
    data = np.load(os.path.join(work, "inputs.npz"))
    saver, graph = jaxsaver.import_meta_graph(os.path.join(work, "model-3.meta"))
    state = saver.restore(jaxsaver.latest_checkpoint(work))
    prediction = np.asarray(graph.functions["predict"](state["params"], data["x"]))
    losses = []
    for i in range(3):
        state, loss = graph.functions["train_step"](state, (data[f"bx{i}"], data[f"by{i}"]))
        losses.append(np.asarray(loss))
    prefix = saver.save(state, os.path.join(work, "model"), global_step=6)
    saver2, graph2 = jaxsaver.import_meta_graph(prefix + ".meta")
    again = saver2.restore(prefix)
    prediction6 = np.asarray(graph2.functions["predict"](again["params"], data["x"]))
    for module in ("meta_model", "flax", "optax"):
        assert module not in sys.modules, module
    np.savez(os.path.join(work, "outputs.npz"), prediction=prediction, losses=np.stack(losses),
             prediction6=prediction6, step=np.asarray(again["step"]))
    """
)


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def mlp():
    sys.path.insert(0, str(TESTS))
    try:
        import meta_model
    finally:
        sys.path.remove(str(TESTS))
    return meta_model


def test_flax_mlp_resumes_from_meta_in_a_fresh_process(mlp, tmp_path):
    batches = mlp.batches(6)
    state = mlp.make_state()
    for batch in batches[:3]:
        state, _ = mlp.train_step(state, batch)
    saver = jaxsaver.Saver(template=state)
    x = batches[0][0]
    saver.set_meta_graph(functions={
        "train_step": (mlp.train_step, (state, batches[0])),
        "predict": (mlp.predict, (state.params, x)),
    })
    saver.save(state, str(tmp_path / "model"), global_step=3)
    expected_prediction = np.asarray(mlp.predict(state.params, x))
    expected_losses = []
    for batch in batches[3:]:  # the uninterrupted run
        state, loss = mlp.train_step(state, batch)
        expected_losses.append(np.asarray(loss))
    inputs = {"x": x}
    for i, (bx, by) in enumerate(batches[3:]):
        inputs[f"bx{i}"], inputs[f"by{i}"] = bx, by
    np.savez(tmp_path / "inputs.npz", **inputs)

    result = _run(["-c", CHILD, str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "outputs.npz")
    assert out["prediction"].tobytes() == expected_prediction.tobytes()  # bit for bit
    assert out["losses"].tobytes() == np.stack(expected_losses).tobytes()
    assert out["prediction6"].tobytes() == np.asarray(mlp.predict(state.params, x)).tobytes()
    assert int(out["step"]) == 6
    # What the fresh process wrote reads back here with the original classes' names.
    restored = saver.restore(str(tmp_path / "model-6"))
    assert type(restored).__name__ == "TrainState" and int(restored.step) == 6


def _small_saver():
    mesh_free = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}, "step": 3, "name": "run"}
    return mesh_free, jaxsaver.Saver(template=mesh_free)


def _functions(tree):
    predict = jax.jit(lambda p, x: x @ p["w"] + p["b"])
    exported = jax.export.export(jax.jit(lambda a, *, k: {"y": a * k}))(jnp.ones(2), k=jnp.float32(2))
    return {"predict": (predict, (tree["params"], jnp.ones((4, 2)))), "double": exported}


@pytest.mark.parametrize("as_text", [False, True])
def test_export_import_export_same_bytes(tmp_path, as_text):
    tree, saver = _small_saver()
    first = tmp_path / "a.meta"
    jaxsaver.export_meta_graph(
        str(first), saver=saver, functions=_functions(tree), as_text=as_text,
        collection_list={"ids": [1, 2], "lr": [0.5], "names": ["x", "ü"], "raw": [b"\x00"],
                         "vars": [saver.saveables[0]], "empty": []},
        meta_info_def={"tags": ["serve"], "description": "small"},
    )
    saver2, graph = jaxsaver.import_meta_graph(str(first))
    assert graph.collections["names"] == ("x", "ü") and graph.collections["lr"] == (0.5,)
    assert graph.collections["vars"] == (saver2.saveables[0],) and graph.collections["empty"] == ()
    assert graph.meta_info.tags == ("serve",) and graph.meta_info.description == "small"
    second = tmp_path / "b.meta"
    saver2.export_meta_graph(str(second), as_text=as_text)  # carries the imported functions/collections
    assert second.read_bytes() == first.read_bytes()
    third = tmp_path / "c.meta"
    jaxsaver.export_meta_graph(str(third), saver=saver2, functions=graph.functions, as_text=as_text,
                               collection_list=graph.collections, meta_info_def=graph.meta_info)
    assert third.read_bytes() == first.read_bytes()


def test_imported_functions_and_saver_work(tmp_path):
    tree, saver = _small_saver()
    prefix = saver.save(tree, str(tmp_path / "m"), global_step=1)
    saver.export_meta_graph(prefix + ".meta", functions=_functions(tree))
    saver2, graph = jaxsaver.import_meta_graph(prefix + ".meta")
    restored = saver2.restore(prefix)
    assert restored["step"] == 3 and restored["name"] == "run"
    np.testing.assert_array_equal(restored["params"]["w"], tree["params"]["w"])
    assert graph.template["params"]["w"].shape == (2, 3) and graph.template["name"] == ""
    out = graph.functions["predict"](restored["params"], jnp.ones((4, 2)))
    np.testing.assert_array_equal(out, jnp.ones((4, 2)) @ tree["params"]["w"])
    assert graph.functions["double"](jnp.ones(2), k=jnp.float32(3))["y"].tolist() == [3.0, 3.0]
    with pytest.raises(jaxsaver.InvalidArgumentError, match=r"'predict'.*\n.*w: missing"):
        graph.functions["predict"]({"b": jnp.zeros(3)}, jnp.ones((4, 2)))


def test_sharded_functions_run_on_the_same_mesh_and_clear_devices(tmp_path):
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    w = jax.device_put(jnp.arange(64.0).reshape(8, 8), NamedSharding(mesh, P(None, "model")))
    x = jax.device_put(jnp.ones((8, 8)), NamedSharding(mesh, P("data", None)))
    tree = {"w": w}
    forward = jax.jit(lambda p, x: jnp.tanh(x @ p["w"]))
    saver = jaxsaver.Saver(template=tree, sharded=True)
    prefix = saver.save(tree, str(tmp_path / "m"))
    saver.export_meta_graph(prefix + ".meta", functions={"forward": (forward, (tree, x))})

    saver2, graph = jaxsaver.import_meta_graph(prefix + ".meta")
    assert graph.template["w"].sharding == w.sharding
    restored = saver2.restore(prefix)
    assert restored["w"].sharding == w.sharding
    out = graph.functions["forward"](restored, x)
    np.testing.assert_array_equal(out, forward(tree, x))

    saver3, cleared = jaxsaver.import_meta_graph(prefix + ".meta", clear_devices=True)
    assert cleared.template["w"].sharding is None
    plain = saver3.restore(prefix)["w"]
    assert plain.sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])
    np.testing.assert_array_equal(plain, w)
    jaxsaver.export_meta_graph(str(tmp_path / "c.meta"), saver=saver, clear_devices=True)
    _, graph_c = jaxsaver.import_meta_graph(str(tmp_path / "c.meta"))
    assert graph_c.template["w"].sharding is None


def _rewrite(path: pathlib.Path, edit) -> None:
    meta = meta_graph_pb2.MetaGraphDef.FromString(path.read_bytes())
    info = meta_graph_pb2.JaxMetaGraph()
    meta.meta_info_def.any_info.Unpack(info)
    edit(meta, info)
    meta.meta_info_def.any_info.Pack(info, deterministic=True)
    path.write_bytes(meta.SerializeToString(deterministic=True))


def test_corrupt_function_bytes_name_the_function(tmp_path):
    tree, saver = _small_saver()
    path = tmp_path / "m.meta"
    saver.export_meta_graph(str(path), functions=_functions(tree))
    data = bytearray(path.read_bytes())
    info = meta_graph_pb2.JaxMetaGraph()
    meta_graph_pb2.MetaGraphDef.FromString(bytes(data)).meta_info_def.any_info.Unpack(info)
    blob = info.functions["predict"].serialized
    at = bytes(data).index(blob) + len(blob) // 2
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(jaxsaver.DataLossError, match=r"m\.meta.*function 'predict'.*corrupt"):
        jaxsaver.import_meta_graph(str(path))

    def garbage(meta, info):  # bytes jax cannot read, with a matching checksum
        from jaxsaver._format.crc import crc32c

        info.functions["double"].serialized = b"\x10\x00\x00\x00not flatbuffers"
        info.functions["double"].crc32c = crc32c(info.functions["double"].serialized)

    path2 = tmp_path / "g.meta"
    saver.export_meta_graph(str(path2), functions=_functions(tree))
    _rewrite(path2, garbage)
    with pytest.raises(jaxsaver.DataLossError, match="function 'double' cannot be deserialized"):
        jaxsaver.import_meta_graph(str(path2))


def test_import_runs_no_code_from_the_file(tmp_path):
    """Type names in a .meta are display text: nothing is imported or unpickled on read."""
    tree, saver = _small_saver()
    path = tmp_path / "m.meta"
    saver.export_meta_graph(str(path))

    def evil(meta, info):
        info.tree.nodes[0].kind = meta_graph_pb2.PyTreeDef.CUSTOM
        info.tree.nodes[0].type_name = "jaxsaver_test_never_imported.Payload"

    _rewrite(path, evil)
    saver2, graph = jaxsaver.import_meta_graph(str(path))
    assert "jaxsaver_test_never_imported" not in sys.modules
    assert isinstance(graph.template, dict) and set(graph.template) == {"name", "params", "step"}
    for module in ("jaxsaver/meta_graph.py", "jaxsaver/_meta_export.py", "jaxsaver/_meta_codec.py", "jaxsaver/_treedef_codec.py",
                   "jaxsaver/_meta_display.py"):
        source = (TESTS.parent / module).read_text()
        import re

        found = re.findall(r"import pickle|pickle\.loads?\(|\beval\(|\bexec\(|import_module|__import__|marshal", source)
        assert not found, (module, found)


def test_newer_format_version_names_both_versions(tmp_path):
    _, saver = _small_saver()
    path = tmp_path / "m.meta"
    saver.export_meta_graph(str(path))

    def newer(meta, info):
        meta.meta_info_def.meta_graph_version = f"jaxsaver-{FORMAT_VERSION + 1}"

    _rewrite(path, newer)
    with pytest.raises(jaxsaver.UnimplementedError,
                       match=rf"jaxsaver-{FORMAT_VERSION + 1}, newer than jaxsaver-{FORMAT_VERSION}"):
        jaxsaver.import_meta_graph(str(path))

    def newer_inside(meta, info):
        info.format_version = FORMAT_VERSION + 7

    path2 = tmp_path / "n.meta"
    saver.export_meta_graph(str(path2))
    _rewrite(path2, newer_inside)
    with pytest.raises(jaxsaver.UnimplementedError, match=rf"jaxsaver-{FORMAT_VERSION + 7}.*jaxsaver-{FORMAT_VERSION}"):
        jaxsaver.import_meta_graph(str(path2))


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(jaxsaver.CheckpointNotFoundError, match="nope.meta"):
        jaxsaver.import_meta_graph(str(tmp_path / "nope.meta"))
    bad = tmp_path / "bad.meta"
    bad.write_bytes(b"\xff\xfe\x00\x07garbage")
    with pytest.raises(jaxsaver.DataLossError, match="bad.meta"):
        jaxsaver.import_meta_graph(str(bad))
    assert isinstance(jaxsaver.DataLossError("x"), OSError)


def test_tensorflow_parses_the_meta(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tree, saver = _small_saver()
    path = tmp_path / "m.meta"
    saver.export_meta_graph(str(path), functions=_functions(tree), collection_list={"ids": [1, 2]})
    meta = tf.compat.v1.MetaGraphDef.FromString(path.read_bytes())
    assert meta.saver_def.restore_op_name == "save/restore_all"
    signature = meta.signature_def["predict"]
    assert signature.method_name == "jax.export"
    assert signature.inputs["0/w"].dtype == tf.float32.as_datatype_enum
    assert sorted(signature.inputs) == ["0/b", "0/w", "1"] and sorted(signature.outputs) == ["output"]
    assert [d.size for d in signature.outputs["output"].tensor_shape.dim] == [4, 3]
    assert list(meta.collection_def["ids"].int64_list.value) == [1, 2]
    assert meta.meta_info_def.any_info.type_url.endswith("jaxsaver.JaxMetaGraph")


def test_cli_and_notebook_show_signatures_tree_and_versions(tmp_path, capsys):
    from jaxsaver.cli import main

    tree, saver = _small_saver()
    prefix = saver.save(tree, str(tmp_path / "m"), global_step=2)
    saver.export_meta_graph(prefix + ".meta", functions=_functions(tree), meta_info_def={"description": "demo"})
    assert main(["meta", prefix]) == 0
    text = capsys.readouterr().out
    assert f"format: jaxsaver-{FORMAT_VERSION}" in text and f"jax {jax.__version__}" in text
    assert "description: demo" in text
    assert "predict(({'b': *, 'w': *}, *)) -> *" in text and "float32[4,2]" in text
    assert "params/" in text and "w" in text and "step" in text
    assert main(["meta", prefix + ".meta", "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["signatures"]["predict"]["in_avals"] == ["float32[3]", "float32[2, 3]", "float32[4, 2]"]
    assert summary["jax_version"] == jax.__version__
    _, graph = jaxsaver.import_meta_graph(prefix + ".meta")
    html = graph._repr_html_()
    assert "signatures" in html and "predict" in html and f"jaxsaver-{FORMAT_VERSION}" in html
    assert "description: demo" in jaxsaver.inspect.meta_graph_html(graph.meta_graph_def)
    assert main(["meta", str(tmp_path / "none")]) == 2
    assert "none.meta" in capsys.readouterr().err


def test_scopes_strip_and_prefix_tree_names_not_checkpoint_keys(tmp_path):
    tree = {"tower": {"w": jnp.ones(2)}, "other": {"v": jnp.zeros(1)}}
    saver = jaxsaver.Saver(template=tree)
    prefix = saver.save(tree, str(tmp_path / "m"))
    path = tmp_path / "scoped.meta"
    saver.export_meta_graph(str(path), export_scope="tower")
    saver2, graph = jaxsaver.import_meta_graph(str(path))
    assert set(graph.template) == {"w"}
    assert [(s.name, s.key) for s in saver2.saveables] == [("tower/w", "w")]
    assert saver2.restore(prefix)["w"].tolist() == [1.0, 1.0]
    assert not graph.meta_graph_def.HasField("saver_def")  # its op names are outside the scope (TF drops it)

    saver3, graph3 = jaxsaver.import_meta_graph(prefix + ".meta", import_scope="a/b")
    assert set(graph3.template["a"]["b"]) == {"tower", "other"}
    assert saver3.saver_def.restore_op_name == "a/b/save/restore_all"
    assert {s.name: s.key for s in saver3.saveables} == {"tower/w": "a/b/tower/w", "other/v": "a/b/other/v"}
    assert saver3.restore(prefix)["a"]["b"]["tower"]["w"].tolist() == [1.0, 1.0]
    with pytest.raises(jaxsaver.InvalidArgumentError, match="no node 'nowhere'"):
        saver.export_meta_graph(export_scope="nowhere")


def test_collections_refuse_what_they_cannot_store_exactly():
    _, saver = _small_saver()
    with pytest.raises(jaxsaver.InvalidArgumentError, match="'lr'.*float32"):
        jaxsaver.export_meta_graph(saver=saver, collection_list={"lr": [0.1]})
    with pytest.raises(jaxsaver.InvalidArgumentError, match="'mixed'"):
        jaxsaver.export_meta_graph(saver=saver, collection_list={"mixed": [1, "a"]})
    meta = jaxsaver.export_meta_graph(saver=saver, collection_list={"lr": [np.float32(0.1)]})
    assert meta.collection_def["lr"].float_list.value[0] == np.float32(0.1)


def test_save_writes_functions_set_on_the_saver(tmp_path):
    tree, saver = _small_saver()
    saver.set_meta_graph(functions=_functions(tree))
    prefix = saver.save(tree, str(tmp_path / "m"), global_step=5)
    _, graph = jaxsaver.import_meta_graph(prefix + ".meta")
    assert sorted(graph.functions) == ["double", "predict"]
    with pytest.raises(jaxsaver.InvalidArgumentError, match="'bad'.*jax.export failed"):
        saver.set_meta_graph(functions={"bad": (jax.jit(lambda s: s.upper()), ("text",))})


def test_treedef_codec_round_trips_and_refuses_malformed_structures():
    import collections

    Point = collections.namedtuple("Point", "x y")
    tree = {"a": [1, (2, None)], "p": Point(x=4, y={7: 5, 3: 6}), "e": ()}
    proto = trees.encode(tree)
    leaves = jax.tree_util.tree_leaves(tree)
    decoded = trees.decode(proto, leaves)
    assert decoded == {"a": [1, (2, None)], "p": {"x": 4, "y": {3: 6, 7: 5}}, "e": ()}
    assert trees.flatten(proto, tree) == leaves and trees.flatten(proto, decoded) == leaves
    assert trees.leaf_names(proto) == ["a/0", "a/1/0", "p/x", "p/y/3", "p/y/7"]
    assert trees.describe(proto) == "{'a': [*, (*, None)], 'e': (), 'p': Point(x=*, y={3: *, 7: *})}"
    with pytest.raises(jaxsaver.InvalidArgumentError, match=r"dict key \(1, 2\) at \[\(1, 2\)\]: only str and int"):
        trees.encode({(1, 2): 3})
    broken = meta_graph_pb2.PyTreeDef()
    broken.CopyFrom(proto)
    broken.nodes[0].num_children = 99
    with pytest.raises(jaxsaver.DataLossError, match="Malformed"):
        trees.decode(broken, leaves)
    with pytest.raises(jaxsaver.DataLossError, match="leaves"):
        trees.decode(proto, leaves[:-1])


def test_version_1_files_import_as_a_numpy_saver(tmp_path):
    """A .meta from before format 2 (SaverDef + JSON leaves) still imports."""
    import json

    tree, saver = _small_saver()
    prefix = saver.save(tree, str(tmp_path / "m"), write_meta_graph=False)
    old = meta_graph_pb2.MetaGraphDef()
    old.meta_info_def.meta_graph_version = "jaxsaver-1"
    old.meta_info_def.tags.append("jaxsaver")
    old.saver_def.CopyFrom(saver.saver_def)
    old.collection_def["jaxsaver_tree"].bytes_list.value.append(json.dumps({"leaves": []}).encode())
    pathlib.Path(prefix + ".meta").write_bytes(old.SerializeToString())
    saver2, graph = jaxsaver.import_meta_graph(prefix + ".meta")
    assert graph.meta_info.format_version == 1 and graph.template is None and graph.collections == {}
    restored = saver2.restore(prefix)
    np.testing.assert_array_equal(restored["params"]["w"], tree["params"]["w"])
    assert restored["name"] == b"run"


def test_shardings_that_name_missing_devices_or_are_malformed_are_refused(tmp_path):
    _, saver = _small_saver()
    path = tmp_path / "m.meta"
    saver.export_meta_graph(str(path))

    def far_device(meta, info):
        info.saveables[0].sharding.device_id = 4096

    _rewrite(path, far_device)
    with pytest.raises(jaxsaver.InvalidArgumentError, match="device 4096.*clear_devices=True"):
        jaxsaver.import_meta_graph(str(path))
    saver2, graph = jaxsaver.import_meta_graph(str(path), clear_devices=True)
    assert all(getattr(leaf, "sharding", None) is None for leaf in jax.tree_util.tree_leaves(graph.template))

    def bad_mesh(meta, info):
        sharding = info.saveables[0].sharding
        sharding.mesh.axis_names.extend(["x"])
        sharding.mesh.axis_sizes.extend([2])
        sharding.mesh.device_ids.extend([0, 0])

    _rewrite(path, bad_mesh)
    with pytest.raises(jaxsaver.DataLossError, match="malformed mesh"):
        jaxsaver.import_meta_graph(str(path))

    def huge(meta, info):
        info.saveables[0].shape[:] = [2**40, 2**40]

    _rewrite(path, huge)
    with pytest.raises(jaxsaver.DataLossError, match="malformed shape"):
        jaxsaver.import_meta_graph(str(path), clear_devices=True)
