"""The checkpoint state file and prefix helpers, checked through real files against TensorFlow."""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from jaxsaver import checkpoint_management as cm
from jaxsaver._proto import saver_pb2
from jaxsaver._store import resolve

tf = pytest.importorskip("tensorflow")
from tensorflow.python.checkpoint import checkpoint_management as tf_cm  # noqa: E402


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def state_bytes(directory, latest_filename=None):
    with open(os.path.join(directory, latest_filename or "checkpoint"), "rb") as f:
        return f.read()


# ------------------------------------------------------------------ byte identity with TF


def _cases(base):
    """(save_dir, model_checkpoint_path, kwargs) triples; ``base`` is absolute."""
    d = os.path.join(base, "ckpt")
    return [
        (d, f"{d}/model-1", {}),
        (d, f"{d}/model-3", {"all_model_checkpoint_paths": [f"{d}/model-2", f"{d}/model-3"]}),
        (d, f"{d}/model-3", {"all_model_checkpoint_paths": [f"{d}/model-2"]}),
        (
            d,
            f"{d}/model-3",
            {
                "all_model_checkpoint_paths": [f"{d}/model-2", f"{d}/model-3"],
                "all_model_checkpoint_timestamps": [1795480153.532855, 1795480153.5529907],
                "last_preserved_timestamp": 1795480153.5102098,
            },
        ),
        (d, f"{d}/model-2", {"latest_filename": "my_state"}),
        (d, "/elsewhere/model-2", {"all_model_checkpoint_paths": ["model-1"]}),
        (d, f"{d}/model-2", {"all_model_checkpoint_paths": [f"{d}/model-1"], "rel": True}),
        (d, f"{d}/sub/model-2", {"rel": True, "last_preserved_timestamp": 0.1}),
        (d, "model-2", {"rel": True}),
        # Relative save dirs (run with cwd = tmp_path).
        ("rel", "rel/model-2", {"all_model_checkpoint_paths": ["rel/model-1", "rel/model-2"]}),
        ("rel", "rel/sub/model-2", {}),
        ("rel", "other/model-2", {}),
        ("rel", f"{d}/abs-2", {"all_model_checkpoint_paths": ["rel/model-1"]}),
        ("rel", "rel/model-2", {"rel": True, "all_model_checkpoint_timestamps": [5.0]}),
        ("", "model-2", {}),
        ("rel/", "rel/model-2", {}),
    ]


def _write_both(save_dir, path, kwargs):
    """Writes the state file with TF then with jaxsaver; returns both files' bytes."""
    kwargs = dict(kwargs)
    rel = kwargs.pop("rel", False)
    os.makedirs(save_dir or ".", exist_ok=True)
    name = kwargs.get("latest_filename")
    tf_kwargs = {**kwargs}
    # TF appends to the caller's list, and with save_relative_paths it fails on None (ours
    # treats None as []).
    tf_kwargs["all_model_checkpoint_paths"] = list(kwargs.get("all_model_checkpoint_paths") or [])
    tf_cm.update_checkpoint_state_internal(
        save_dir, path, save_relative_paths=rel, **tf_kwargs
    )
    theirs = state_bytes(save_dir, name)
    os.remove(os.path.join(save_dir, name or "checkpoint"))
    given = list(kwargs.get("all_model_checkpoint_paths") or [])
    if rel:
        cm.update_checkpoint_state_internal(save_dir, path, save_relative_paths=True, **kwargs)
    else:
        cm.update_checkpoint_state(save_dir, path, **kwargs)
    assert list(kwargs.get("all_model_checkpoint_paths") or []) == given  # not mutated
    return state_bytes(save_dir, name), theirs


@pytest.mark.parametrize("index", range(16))
def test_state_file_is_byte_identical_to_tf(tmp_path, monkeypatch, index):
    monkeypatch.chdir(tmp_path)
    save_dir, path, kwargs = _cases(str(tmp_path))[index]
    ours, theirs = _write_both(save_dir, path, kwargs)
    assert ours == theirs


