"""One process of a multi-process test program (started by tests/test_multihost.py).

Usage: ``python multihost_worker.py CONFIG_JSON`` with ``{"port", "nproc", "pid", "ndev", "out",
"scenarios": [...]}``. Runs the scenarios in order and writes one JSON result per scenario to
``out`` (rewritten after each one), then waits for the live processes and exits with
``os._exit`` (a dead peer must not make the exit wait on jax's shutdown barrier).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import traceback


def main() -> None:
    READS.install()  # before jaxsaver is imported (a module keeps its own reference to os.preadv)
    config = json.loads(sys.argv[1])
    nproc, pid, ndev = config["nproc"], config["pid"], config["ndev"]
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ndev}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{config['port']}", num_processes=nproc, process_id=pid,
                               initialization_timeout=60)
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    results: list[dict] = []
    alive = list(range(nproc))
    for scenario in config["scenarios"]:
        start = time.monotonic()
        try:
            result = SCENARIOS[scenario["kind"]](scenario, pid)
        except BaseException as err:  # reported to the test, which fails naming it
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        result.update(kind=scenario["kind"], seconds=time.monotonic() - start)
        results.append(result)
        _dump(config["out"], results)
        if "victim" in scenario:
            alive = [p for p in alive if p != scenario["victim"]]
        if "error" in result and "expect_error" not in scenario:
            break
    try:
        client.wait_at_barrier("worker-done", 60_000, alive)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _dump(path: str, results: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the tree


def expected_values() -> dict:
    """The global values every process saves (the same on all of them)."""
    import ml_dtypes
    import numpy as np

    return {
        "sharded": np.arange(16 * 8, dtype=np.float32).reshape(16, 8) / 7,
        "rows": (np.arange(8 * 12, dtype=np.int32).reshape(8, 12) * 3 - 50),
        "big": np.sin(np.arange(64 * 64, dtype=np.float32)).reshape(64, 64),
        "replicated": (np.arange(4 * 3, dtype=np.float32).reshape(4, 3) / 3).astype(ml_dtypes.bfloat16),
        "local": np.linspace(0, 1, 6, dtype=np.float32),
        "host": np.arange(4, dtype=np.float64) * 0.5,
        "step": np.int64(7),
        "key": np.asarray([0, 42], dtype=np.uint32),
    }


def _mesh(shape):
    import jax
    import numpy as np
    from jax.sharding import Mesh

    return Mesh(np.array(jax.devices()).reshape(shape), ("a", "b"))


def _specs(layout: str):
    from jax.sharding import PartitionSpec as P

    if layout == "save":
        return {"sharded": P("a", "b"), "rows": P("a", None), "replicated": P(), "big": P("a", None)}
    # restore: another layout
    return {"sharded": P("b", None), "rows": P(None, "a"), "replicated": P("a"), "big": P(None, "b")}


def make_tree(mesh_shape, layout: str = "save", *, abstract: bool = False) -> dict:
    """The saved tree: global arrays (sharded, partly and fully replicated), a process-local
    array, a PRNG key, a host array and a Python int."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding

    expected = expected_values()
    mesh = _mesh(mesh_shape)
    tree = {}
    for name, spec in _specs(layout).items():
        value = expected[name]
        sharding = NamedSharding(mesh, spec)
        if abstract:
            tree[name] = jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)
        else:
            tree[name] = jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
    tree["local"] = jnp.asarray(expected["local"])  # on this process's first device only
    tree["key"] = jax.random.key(42)
    tree["host"] = np.array(expected["host"])
    tree["step"] = int(expected["step"])
    return tree


def check_tree(tree: dict) -> list[str]:
    """Every addressable shard (or host value) against the expected global values, bit for bit."""
    import jax
    import numpy as np

    expected = expected_values()
    bad = []
    for name, want in expected.items():
        got = tree[name]
        if name == "key":
            got = jax.random.key_data(got)
        if isinstance(got, jax.Array):
            for shard in got.addressable_shards:
                piece = np.asarray(shard.data)
                if piece.dtype != want.dtype or piece.tobytes() != np.asarray(want[shard.index]).tobytes():
                    bad.append(f"{name} shard {shard.index} on {shard.device}")
        elif np.asarray(got).tobytes() != np.asarray(want).tobytes() or np.asarray(got).dtype != want.dtype:
            bad.append(f"{name}: {got!r}")
    return bad


# ----------------------------------------------------------------------------- measuring


class WriteCounter:
    """Bytes this process passes to ``os.write``/``os.pwrite`` per file (the OS's own calls)."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = {}
        self._originals = {}

    def __enter__(self) -> WriteCounter:
        for name in ("write", "pwrite"):
            original = getattr(os, name)
            self._originals[name] = original

            def counted(fd, data, *rest, _original=original):
                n = _original(fd, data, *rest)
                try:
                    # Files are written under a temporary name, then renamed: count the final name.
                    path = re.sub(r"\.tempstate[-\w]*$", "", os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    path = f"fd:{fd}"
                self.bytes[path] = self.bytes.get(path, 0) + n
                return n

            setattr(os, name, counted)
        return self

    def __exit__(self, *_) -> None:
        for name, original in self._originals.items():
            setattr(os, name, original)


class ReadCounter:
    """Bytes this process reads with ``os.pread``/``os.preadv`` per file, while ``active``."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = {}
        self.active = False

    def install(self) -> None:
        pread, preadv = os.pread, os.preadv

        def counted_pread(fd, size, offset):
            data = pread(fd, size, offset)
            self._count(fd, len(data))
            return data

        def counted_preadv(fd, buffers, offset, *rest):
            n = preadv(fd, buffers, offset, *rest)
            self._count(fd, n)
            return n

        os.pread, os.preadv = counted_pread, counted_preadv

    def _count(self, fd: int, n: int) -> None:
        if self.active:
            path = os.readlink(f"/proc/self/fd/{fd}")
            self.bytes[path] = self.bytes.get(path, 0) + n


