"""CheckpointManager through real files: restarts in new processes, policies, sidecars, kills, TF interop."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsaver
from jaxsaver import CheckpointManager
from jaxsaver._errors import CheckpointNotFoundError, DataLossError, InvalidArgumentError
from jaxsaver._history import MAX_SIDECAR_BYTES, sidecar_path
from jaxsaver.checkpoint_management import get_checkpoint_state, update_checkpoint_state

LOSSES = [0.9, 0.5, 0.8, 0.3, 0.7, 0.6, 0.2, 0.95, 0.85, 0.99]  # steps 1..10: best 7 (0.2), 4 (0.3)
ENV = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH", "")] if p)}


def state_at(step: int) -> dict:
    return {"params": {"w": jnp.full((3, 2), float(step), jnp.float32)}, "step": step}


def on_disk(directory) -> list[int]:
    """Steps of the checkpoints (an .index) in a directory."""
    return sorted(int(n[len("model-"):-len(".index")]) for n in os.listdir(directory)
                  if n.startswith("model-") and n.endswith(".index"))


def listed(directory) -> list[str]:
    state = get_checkpoint_state(str(directory))
    return [os.path.basename(p) for p in state.all_model_checkpoint_paths]


def tree_digest(root, skip) -> dict[str, str]:
    """Every file under ``root`` outside ``skip``, with a hash of its bytes and its mtime."""
    out = {}
    for base, _, files in os.walk(root):
        if os.path.abspath(base).startswith(os.path.abspath(skip)):
            continue
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[path] = f"{hashlib.sha256(f.read()).hexdigest()} {os.stat(path).st_mtime_ns}"
    return out


RUN = textwrap.dedent("""
    import json, sys
    import jax.numpy as jnp
    import jaxsaver
    directory, first, last, keep, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    template = {"params": {"w": jnp.zeros((3, 2), jnp.float32)}, "step": 0}
    with jaxsaver.CheckpointManager(directory, template, max_to_keep=keep, async_save=mode == "async") as mgr:
        for step in range(first, last + 1):
            mgr.save({"params": {"w": jnp.full((3, 2), float(step), jnp.float32)}, "step": step}, step,
                     metrics={"loss": 1.0 / step}, metadata={"run": mode})
    print(json.dumps(mgr.all_steps()))