def test_no_stray_temp_files(tmp_path):
    cm.update_checkpoint_state(str(tmp_path), str(tmp_path / "model-1"))
    assert os.listdir(tmp_path) == ["checkpoint"]


# ------------------------------------------------------------------ round trips with TF readers


def test_ours_read_by_tf(tmp_path):
    d = str(tmp_path)
    paths = [f"{d}/model-1", f"{d}/model-2"]
    for p in paths:
        touch(p + ".index")
    cm.update_checkpoint_state(d, paths[-1], paths, all_model_checkpoint_timestamps=[1.0, 2.5])
    state = tf.train.get_checkpoint_state(d)
    assert state.model_checkpoint_path == paths[-1]
    assert list(state.all_model_checkpoint_paths) == paths
    assert list(state.all_model_checkpoint_timestamps) == [1.0, 2.5]
    assert tf.train.latest_checkpoint(d) == paths[-1]


def test_ours_relative_read_by_tf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch("rel/model-2.index")
    cm.update_checkpoint_state_internal(
        "rel", "rel/model-2", ["rel/model-1", "rel/model-2"], save_relative_paths=True
    )
    assert state_bytes("rel").startswith(b'model_checkpoint_path: "model-2"\n')
    assert tf.train.latest_checkpoint("rel") == "rel/model-2"
    assert cm.latest_checkpoint("rel") == "rel/model-2"


def test_tf_read_by_ours(tmp_path):
    d = str(tmp_path)
    touch(f"{d}/model-2.index")
    tf_cm.update_checkpoint_state_internal(
        d,
        f"{d}/model-2",
        [f"{d}/model-1", f"{d}/model-2"],
        save_relative_paths=True,
        all_model_checkpoint_timestamps=[3.0, 4.0],
        last_preserved_timestamp=2.0,
        latest_filename="state",
    )
    ours = cm.get_checkpoint_state(d, "state")
    theirs = tf.train.get_checkpoint_state(d, "state")
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert ours.model_checkpoint_path == f"{d}/model-2"
    assert ours.last_preserved_timestamp == 2.0
    assert cm.latest_checkpoint(d, "state") == f"{d}/model-2"
    assert cm.get_checkpoint_state(d) is None  # default name absent


def test_get_checkpoint_state_accepts_pathlike(tmp_path):
    cm.update_checkpoint_state(tmp_path, str(tmp_path / "m-1"))
    assert cm.get_checkpoint_state(tmp_path).model_checkpoint_path == str(tmp_path / "m-1")


# ------------------------------------------------------------------ errors and edge cases


def test_corrupt_state_file_returns_none(tmp_path, caplog):
    (tmp_path / "checkpoint").write_bytes(b"model_checkpoint_path: {{{ not a proto")
    with caplog.at_level(logging.WARNING, logger="jaxsaver.checkpoint_management"):
        assert cm.get_checkpoint_state(str(tmp_path)) is None
    assert tf.train.get_checkpoint_state(str(tmp_path)) is None
    assert "Checkpoint ignored" in caplog.text
    assert cm.latest_checkpoint(str(tmp_path)) is None


def test_non_utf8_state_file_returns_none(tmp_path):
    (tmp_path / "checkpoint").write_bytes(b"\xff\xfe\x00garbage")
    assert cm.get_checkpoint_state(str(tmp_path)) is None


def test_empty_model_path_raises(tmp_path):
    (tmp_path / "checkpoint").write_bytes(b'all_model_checkpoint_paths: "x"\n')
    with pytest.raises(ValueError) as ours:
        cm.get_checkpoint_state(str(tmp_path))
    with pytest.raises(ValueError) as theirs:
        tf.train.get_checkpoint_state(str(tmp_path))
    assert str(ours.value) == str(theirs.value) == f"Invalid checkpoint state loaded from {tmp_path}"