READS = ReadCounter()


def addressable_bytes(tree: dict) -> int:
    """Bytes of the distinct blocks this process holds (replicas once), host values whole."""
    import jax
    import numpy as np

    total = 0
    for name, value in tree.items():
        if name == "key":
            value = jax.random.key_data(value)
        if isinstance(value, jax.Array):
            blocks = {tuple((s.start, s.stop) for s in shard.index): shard.data.nbytes for shard in value.addressable_shards}
            total += sum(blocks.values())
        else:
            total += np.asarray(value).nbytes
    return total


def coordination_keys() -> list[str]:
    from jax._src import distributed as jax_distributed

    return [k for k, _ in jax_distributed.global_state.client.key_value_dir_get("jaxsaver/")]


# ----------------------------------------------------------------------------- scenarios


def save(scenario: dict, pid: int) -> dict:
    import jaxsaver

    tree = make_tree(scenario["mesh"])
    saver = jaxsaver.Saver(template=tree, max_to_keep=scenario.get("max_to_keep", 5),
                           barrier_timeout_s=scenario.get("timeout", 60))
    out: dict = {}
    with WriteCounter() as counter:
        for step in scenario["steps"]:
            if scenario.get("blocking", True):
                prefix = saver.save(tree, scenario["prefix"], global_step=step)
            else:
                handle = saver.save(tree, scenario["prefix"], global_step=step, blocking=False)
                # Once the snapshot is taken the arrays may go: delete the global ones.
                for name in ("sharded", "rows", "replicated"):
                    tree[name].delete()
                prefix = handle.result(timeout=120)
                tree = make_tree(scenario["mesh"])
            out.setdefault("prefixes", []).append(prefix)
    out["written"] = counter.bytes
    out["last_checkpoints"] = saver.last_checkpoints
    out["keys_after"] = coordination_keys()
    restored = saver.restore(out["prefixes"][-1], target=make_tree(scenario["mesh"], abstract=True))
    out["roundtrip_bad"] = check_tree(restored)
    return out


def restore(scenario: dict, pid: int) -> dict:
    import jaxsaver

    template = make_tree(scenario["mesh"], layout=scenario.get("layout", "restore"), abstract=True)
    saver = jaxsaver.Saver(template=template)
    READS.bytes.clear()
    READS.active = True
    try:
        restored = saver.restore(scenario["prefix"], target=template)
    finally:
        READS.active = False
    specs = {n: str(v.sharding.spec) for n, v in restored.items() if hasattr(getattr(v, "sharding", None), "spec")}
    data_read = sum(n for path, n in READS.bytes.items() if re.search(r"\.data-\d{5}-of-\d{5}$", path))
    return {"bad": check_tree(restored), "specs": specs, "mesh": list(restored["sharded"].sharding.mesh.devices.shape),
            "data_read": data_read,
            "addressable": addressable_bytes(restored)}


class _KillAtWritten:
    """The jax client, except that this process dies (SIGKILL) when it would report its part
    written: after its part is on storage, before process 0 can merge."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def key_value_set(self, key, value, *args, **kwargs):
        if "/written/" in key:
            os.kill(os.getpid(), signal.SIGKILL)
        return self._client.key_value_set(key, value, *args, **kwargs)


def kill(scenario: dict, pid: int) -> dict:
    import jaxsaver
    from jax._src import distributed as jax_distributed

    tree = make_tree(scenario["mesh"])
    saver = jaxsaver.Saver(template=tree, barrier_timeout_s=scenario["timeout"])
    if pid == scenario["victim"]:
        jax_distributed.global_state.client = _KillAtWritten(jax_distributed.global_state.client)
    start = time.monotonic()
    out: dict = {}
    try:
        saver.save(tree, scenario["prefix"], global_step=scenario["step"])
        out["raised"] = None
    except Exception as err:
        out["raised"] = type(err).__name__
        out["message"] = str(err)
        out["isinstance_timeout"] = isinstance(err, TimeoutError)
    out["raised_after"] = time.monotonic() - start
    directory = os.path.dirname(scenario["prefix"])
    out["latest"] = jaxsaver.latest_checkpoint(directory)
    out["index_exists"] = os.path.exists(f"{scenario['prefix']}-{scenario['step']}.index")
    restored = jaxsaver.Saver(template=tree).restore(out["latest"], target=make_tree(scenario["mesh"], abstract=True))
    out["restore_bad"] = check_tree(restored)
    return out


def mismatch(scenario: dict, pid: int) -> dict:
    """Process 1's process-local array and host array differ from process 0's: nobody writes."""
    import jax.numpy as jnp

    import jaxsaver

    tree = make_tree(scenario["mesh"])
    if pid == 1:
        tree["local"] = jnp.asarray(expected_values()["local"] + 1)
        tree["host"] = tree["host"] + 1
    saver = jaxsaver.Saver(template=tree, barrier_timeout_s=60)
    start = time.monotonic()
    try:
        saver.save(tree, scenario["prefix"], global_step=1)
        return {"raised": None}
    except Exception as err:
        return {"raised": type(err).__name__, "message": str(err), "raised_after": time.monotonic() - start}


SCENARIOS = {"save": save, "restore": restore, "kill": kill, "mismatch": mismatch}

if __name__ == "__main__":
    main()