""")


def run_process(*args, timeout=120):
    proc = subprocess.run([sys.executable, "-c", RUN, *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


# ------------------------------------------------------------------------------ acceptance 1


def test_run_b_in_a_new_process_applies_max_to_keep_to_run_a(tmp_path):
    directory = tmp_path / "ckpt"
    # Things outside the directory that look like checkpoints: none may be touched.
    other = tmp_path / "other"
    jaxsaver.Saver(template=state_at(0)).save(state_at(1), str(other / "model"), global_step=1)
    (tmp_path / "model-1.index").write_bytes(b"not mine")
    (tmp_path / "ckpt_notes.txt").write_text("keep me")
    before = tree_digest(tmp_path, directory)

    assert run_process(directory, 1, 5, 2, "sync") == [4, 5]
    assert on_disk(directory) == [4, 5] and listed(directory) == ["model-4", "model-5"]
    assert run_process(directory, 6, 7, 2, "async") == [6, 7]

    assert on_disk(directory) == [6, 7]
    assert listed(directory) == ["model-6", "model-7"]
    assert get_checkpoint_state(str(directory)).model_checkpoint_path == str(directory / "model-7")
    leftover = sorted(os.listdir(directory))
    assert leftover == ["checkpoint"] + [f"model-{s}.{ext}" for s in (6, 7)
                                         for ext in ("data-00000-of-00001", "index", "meta", "metadata.json")]
    assert tree_digest(tmp_path, directory) == before
    mgr = CheckpointManager(directory, state_at(0))
    assert mgr.all_steps() == [6, 7] and mgr.metadata(6) == {"run": "async"}
    np.testing.assert_array_equal(mgr.restore()["params"]["w"], np.full((3, 2), 7.0, np.float32))


# ------------------------------------------------------------------------------ acceptance 2


def test_best_n_through_real_files_keeps_two_lowest_losses_and_the_latest(tmp_path):
    with CheckpointManager(tmp_path, state_at(0), max_to_keep=1, best_n=2, best_fn="loss") as mgr:
        for step, loss in enumerate(LOSSES, start=1):
            assert mgr.save(state_at(step), step, metrics={"loss": jnp.float32(loss)}) == str(tmp_path / f"model-{step}")
        assert mgr.all_steps() == [4, 7, 10] and mgr.best_step() == 7
    assert on_disk(tmp_path) == [4, 7, 10] and listed(tmp_path) == ["model-4", "model-7", "model-10"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("model-1.", "model-2.", "model-5."))]
    again = CheckpointManager(tmp_path, state_at(0), max_to_keep=1, best_n=2, best_fn=lambda m: m["loss"])
    assert again.best_step() == 7 and again.metrics(4) == {"loss": pytest.approx(0.3)}
    # The next save ranks against what the first run kept: 0.25 beats 0.3 (step 4 goes, 10 goes as not latest).
    again.save(state_at(11), 11, metrics={"loss": 0.25})
    assert on_disk(tmp_path) == [7, 11]


def test_keep_every_n_steps_and_max_mode_through_real_files(tmp_path):
    with CheckpointManager(tmp_path / "a", state_at(0), max_to_keep=1, keep_every_n_steps=4) as mgr:
        for step in range(1, 11):
            mgr.save(state_at(step), step)
    assert on_disk(tmp_path / "a") == [4, 8, 10]
    with CheckpointManager(tmp_path / "b", state_at(0), max_to_keep=2, keep_every_n_steps=4, best_n=1,
                           best_fn="acc", best_mode="max") as mgr:
        for step, loss in enumerate(LOSSES, start=1):
            mgr.save(state_at(step), step, metrics={"acc": 1 - loss})
    # latest 2 (9, 10) | multiples of 4 (4, 8) | best accuracy (7)
    assert on_disk(tmp_path / "b") == [4, 7, 8, 9, 10]


def test_keep_every_n_hours_with_an_injected_clock(tmp_path):
    clock = iter(1000.0 + 1800.0 * i for i in range(20))  # one save per half hour
    with CheckpointManager(tmp_path, state_at(0), max_to_keep=1, keep_checkpoint_every_n_hours=1.0,
                           clock=lambda: next(clock)) as mgr:
        for step in range(1, 8):
            mgr.save(state_at(step), step)
    assert on_disk(tmp_path) == [1, 3, 5, 7]
    assert list(get_checkpoint_state(str(tmp_path)).all_model_checkpoint_timestamps) == [1000.0, 4600.0, 8200.0, 11800.0]


# ------------------------------------------------------------------------------ acceptance 3


def test_metrics_and_metadata_round_trip_and_survive_a_restart(tmp_path):
    metadata = {"lr": 0.1, "tags": ["a", "b"], "nested": {"ok": True, "n": None}, "pair": (1, 2)}
    with CheckpointManager(tmp_path, state_at(0), async_save=True) as mgr:
        mgr.save(state_at(1), 1, metrics={"loss": jnp.asarray(0.5, jnp.float32), "acc": np.float64(0.25),
                                          "seen": np.int64(1 << 40), "nan": float("nan")}, metadata=metadata)
        mgr.save(state_at(2), 2)
        mgr.wait_until_finished()
        assert mgr.metrics(2) == {} and mgr.metadata(2) is None
    again = CheckpointManager(tmp_path, state_at(0))
    got = again.metrics(1)
    assert got["loss"] == 0.5 and got["acc"] == 0.25 and got["seen"] == 1 << 40 and np.isnan(got["nan"])
    assert again.metadata(1) == {**metadata, "pair": [1, 2]}
    with open(sidecar_path(str(tmp_path / "model-1"))) as f:
        assert json.load(f)["metadata"]["lr"] == 0.1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"metrics": {"loss": "low"}}, "metric 'loss'"),
        ({"metrics": {"loss": jnp.ones(2)}}, "metric 'loss'"),
        ({"metadata": {"when": object()}}, r"metadata\['when'\]"),
        ({"metadata": {1: "x"}}, "JSON keys are strings"),
    ],
)
def test_bad_metrics_or_metadata_are_refused_before_anything_is_written(tmp_path, kwargs, match):
    mgr = CheckpointManager(tmp_path, state_at(0))
    with pytest.raises(InvalidArgumentError, match=match):
        mgr.save(state_at(1), 1, **kwargs)
    assert os.listdir(tmp_path) == [] and mgr.all_steps() == []


KILLED = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    import jaxsaver
    big = {"w": jnp.ones((16, 1 << 20), jnp.float32)}  # 64 MiB: long enough to be killed mid-write
    mgr = jaxsaver.CheckpointManager(sys.argv[1], big, max_to_keep=3)
    for step in range(1, 1000):
        mgr.save(big, step, metrics={"loss": 1.0 / step})
""")