def test_missing_state_file(tmp_path):
    assert cm.get_checkpoint_state(str(tmp_path)) is None
    assert cm.get_checkpoint_state(str(tmp_path / "nope")) is None
    assert cm.latest_checkpoint(str(tmp_path)) is None


def test_latest_checkpoint_needs_index(tmp_path, caplog):
    d = str(tmp_path)
    cm.update_checkpoint_state(d, f"{d}/model-1")
    with caplog.at_level(logging.ERROR, logger="jaxsaver.checkpoint_management"):
        assert cm.latest_checkpoint(d) is None
    assert f"Couldn't match files for checkpoint {d}/model-1" in caplog.text
    assert tf.train.latest_checkpoint(d) is None
    touch(f"{d}/model-1.data-00000-of-00001")  # data alone is not a checkpoint
    assert cm.latest_checkpoint(d) is None
    touch(f"{d}/model-1.index")
    assert cm.latest_checkpoint(d) == tf.train.latest_checkpoint(d) == f"{d}/model-1"


def test_latest_checkpoint_accepts_v1_file(tmp_path):
    d = str(tmp_path)
    touch(f"{d}/model-1")
    cm.update_checkpoint_state(d, f"{d}/model-1")
    assert cm.latest_checkpoint(d) == tf.train.latest_checkpoint(d) == f"{d}/model-1"
    assert cm.checkpoint_exists(f"{d}/model-1")
    assert not cm.checkpoint_exists(f"{d}/model-2")


def test_conflicting_save_path(tmp_path):
    d = str(tmp_path)
    with pytest.raises(RuntimeError) as ours:
        cm.update_checkpoint_state(d, f"{d}/checkpoint")
    with pytest.raises(RuntimeError) as theirs:
        tf_cm.update_checkpoint_state_internal(d, f"{d}/checkpoint")
    assert str(ours.value) == str(theirs.value)
    assert "conflicts with path used for checkpoint state.  Please use" in str(ours.value)
    assert not (tmp_path / "checkpoint").exists()


def test_timestamp_count_mismatch(tmp_path):
    d = str(tmp_path)
    args = (d, f"{d}/m-2", [f"{d}/m-1", f"{d}/m-2"])
    with pytest.raises(ValueError) as ours:
        cm.generate_checkpoint_state_proto(*args, all_model_checkpoint_timestamps=[1.0])
    with pytest.raises(ValueError) as theirs:
        tf_cm.generate_checkpoint_state_proto(*args, all_model_checkpoint_timestamps=[1.0])
    assert str(ours.value) == str(theirs.value)


def test_generate_appends_model_path_and_logs(caplog):
    paths = ["/d/m-1"]
    with caplog.at_level(logging.INFO, logger="jaxsaver.checkpoint_management"):
        state = cm.generate_checkpoint_state_proto("/d", "/d/m-2", paths)
    assert list(state.all_model_checkpoint_paths) == ["/d/m-1", "/d/m-2"]
    assert paths == ["/d/m-1"]
    assert "/d/m-2 is not in all_model_checkpoint_paths. Manually adding it." in caplog.text


# ------------------------------------------------------------------ prefix helpers


def _layout(d):
    files = [
        "model-1.index",
        "model-1.data-00000-of-00002",
        "model-1.data-00001-of-00002",
        "model-1.meta",
        # must survive removing model-1:
        "model-10.index",
        "model-10.data-00000-of-00001",
        "model-1.data-00000-of-00001.tempstate123",
        "model-1.data-0000-of-00001",
        "model-1",
        "checkpoint",
    ]
    for name in files:
        touch(os.path.join(d, name))
    return files


