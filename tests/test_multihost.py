"""Multi-process saves with real ``jax.distributed`` processes (CPU, gloo) on 127.0.0.1.

Each launch starts N workers (``tests/multihost_worker.py``) with M simulated devices each, runs
several scenarios in sequence in one launch (process start-up dominates), and is bounded by a
hard timeout after which every worker is killed. The checks here read the results the workers
report and the files they left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import multihost_worker as worker  # noqa: E402
from store_conformance import free_port  # noqa: E402

pytestmark = pytest.mark.timeout(300)

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
LAUNCH_TIMEOUT_S = 150
KILL_TIMEOUT_S = 6.0
# Process 0's first device holds 8 544 bytes (a "big" row block, a shard of each other global
# array, and the replicated values), process 1's first device 8 448: at this cap only process 0's
# group is split, so the processes' part counts differ.
OBJECT_CAP = 8500


class Launch:
    """The outcome of one launch: per process, its results, exit status and log."""

    def __init__(self, results: list[list[dict]], returncodes: list[int], logs: list[str]) -> None:
        self.results, self.returncodes, self.logs = results, returncodes, logs

    def scenario(self, index: int, pid: int) -> dict:
        got = self.results[pid]
        assert len(got) > index, f"process {pid} did not report scenario {index}:\n{self.logs[pid][-4000:]}"
        result = got[index]
        assert "error" not in result or result.get("expected"), f"process {pid}: {result.get('traceback', result)}"
        return result

    def all(self, index: int, alive: list[int] | None = None) -> list[dict]:
        pids = alive if alive is not None else range(len(self.results))
        return [self.scenario(index, pid) for pid in pids]


def launch(tmp: Path, nproc: int, ndev: int, scenarios: list[dict], env: dict | None = None) -> Launch:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    procs, outs, logs = [], [], []
    child_env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    child_env |= env or {}
    try:
        for pid in range(nproc):
            out = tmp / f"result-{pid}.json"
            log = open(tmp / f"log-{pid}.txt", "w")
            config = {"port": port, "nproc": nproc, "pid": pid, "ndev": ndev, "out": str(out), "scenarios": scenarios}
            procs.append(subprocess.Popen([sys.executable, WORKER, json.dumps(config)], env=child_env,
                                          stdout=log, stderr=subprocess.STDOUT))
            outs.append(out)
            logs.append(log)
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for log in logs:
            log.close()
    texts = [(tmp / f"log-{pid}.txt").read_text(errors="replace") for pid in range(nproc)]
    results = [json.loads(out.read_text()) if out.exists() else [] for out in outs]
    return Launch(results, [p.returncode for p in procs], texts)


def unique_bytes() -> int:
    return sum(np.asarray(v).nbytes for v in worker.expected_values().values())


def data_bytes(written: dict[str, int]) -> dict[str, int]:
    return {path: n for path, n in written.items() if re.search(r"\.data-\d{5}-of-\d{5}$", path)}


# ----------------------------------------------------------------------------- launches


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'moto[server]')")
    from store_conformance import MotoS3

    server = MotoS3()
    server.create_bucket("multihost")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_by_four(tmp_path_factory, s3):
    """2 processes × 4 devices: two blocking saves, an asynchronous save, a save to S3."""
    root = tmp_path_factory.mktemp("two_by_four")
    scenarios = [
        {"kind": "save", "mesh": [2, 4], "prefix": str(root / "a" / "model"), "steps": [1, 2], "max_to_keep": 1},
        {"kind": "save", "mesh": [4, 2], "prefix": str(root / "async" / "model"), "steps": [5], "blocking": False},
        {"kind": "save", "mesh": [2, 4], "prefix": "s3://multihost/run/model", "steps": [1]},
        {"kind": "restore", "mesh": [4, 2], "prefix": "s3://multihost/run/model-1"},
        {"kind": "mismatch", "mesh": [2, 4], "prefix": str(root / "mismatch" / "model")},
    ]
    # The object cap splits process 0's first device group in two on S3 (see OBJECT_CAP): the
    # global part numbering must take uneven part counts in.
    return root, launch(root / "run", 2, 4, scenarios, env=s3.env() | {"JAXSAVER_MAX_OBJECT_BYTES": str(OBJECT_CAP)})


@pytest.fixture(scope="module")
def four_by_two(tmp_path_factory):
    """4 processes × 2 devices: a save, then a save during which process 2 is SIGKILLed."""
    root = tmp_path_factory.mktemp("four_by_two")
    scenarios = [
        {"kind": "save", "mesh": [4, 2], "prefix": str(root / "d" / "model"), "steps": [1]},
        {"kind": "kill", "mesh": [4, 2], "prefix": str(root / "d" / "model"), "step": 2, "victim": 2,
         "timeout": KILL_TIMEOUT_S},
    ]
    return root, launch(root / "run", 4, 2, scenarios)


@pytest.fixture(scope="module")
def after_kill(four_by_two):
    """2 processes × 4 devices on the 4-process checkpoint: restore onto another mesh, save again."""
    root, _ = four_by_two
    scenarios = [
        {"kind": "restore", "mesh": [2, 4], "prefix": str(root / "d" / "model-1")},
        {"kind": "save", "mesh": [2, 4], "prefix": str(root / "d" / "model"), "steps": [3]},
    ]
    return root, launch(root / "run2", 2, 4, scenarios)


# ----------------------------------------------------------------------------- acceptance 1


@pytest.mark.parametrize("which", ["two_by_four", "four_by_two"])
def test_every_process_returns_the_same_prefix_and_round_trips(which, request):
    root, run = request.getfixturevalue(which)
    results = run.all(0)
    if which == "two_by_four":  # max_to_keep=1: process 0 deleted model-1, every process knows
        assert all(r["last_checkpoints"] == [str(root / "a" / "model-2")] for r in results)
        assert not list((root / "a").glob("model-1*"))
    prefixes = {tuple(r["prefixes"]) for r in results}
    assert len(prefixes) == 1, prefixes
    for r in results:
        assert r["roundtrip_bad"] == []
        assert r["last_checkpoints"] == results[0]["last_checkpoints"]  # one retention view
    state = (Path(results[0]["prefixes"][-1]).parent / "checkpoint").read_text()
    assert f'model_checkpoint_path: "{results[0]["prefixes"][-1]}"' in state


@pytest.mark.parametrize("which,name", [("two_by_four", "a/model-2"), ("four_by_two", "d/model-1")])
def test_single_process_and_tensorflow_read_the_merged_checkpoint_bit_exactly(which, name, request):
    import jax

    import jaxsaver

    root, run = request.getfixturevalue(which)
    run.all(0)
    prefix = str(root / name)
    expected = worker.expected_values()
    flat = jaxsaver.restore_as_numpy(prefix)
    assert sorted(flat) == sorted(expected)
    for key, want in expected.items():
        assert np.asarray(flat[key]).tobytes() == np.asarray(want).tobytes(), key
    tf = pytest.importorskip("tensorflow")
    reader = tf.train.load_checkpoint(prefix)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(expected)
    for key, want in expected.items():
        got = np.asarray(reader.get_tensor(key))
        assert got.shape == np.shape(want) and got.tobytes() == np.asarray(want).tobytes(), key
    assert tf.train.latest_checkpoint(str(Path(prefix).parent)) == prefix
    assert len(jax.devices()) == 8


def test_no_coordination_keys_stay_behind_but_the_last_step(two_by_four):
    _, run = two_by_four
    run.all(0)
    # Process 0 removes the other steps before its save returns (another process may look
    # earlier): after two saves only the last step of the last one is left, for the next save.
    keys = run.scenario(0, 0)["keys_after"]
    assert all(re.fullmatch(r"jaxsaver/[0-9a-f]{12}-1/committed/(\d+|all)", k) for k in keys), keys
    assert len({k.split("/")[1] for k in keys}) == 1 and len(keys) == 3, keys


# ----------------------------------------------------------------------------- acceptance 2


def test_saved_by_four_restored_by_two_on_another_mesh(after_kill):
    _, run = after_kill
    for r in run.all(0):
        assert r["bad"] == []
        # Each process reads its own blocks (the contiguous byte span covering each piece of a
        # stored slice, so a little more where a block cuts stored rows), never everything.
        assert r["addressable"] <= r["data_read"] < unique_bytes(), r
        assert r["specs"]["sharded"] == "P('b', None)" and r["mesh"] == [2, 4]  # the target's layout


def test_saved_by_four_restored_by_one_process_on_another_mesh(four_by_two):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import jaxsaver

    root, run = four_by_two
    run.all(0)
    expected = worker.expected_values()
    mesh = Mesh(np.array(jax.devices()[:6]).reshape(3, 2), ("a", "b"))  # 6 of the 8 devices
    target = {
        "sharded": jax.ShapeDtypeStruct((16, 8), np.float32, sharding=NamedSharding(mesh, P("b", None))),
        "rows": jax.ShapeDtypeStruct((8, 12), np.int32, sharding=NamedSharding(mesh, P("b", "a"))),
        "replicated": jax.ShapeDtypeStruct((4, 3), expected["replicated"].dtype, sharding=NamedSharding(mesh, P())),
        "big": jax.ShapeDtypeStruct((64, 64), np.float32, sharding=NamedSharding(mesh, P("b", None))),
        "local": jax.ShapeDtypeStruct((6,), np.float32, sharding=NamedSharding(mesh, P("b"))),
        "key": jax.random.key(0),
        "host": np.zeros(4),
        "step": 0,
    }
    restored = jaxsaver.Saver(template=target).restore(str(root / "d" / "model-1"), target=target)
    assert worker.check_tree(restored) == []
    assert restored["sharded"].sharding == target["sharded"].sharding


# ----------------------------------------------------------------------------- acceptance 3


def test_killed_process_makes_the_others_fail_in_time_naming_it(four_by_two):
    root, run = four_by_two
    assert run.returncodes[2] == -9, run.logs[2][-3000:]
    survivors = [0, 1, 3]
    for r in run.all(1, survivors):
        assert r["raised"] == "DistributedTimeoutError" and r["isinstance_timeout"], r
        assert "process(es) 2 of 4" in r["message"] and "model-2" in r["message"], r["message"]
        assert r["raised_after"] < KILL_TIMEOUT_S + 10, r
        assert r["index_exists"] is False
        assert r["latest"] == str(root / "d" / "model-1")
        assert r["restore_bad"] == []
    assert not (root / "d" / "model-2.index").exists()
    assert not (root / "d" / "model-2.meta").exists()  # process 0 took back its sidecar


def test_a_later_save_succeeds_and_removes_the_stale_parts(four_by_two, after_kill):
    root, _ = four_by_two
    _, run = after_kill
    for r in run.all(1):
        assert r["prefixes"] == [str(root / "d" / "model-3")] and r["roundtrip_bad"] == []
    names = sorted(os.listdir(root / "d"))
    assert not [n for n in names if n.startswith("model-2")], names  # the killed save's parts are gone
    assert not [n for n in names if n.endswith("_temp")], names
    assert "model-3.index" in names and "model-1.index" in names


# ----------------------------------------------------------------------------- acceptance 4


@pytest.mark.parametrize("which,saves", [("two_by_four", 2), ("four_by_two", 1)])
def test_every_byte_is_written_by_exactly_one_process(which, saves, request):
    root, run = request.getfixturevalue(which)
    per_process = [data_bytes(r["written"]) for r in run.all(0)]
    for i, a in enumerate(per_process):
        for b in per_process[i + 1 :]:
            assert not set(a) & set(b)
    total = sum(sum(d.values()) for d in per_process)
    assert total == saves * unique_bytes(), [sum(d.values()) for d in per_process]
    assert all(sum(d.values()) > 0 for d in per_process)  # every process wrote its own shards
    prefix = Path(run.all(0)[0]["prefixes"][-1])
    on_disk = sum(p.stat().st_size for p in prefix.parent.glob(prefix.name + ".data-*"))
    assert on_disk == unique_bytes()


def test_process_local_values_that_differ_fail_every_process_before_any_write(two_by_four):
    root, run = two_by_four
    leader, other = run.all(4)
    assert leader["raised"] == "InvalidArgumentError", leader
    assert "process 1: 'host', 'local'" in leader["message"], leader["message"]
    assert other["raised"] == "PeerFailedError" and "process 1: 'host', 'local'" in other["message"], other
    assert os.listdir(root / "mismatch") == []  # not a byte written, no .meta left


# ----------------------------------------------------------------------------- async, S3


def test_asynchronous_save_from_every_process(two_by_four):
    import jaxsaver

    root, run = two_by_four
    results = run.all(1)
    assert {tuple(r["prefixes"]) for r in results} == {(str(root / "async" / "model-5"),)}
    flat = jaxsaver.restore_as_numpy(str(root / "async" / "model-5"))
    for key, want in worker.expected_values().items():
        assert np.asarray(flat[key]).tobytes() == np.asarray(want).tobytes(), key


def test_save_to_s3_from_several_processes(two_by_four, s3):
    import jaxsaver
    from jaxsaver._store import resolve
    from store_conformance import environment

    _, run = two_by_four
    assert {tuple(r["prefixes"]) for r in run.all(2)} == {("s3://multihost/run/model-1",)}
    for r in run.all(3):
        assert r["bad"] == []
    with environment(s3.env()):
        flat = jaxsaver.restore_as_numpy("s3://multihost/run/model-1")
        store, key = resolve("s3://multihost/run/")
        names = sorted(store.basename(k) for k in store.list(key))
        sizes = [store.size(k) for k in store.list(key) if ".data-" in k]
    for name, want in worker.expected_values().items():
        assert np.asarray(flat[name]).tobytes() == np.asarray(want).tobytes(), name
    assert not [n for n in names if ".part-" in n], names  # part indexes removed after the merge
    # Cap-split parts: 5 on process 0 (its first device's group split in two), 4 on process 1.
    assert len(sizes) == 9 and max(sizes) <= OBJECT_CAP and sum(sizes) == unique_bytes(), sizes


# ----------------------------------------------------------------------------- pure parts, one process


def test_barrier_timeout_must_be_positive():
    import jaxsaver

    with pytest.raises(jaxsaver.InvalidArgumentError, match="barrier_timeout_s"):
        jaxsaver.Saver(template={"w": np.zeros(2)}, barrier_timeout_s=0)


def test_part_numbering_and_digest_check():
    from jaxsaver._multiprocess import number_parts

    same = {"step": "aa", "host": "bb"}
    values = [json.dumps({"parts": n, "digests": same}) for n in (3, 0, 2, 1)]
    assert json.loads(number_parts(values)) == {"offsets": [0, 3, 3, 5], "total": 6}
    assert json.loads(number_parts([values[0]] * 1000)) == {"each": 3}  # O(1) whatever the process count
    values[2] = json.dumps({"parts": 2, "digests": {"step": "ab", "host": "bb", "extra": "cc"}})
    with pytest.raises(ValueError, match=r"process 2: 'extra' \(not replicated on process 0\), 'step'"):
        number_parts(values)


def test_stale_parts_of_failed_saves_are_found_on_object_stores_and_removed_on_disk(tmp_path):
    from jaxsaver._stale import remove_stale, stale_names
    from jaxsaver._store import resolve

    names = ["m-1.index", "m-1.data-00000-of-00002", "m-2.part-00001-of-00002.index", "m-2.data-00001-of-00002",
             "m-3.index", "m-3.data-00000-of-00001", "m-3.part-00000-of-00001.index", "mx-2.data-00000-of-00001"]
    assert stale_names(names, "m-3", 1) == ["m-2.data-00001-of-00002", "m-2.part-00001-of-00002.index",
                                            "m-3.part-00000-of-00001.index"]
    for name in ["m-1.index", "m-1.data-00000-of-00001", "m-2.meta", "m-2_temp/part-00000-of-00002.index",
                 "m-3.index", "m-3.data-00000-of-00001", "m-3.data-00001-of-00004", "keep.txt"]:
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    store, key = resolve(str(tmp_path / "m-3"))
    assert remove_stale(store, key, 1) == ["m-2.meta", "m-2_temp", "m-3.data-00001-of-00004"]
    assert sorted(os.listdir(tmp_path)) == ["keep.txt", "m-1.data-00000-of-00001", "m-1.index",
                                           "m-3.data-00000-of-00001", "m-3.index"]