def _kill_between_sidecar_and_commit(directory) -> int | None:
    """Runs KILLED and SIGKILLs it while a save's sidecar exists and its index does not.

    Returns the step caught, or None when the kill landed after that save's commit.
    """
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(directory)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            names = set(os.listdir(directory)) if directory.exists() else set()
            pending = sorted(int(n[len("model-"):-len(".metadata.json")]) for n in names
                             if n.endswith(".metadata.json") and n.replace(".metadata.json", ".index") not in names)
            if pending and pending[-1] > 1:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return pending[-1] if not (directory / f"model-{pending[-1]}.index").exists() else None
            time.sleep(0.001)
        pytest.fail("the save process ended or hung: " + proc.stderr.read().decode()[-2000:])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        proc.stderr.close()


def test_a_save_killed_before_its_commit_leaves_no_visible_orphan(tmp_path, caplog):
    for _ in range(3):  # a kill that lands just after a commit proves nothing: run on and try again
        killed_at = _kill_between_sidecar_and_commit(tmp_path)
        if killed_at is not None:
            break
    else:
        pytest.fail("three kills all landed after a commit")
    orphan = str(tmp_path / f"model-{killed_at}")
    assert os.path.exists(sidecar_path(orphan))  # the sidecar was written before the kill...
    with caplog.at_level(logging.WARNING, logger="jaxsaver.manager"):
        mgr = CheckpointManager(tmp_path, {"w": jnp.zeros((16, 1 << 20), jnp.float32)}, max_to_keep=3)
    # ...but it is no checkpoint: not tracked, not untracked, not latest; every listed one has its metrics.
    assert killed_at not in mgr.all_steps() and mgr.all_steps() == list(range(max(1, killed_at - 3), killed_at))
    assert all(mgr.metrics(s) == {"loss": pytest.approx(1.0 / s)} for s in mgr.all_steps())
    assert mgr.untracked() == []
    assert jaxsaver.latest_checkpoint(str(tmp_path)) == str(tmp_path / f"model-{killed_at - 1}")
    assert any("never committed" in r.getMessage() and orphan in r.getMessage() for r in caplog.records)
    removed = mgr.cleanup_untracked()
    assert removed and all(os.path.basename(p).startswith(f"model-{killed_at}.") for p in removed)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(f"model-{killed_at}.")]
    assert on_disk(tmp_path) == mgr.all_steps()


def test_a_failed_save_removes_its_sidecar_sync_and_async(tmp_path):
    for async_save in (False, True):
        directory = tmp_path / f"async_{async_save}"
        mgr = CheckpointManager(directory, state_at(0), async_save=async_save)
        mgr.save(state_at(1), 1, metrics={"loss": 1.0})
        (directory / "model-2.index").mkdir()  # the commit cannot replace a directory
        if async_save:
            assert mgr.save(state_at(2), 2, metrics={"loss": 0.5}) == str(directory / "model-2")
            with pytest.raises(OSError, match="model-2"):
                mgr.wait_until_finished()
        else:
            with pytest.raises(OSError):
                mgr.save(state_at(2), 2, metrics={"loss": 0.5})
        assert not (directory / "model-2.metadata.json").exists() and not (directory / "model-2.meta").exists()
        assert mgr.all_steps() == [1] and listed(directory) == ["model-1"]
        os.rmdir(directory / "model-2.index")
        mgr.save(state_at(2), 2)
        mgr.close()
        assert on_disk(directory) == [1, 2]