@pytest.mark.parametrize("version", [saver_pb2.SaverDef.V2, saver_pb2.SaverDef.V1])
def test_remove_checkpoint_matches_tf(tmp_path, version):
    ours_dir, tf_dir = str(tmp_path / "ours"), str(tmp_path / "tf")
    _layout(ours_dir)
    _layout(tf_dir)
    cm.remove_checkpoint(f"{ours_dir}/model-1", version)
    tf_cm.remove_checkpoint(f"{tf_dir}/model-1", version)
    assert sorted(os.listdir(ours_dir)) == sorted(os.listdir(tf_dir))
    remaining = set(os.listdir(ours_dir))
    assert "model-1.meta" not in remaining
    if version == saver_pb2.SaverDef.V2:
        assert not {"model-1.index", "model-1.data-00000-of-00002"} & remaining
        assert "model-1" in remaining
    else:
        assert "model-1" not in remaining and "model-1.index" in remaining


def test_remove_missing_checkpoint_is_quiet(tmp_path):
    cm.remove_checkpoint(str(tmp_path / "nothing"))
    cm.remove_checkpoint(str(tmp_path / "no_dir" / "nothing"))


def test_get_checkpoint_mtimes(tmp_path):
    d = str(tmp_path)
    touch(f"{d}/a.index")
    touch(f"{d}/b")  # V1
    touch(f"{d}/c.index")
    os.utime(f"{d}/a.index", (1_000_000_000.7, 1_000_000_000.7))
    os.utime(f"{d}/b", (1_100_000_000.2, 1_100_000_000.2))
    os.utime(f"{d}/c.index", (1_200_000_000.0, 1_200_000_000.0))
    prefixes = [f"{d}/a", f"{d}/missing", f"{d}/b", f"{d}/c"]
    ours = cm.get_checkpoint_mtimes(prefixes)
    assert ours == tf_cm.get_checkpoint_mtimes(prefixes)
    assert ours == [1_000_000_000.0, 1_100_000_000.0, 1_200_000_000.0]


@pytest.mark.parametrize(
    "name",
    [
        "model.ckpt-123",
        "model.ckpt-123-?????-of-00005",
        "model.ckpt-123-00001-of-00002",
        "/a/b/model-00001-of-00002.x",
        "model-of-1",
    ],
)
@pytest.mark.parametrize("suffix", ["meta", "graph"])
def test_meta_graph_filename(name, suffix):
    assert cm.meta_graph_filename(name, suffix) == tf_cm.meta_graph_filename(name, suffix)


# ------------------------------------------------------------------ memory:// store


def test_memory_round_trip():
    d = f"memory://cm-{uuid.uuid4().hex}/run"
    paths = [f"{d}/model-1", f"{d}/model-2"]
    store, _ = resolve(d)
    for p in paths:
        _, key = resolve(p)
        store.write(key + ".index", b"i")
        store.write(key + ".data-00000-of-00001", b"d")
    cm.update_checkpoint_state(d, paths[-1], paths, all_model_checkpoint_timestamps=[1.0, 2.0])

    raw = store.read(resolve(d + "/checkpoint")[1])
    # memory:// is relative to os.path, as gs:// is in TF: paths are stored relative.
    assert raw == (
        b'model_checkpoint_path: "model-2"\n'
        b'all_model_checkpoint_paths: "model-1"\n'
        b'all_model_checkpoint_paths: "model-2"\n'
        b"all_model_checkpoint_timestamps: 1.0\n"
        b"all_model_checkpoint_timestamps: 2.0\n"
    )
    state = cm.get_checkpoint_state(d)
    assert list(state.all_model_checkpoint_paths) == paths
    assert cm.latest_checkpoint(d) == paths[-1]
    assert cm.checkpoint_exists(paths[0])
    assert len(cm.get_checkpoint_mtimes(paths + [f"{d}/none"])) == 2

    cm.remove_checkpoint(paths[0])
    assert not cm.checkpoint_exists(paths[0])
    assert store.list(resolve(paths[0])[1]) == []
    assert cm.latest_checkpoint(d) == paths[-1]

    cm.update_checkpoint_state(d, paths[-1], latest_filename="other")
    assert cm.get_checkpoint_state(d, "other").model_checkpoint_path == paths[-1]

    store.write(resolve(d + "/checkpoint")[1], b"not { a proto")
    assert cm.get_checkpoint_state(d) is None