def test_corrupt_or_huge_sidecars_are_errors_not_allocations(tmp_path, caplog):
    with CheckpointManager(tmp_path, state_at(0), best_n=1, best_fn="loss") as mgr:
        for step in (1, 2, 3):
            mgr.save(state_at(step), step, metrics={"loss": float(step)})
    (tmp_path / "model-1.metadata.json").write_bytes(b'{"format": "jaxsaver.manager/1", "step": "x"')
    with open(tmp_path / "model-2.metadata.json", "r+b") as f:
        f.truncate(MAX_SIDECAR_BYTES + 1)  # sparse: the reader must refuse it by its size
    with caplog.at_level(logging.WARNING, logger="jaxsaver.manager"):
        mgr = CheckpointManager(tmp_path, state_at(0), best_n=1, best_fn="loss")
    assert mgr.all_steps() == [1, 2, 3] and mgr.best_step() == 3
    assert sum("Ignoring the metrics" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(DataLossError, match="model-1.metadata.json"):
        mgr.metrics(1)
    with pytest.raises(DataLossError, match="more than a sidecar may hold"):
        mgr.metrics(2)


# ------------------------------------------------------------------------------ acceptance 4


def test_restore_or_initialize(tmp_path):
    calls = []

    def init():
        calls.append(1)
        return {"params": {"w": jnp.zeros((3, 2), jnp.bfloat16)}, "step": 0, "key": jax.random.key(0)}

    template = init()
    mgr = CheckpointManager(tmp_path, template)
    state = mgr.restore_or_initialize(init)
    assert len(calls) == 2 and state["step"] == 0
    saved = {"params": {"w": jnp.arange(6, dtype=jnp.bfloat16).reshape(3, 2) / 7}, "step": 12,
             "key": jax.random.key(42)}
    mgr.save(saved, 12)
    mgr.save({**saved, "step": 13, "params": {"w": saved["params"]["w"] * 2}}, 13)
    mgr.close()
    restored = CheckpointManager(tmp_path, template).restore_or_initialize(init)
    assert len(calls) == 2  # not called on a populated directory
    assert restored["step"] == 13 and restored["params"]["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), np.asarray(saved["params"]["w"] * 2))
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(saved["key"]))
    older = CheckpointManager(tmp_path, template).restore(step=12)
    assert older["step"] == 12


def test_restore_errors_name_the_steps(tmp_path):
    mgr = CheckpointManager(tmp_path, state_at(0))
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint to restore"):
        mgr.restore()
    mgr.save(state_at(3), 3)
    with pytest.raises(CheckpointNotFoundError, match=r"step 9 .*steps: \[3\]"):
        mgr.restore(step=9)


# ------------------------------------------------------------------------------ intervals, untracked, outside


def test_save_interval_and_force(tmp_path):
    mgr = CheckpointManager(tmp_path, state_at(0), save_interval_steps=3)
    assert [mgr.should_save(s) for s in (0, 1, 2, 3)] == [True, False, False, True]
    assert mgr.save(state_at(1), 1) is None
    assert mgr.save(state_at(3), 3) == str(tmp_path / "model-3")
    assert mgr.save(state_at(3), 3) is None and not mgr.should_save(3)  # never overwritten
    assert mgr.save(state_at(4), 4, force=True) == str(tmp_path / "model-4")
    with pytest.raises(InvalidArgumentError, match="not after the latest checkpoint's step 4"):
        mgr.save(state_at(2), 2, force=True)
    assert on_disk(tmp_path) == [3, 4]


def test_untracked_checkpoints_are_warned_kept_and_cleaned_only_on_request(tmp_path, caplog):
    plain = jaxsaver.Saver(template=state_at(0), max_to_keep=None)  # TF1: tracks nothing, lists the newest
    for step in (1, 2, 3):
        plain.save(state_at(step), str(tmp_path / "model"), global_step=step)
    jaxsaver.Saver(template=state_at(0)).save(state_at(0), str(tmp_path / "other"), global_step=1)
    assert listed(tmp_path) == ["other-1"]
    plain.save(state_at(3), str(tmp_path / "model"), global_step=3)
    with caplog.at_level(logging.WARNING, logger="jaxsaver.manager"):
        mgr = CheckpointManager(tmp_path, state_at(0), max_to_keep=1)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "not listed in its state file" in text and "model-1" in text and "other-1" in text
    assert mgr.all_steps() == [3]
    mgr.save(state_at(4), 4)
    assert on_disk(tmp_path) == [1, 2, 4]  # 3 was tracked and goes; 1 and 2 are untracked and stay
    assert [os.path.basename(p) for p in mgr.untracked()] == ["other-1", "model-1", "model-2"]
    removed = mgr.cleanup_untracked()
    assert [os.path.basename(p) for p in removed] == ["model-1", "model-2"]
    assert on_disk(tmp_path) == [4] and (tmp_path / "other-1.index").exists()
    assert [os.path.basename(p) for p in mgr.untracked()] == ["other-1"]


def test_state_file_entries_outside_the_directory_are_never_deleted(tmp_path, caplog):
    outside = str(tmp_path / "elsewhere" / "model")
    jaxsaver.Saver(template=state_at(0)).save(state_at(9), outside, global_step=9)
    directory = tmp_path / "ckpt"
    with CheckpointManager(directory, state_at(0), max_to_keep=1) as mgr:
        mgr.save(state_at(1), 1)
    update_checkpoint_state(str(directory), str(directory / "model-1"), [outside + "-9", str(directory / "model-1")])
    with caplog.at_level(logging.WARNING, logger="jaxsaver.manager"):
        mgr = CheckpointManager(directory, state_at(0), max_to_keep=1)
    assert "does not manage" in " ".join(r.getMessage() for r in caplog.records)
    assert mgr.all_steps() == [1]
    mgr.save(state_at(2), 2)
    assert os.path.exists(outside + "-9.index") and on_disk(directory) == [2]
    assert listed(directory) == ["model-2"]


def test_memory_store_directory(tmp_path):
    directory = "memory://test_manager_mem/run"
    with CheckpointManager(directory, state_at(0), max_to_keep=2, async_save=True) as mgr:
        for step in range(1, 5):
            mgr.save(state_at(step), step, metrics={"loss": 1.0 / step})
    again = CheckpointManager(directory, state_at(0), max_to_keep=2)
    assert again.all_steps() == [3, 4] and again.metrics(3) == {"loss": pytest.approx(1 / 3)}
    assert jaxsaver.latest_checkpoint(directory) == directory + "/model-4"
    assert int(again.restore()["step"]) == 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_to_keep": 0}, "max_to_keep"),
        ({"best_n": 2}, "best_n needs best_fn"),
        ({"best_n": 1, "best_fn": "loss", "best_mode": "median"}, "best_mode"),
        ({"save_interval_steps": 0}, "save_interval_steps"),
        ({"checkpoint_name": "a/b"}, "checkpoint_name"),
        ({"keep_every_n_steps": 0}, "keep_every_n_steps"),
    ],
)
def test_invalid_options(tmp_path, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        CheckpointManager(tmp_path, state_at(0), **kwargs)


# ------------------------------------------------------------------------------ TensorFlow


def test_tf1_directory_is_managed_and_tf_reads_the_managed_one(tmp_path):
    tf = pytest.importorskip("tensorflow")
    graph = tf.Graph()
    with graph.as_default():
        var = tf.compat.v1.Variable(np.zeros(3, np.float32), name="w")
        assign = tf.compat.v1.placeholder(tf.float32, [3])
        op = var.assign(assign)
        saver = tf.compat.v1.train.Saver([var], max_to_keep=5)
        with tf.compat.v1.Session(graph=graph) as sess:
            for step in (1, 2, 3):
                sess.run(op, {assign: np.full(3, step, np.float32)})
                saver.save(sess, str(tmp_path / "model"), global_step=step)
    template = {"w": jnp.zeros(3, jnp.float32)}
    mgr = CheckpointManager(tmp_path, template, max_to_keep=2)
    assert mgr.all_steps() == [1, 2, 3] and mgr.metrics(1) is None
    np.testing.assert_array_equal(mgr.restore(step=2)["w"], np.full(3, 2.0, np.float32))
    mgr.save({"w": jnp.full(3, 4.0, jnp.float32)}, 4, metrics={"loss": 0.5})
    assert on_disk(tmp_path) == [3, 4]
    # TensorFlow ignores the sidecar: it reads the state file and the bundle.
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-4")
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["model-3", "model-4"]
    np.testing.assert_array_equal(tf.train.load_checkpoint(str(tmp_path / "model-4")).get_tensor("w"),
                                  np.full(3, 4.0, np.float32))


# ------------------------------------------------------------------------------ jaxsaver ls


def test_ls_shows_metrics_the_rules_keeping_each_and_untracked(tmp_path, capsys):
    from jaxsaver.cli import main

    jaxsaver.Saver(template=state_at(0)).save(state_at(0), str(tmp_path / "model"), global_step=0, write_state=False)
    with CheckpointManager(tmp_path, state_at(0), max_to_keep=1, keep_every_n_steps=4, best_n=1,
                           best_fn="loss") as mgr:
        for step, loss in enumerate(LOSSES, start=1):
            mgr.save(state_at(step), step, metrics={"loss": loss, "acc": 1 - loss})
    (tmp_path / "model-11.metadata.json").write_text("{}")  # a save that never committed
    capsys.readouterr()
    assert main(["ls", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["step"]: r for r in data["checkpoints"]}
    assert sorted(rows) == [4, 7, 8, 10]  # model-0 is untracked: kept on disk, not a row
    assert rows[7]["metrics"] == {"loss": 0.2, "acc": pytest.approx(0.8)} and rows[7]["kept_by"] == ["best_n=1 (min)"]
    assert rows[4]["kept_by"] == ["keep_every_n_steps=4"] and rows[8]["kept_by"] == ["keep_every_n_steps=4"]
    assert rows[10]["kept_by"] == ["latest", "max_to_keep=1"]
    assert data["untracked"] == [str(tmp_path / "model-0")]
    assert data["uncommitted_files"] == [str(tmp_path / "model-11.metadata.json")]
    assert main(["ls", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "metrics" in lines[1] and "kept by" in lines[1]
    row7 = next(line for line in lines if line.endswith("model-7"))
    assert "loss=0.2 acc=0.8" in row7 and "best_n=1 (min)" in row7
    assert lines[-4].startswith("1 untracked") and lines[-3].strip() == str(tmp_path / "model-0")
    assert lines[-1].strip() == str(tmp_path / "model-11.metadata.json")


def test_ls_of_a_directory_without_state_file_lists_its_untracked_checkpoints(tmp_path, capsys):
    from jaxsaver.cli import main

    jaxsaver.Saver(template=state_at(0)).save(state_at(1), str(tmp_path / "model"), global_step=1,
                                              write_state=False)
    assert main(["ls", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0 checkpoints") and "1 untracked" in out and str(tmp_path / "model-1") in out
    assert main(["ls", str(tmp_path / "empty")]) == 2


def test_sharded_async_saver_and_an_empty_saver(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("a", "b"))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("a", "b"))
    state = {"w": jax.device_put(jnp.arange(64, dtype=jnp.float32).reshape(8, 8), sharding)}
    saver = jaxsaver.Saver(template=state, sharded=True, snapshot="device")
    with CheckpointManager(tmp_path, saver, max_to_keep=1, async_save=True) as mgr:
        for step in (1, 2):
            mgr.save({"w": state["w"] * step}, step, metrics={"loss": 1.0 / step})
        restored = mgr.restore()
    assert restored["w"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(64, dtype=np.float32).reshape(8, 8) * 2)
    assert on_disk(tmp_path) == [2] and not [n for n in os.listdir(tmp_path) if "_temp" in n]
    empty = CheckpointManager(tmp_path / "empty", jaxsaver.Saver(template={}, allow_empty=True))
    with pytest.raises(jaxsaver.FailedPreconditionError, match="no variables to save"):
        empty.save({}, 1)
    assert empty.all_steps() == [] and empty.should_save(1)


def test_padded_step_names_are_managed_under_their_own_spelling(tmp_path):
    saver = jaxsaver.Saver(template=state_at(0), pad_step_number=True, max_to_keep=5)
    for step in (1, 2, 3):
        saver.save(state_at(step), str(tmp_path / "model"), global_step=step)
    mgr = CheckpointManager(tmp_path, state_at(0), max_to_keep=2)
    assert mgr.all_steps() == [1, 2, 3] and mgr.checkpoint_path(2) == str(tmp_path / "model-00000002")
    assert int(mgr.restore(step=2)["step"]) == 2
    mgr.save(state_at(4), 4)
    assert listed(tmp_path) == ["model-00000003", "model-4"]
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".index")) == ["model-00000003.index", "model-4.index"]
    assert CheckpointManager(tmp_path, state_at(0)).untracked() == []
