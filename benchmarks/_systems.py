"""One system, one case, in its own process: times saves and restores, prints one JSON line.

Run by ``python -m benchmarks`` (see ``benchmarks/__main__.py``), one subprocess per
(case, system), so that each peak RSS is its own. Usage::

    python -m benchmarks._systems --case a --system jaxsaver --size-mib 64 --reps 2 --dir /tmp/x --cold fadvise
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import abc  # noqa: E402
import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

MIB = 1 << 20
SPECS = (P("x", "y"), P("x"), P(None, "y"), P())
SYSTEMS = (
    "raw", "tf", "orbax_sync", "orbax_async", "safetensors", "flax_msgpack",
    "jaxsaver", "jaxsaver_async_host", "jaxsaver_async_device", "ref_host_copy", "ref_device_copy",
)


# ----------------------------------------------------------------------------- trees


def make_tree(case: str, size_mib: int) -> dict[str, Any]:
    """The case's pytree: (a) 64 arrays, float32/bfloat16 alternating, mesh (4,2), mixed specs;
    (b) 10 000 float32 tensors of 4 KiB on one device; (c) 100 000 one-element tensors."""
    rng = np.random.default_rng(0)
    if case == "a":
        mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("x", "y"))
        cols, count = 1024, 64
        per = size_mib * MIB // count
        tree = {}
        for k in range(count):
            dtype = np.float32 if k % 2 == 0 else ml_dtypes.bfloat16
            rows = max(8, per // (cols * np.dtype(dtype).itemsize) // 8 * 8)
            host = rng.standard_normal((rows, cols), dtype=np.float32).astype(dtype)
            tree[f"layer{k:02d}/w"] = jax.device_put(host, NamedSharding(mesh, SPECS[k % len(SPECS)]))
        return tree
    if case == "b":
        return {f"t{k:05d}": jax.device_put(rng.standard_normal(1024, dtype=np.float32)) for k in range(10_000)}
    if case == "c":
        return {f"t{k:06d}": np.full((1,), k, np.float32) for k in range(100_000)}
    raise SystemExit(f"unknown case {case!r}")


def host_copy(tree: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in tree.items()}


def tree_nbytes(tree: dict[str, Any]) -> int:
    return sum(int(v.size) * v.dtype.itemsize for v in tree.values())


# ----------------------------------------------------------------------------- measuring


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5\n")
        return True
    except OSError:
        return False


def make_cold(paths: list[str], mode: str) -> None:
    """Drops the page cache of ``paths``: ``drop_caches`` (all) or ``posix_fadvise`` per file."""
    os.sync()
    if mode == "drop_caches":
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return
    for path in paths:
        for root, _, files in os.walk(path) if os.path.isdir(path) else [(os.path.dirname(path), [], [os.path.basename(path)])]:
            for name in files:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def fsync_tree(path: str) -> None:
    targets = [path] if os.path.isfile(path) else [
        os.path.join(root, name) for root, _, files in os.walk(path) for name in files
    ]
    for target in targets:
        fd = os.open(target, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    fd = os.open(directory, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def _block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def _same(restored: dict[str, Any], expected: dict[str, np.ndarray]) -> bool:
    for key, want in expected.items():
        got = np.asarray(restored[key])
        if got.shape != want.shape or got.dtype != want.dtype:
            return False
        if not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
            return False
    return True


# ----------------------------------------------------------------------------- systems


class System(abc.ABC):
    """save(path) -> (blocked_s, total_s); restore(path) -> the tree; open_index(path) -> count."""

    def __init__(self, tree: dict[str, Any]) -> None:
        self.tree = tree

    def save(self, path: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        self._save(path)
        t = time.perf_counter() - t0
        return t, t

    @abc.abstractmethod
    def _save(self, path: str) -> None:
        """Writes the tree to ``path`` durably."""

    @abc.abstractmethod
    def restore(self, path: str) -> dict[str, Any]:
        """Reads the tree back (on its devices where the system places arrays)."""

    def open_index(self, path: str) -> int:
        """Opens the checkpoint and lists every tensor's name, dtype and shape; returns the count."""
        raise SystemExit(f"{type(self).__name__} has no index to open (case c)")


class Raw(System):
    """The limit: every leaf's bytes written into one file + fsync; ``np.fromfile`` back."""

    def _save(self, path: str) -> None:
        with open(path, "wb") as f:
            for value in self.tree.values():
                f.write(memoryview(np.ascontiguousarray(np.asarray(value)).reshape(-1).view(np.uint8)))
            f.flush()
            os.fsync(f.fileno())

    def restore(self, path: str) -> dict[str, Any]:
        out = {}
        with open(path, "rb") as f:
            for key, value in self.tree.items():
                out[key] = np.fromfile(f, dtype=value.dtype, count=int(value.size)).reshape(value.shape)
        return out


class TF(System):
    """``tf.raw_ops.SaveV2`` of the host arrays (+ fsync of its files); ``RestoreV2`` back."""

    def __init__(self, tree: dict[str, Any]) -> None:
        super().__init__(tree)
        import tensorflow as tf

        self.tf = tf
        self.names = list(tree)
        self.dtypes = [tf.as_dtype(np.dtype(v.dtype)) for v in tree.values()]

    def _save(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        tensors = [np.asarray(v) for v in self.tree.values()]
        self.tf.raw_ops.SaveV2(prefix=os.path.join(path, "ckpt"), tensor_names=self.names,
                               shape_and_slices=[""] * len(self.names), tensors=tensors)
        fsync_tree(path)

    def restore(self, path: str) -> dict[str, Any]:
        out = self.tf.raw_ops.RestoreV2(prefix=os.path.join(path, "ckpt"), tensor_names=self.names,
                                        shape_and_slices=[""] * len(self.names), dtypes=self.dtypes)
        return {k: t.numpy() for k, t in zip(self.names, out)}

    def open_index(self, path: str) -> int:
        reader = self.tf.train.load_checkpoint(os.path.join(path, "ckpt"))
        shapes = reader.get_variable_to_shape_map()
        reader.get_variable_to_dtype_map()
        return len(shapes)


class Orbax(System):
    """``ocp.StandardCheckpointer``: save (+ ``wait_until_finished``), restore onto the shardings."""

    def __init__(self, tree: dict[str, Any], *, asynchronous: bool) -> None:
        super().__init__(tree)
        import orbax.checkpoint as ocp

        self.ckptr = ocp.StandardCheckpointer()
        self.asynchronous = asynchronous
        self.abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding) for k, v in tree.items()}

    def save(self, path: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        self.ckptr.save(path, self.tree)
        blocked = time.perf_counter() - t0
        self.ckptr.wait_until_finished()
        total = time.perf_counter() - t0
        return (blocked if self.asynchronous else total), total

    def restore(self, path: str) -> dict[str, Any]:
        return _block(self.ckptr.restore(path, self.abstract))


class Safetensors(System):
    """``safetensors.flax.save_file`` / ``load_file`` (unsharded: arrays come back on one device)."""

    def _save(self, path: str) -> None:
        from safetensors.flax import save_file

        save_file(self.tree, path)
        fsync_tree(path)

    def restore(self, path: str) -> dict[str, Any]:
        from safetensors.flax import load_file

        return _block(load_file(path))

    def open_index(self, path: str) -> int:
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            keys = list(f.keys())
            for key in keys:
                f.get_slice(key).get_shape()
        return len(keys)


class FlaxMsgpack(System):
    """``flax.serialization.to_bytes`` + write + fsync; read + ``from_bytes`` + ``device_put``."""

    def _save(self, path: str) -> None:
        from flax import serialization

        data = serialization.to_bytes(self.tree)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def restore(self, path: str) -> dict[str, Any]:
        from flax import serialization

        with open(path, "rb") as f:
            host = serialization.msgpack_restore(f.read())
        return _block(jax.device_put(host, {k: v.sharding for k, v in self.tree.items()}))


class Jaxsaver(System):
    """``jaxsaver.Saver`` (sharded on a mesh), synchronous or ``blocking=False`` in a snapshot mode."""

    def __init__(self, tree: dict[str, Any], *, snapshot: str | None) -> None:
        super().__init__(tree)
        from jaxsaver import Saver

        sharded = any(len(getattr(v, "sharding", None).device_set) > 1 for v in tree.values()
                      if isinstance(v, jax.Array))
        self.saver = Saver(template=tree, sharded=sharded, max_to_keep=None, snapshot=snapshot or "host")
        self.blocking = snapshot is None

    def save(self, path: str) -> tuple[float, float]:
        os.makedirs(path, exist_ok=True)
        t0 = time.perf_counter()
        out = self.saver.save(self.tree, os.path.join(path, "model"), blocking=self.blocking)
        blocked = time.perf_counter() - t0
        if not self.blocking:
            out.result()
        return blocked, time.perf_counter() - t0

    def _save(self, path: str) -> None:
        self.save(path)

    def restore(self, path: str) -> dict[str, Any]:
        return _block(self.saver.restore(os.path.join(path, "model")))


class JaxsaverIndex(System):
    """Case (c) for jaxsaver: the tensors written with ``BundleWriter`` (no Saver: building one
    over 100 000 leaves is not what is measured); opened with ``BundleReader.metadata_columns``."""

    def _save(self, path: str) -> None:
        from jaxsaver import BundleWriter

        os.makedirs(path, exist_ok=True)
        with BundleWriter(os.path.join(path, "model")) as writer:
            for key, value in self.tree.items():
                writer.add(key, value)

    def restore(self, path: str) -> dict[str, Any]:
        from jaxsaver import BundleReader

        with BundleReader(os.path.join(path, "model")) as reader:
            return {key: reader.get_tensor(key) for key in self.tree}

    def open_index(self, path: str) -> int:
        from jaxsaver import BundleReader

        with BundleReader(os.path.join(path, "model")) as reader:
            names, _, _ = reader.metadata_columns()
        return len(names)


def make_system(name: str, tree: dict[str, Any]) -> System:
    factories: dict[str, Callable[[], System]] = {
        "raw": lambda: Raw(tree),
        "tf": lambda: TF(tree),
        "orbax_sync": lambda: Orbax(tree, asynchronous=False),
        "orbax_async": lambda: Orbax(tree, asynchronous=True),
        "safetensors": lambda: Safetensors(tree),
        "flax_msgpack": lambda: FlaxMsgpack(tree),
        "jaxsaver": lambda: Jaxsaver(tree, snapshot=None),
        "jaxsaver_async_host": lambda: Jaxsaver(tree, snapshot="host"),
        "jaxsaver_async_device": lambda: Jaxsaver(tree, snapshot="device"),
    }
    return factories[name]()


# ----------------------------------------------------------------------------- runs


def _best(values: list[float]) -> float | None:
    return min(values) if values else None


def run_reference(name: str, tree: dict[str, Any], reps: int) -> dict[str, Any]:
    """The async targets' references: a fresh host copy per leaf, an on-device copy of the tree."""
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        if name == "ref_host_copy":
            copies: Any = [np.array(v, copy=True) for v in tree.values()]
        else:
            copies = _block([v.copy() for v in tree.values()])
        times.append(time.perf_counter() - t0)
        del copies
    return {"blocked_s": _best(times[1:])}


def run_open(name: str, tree: dict[str, Any], root: str, reps: int) -> dict[str, Any]:
    """Writes the 100 000 tensors once (jaxsaver: with ``BundleWriter``), then times opening
    the checkpoint and listing every name, dtype and shape."""
    system = JaxsaverIndex(tree) if name == "jaxsaver" else make_system(name, tree)
    path = os.path.join(root, "open" + (".safetensors" if name == "safetensors" else ""))
    system._save(path)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        count = system.open_index(path)
        times.append(time.perf_counter() - t0)
        if count != len(tree):
            raise SystemExit(f"{name}: listed {count} tensors, expected {len(tree)}")
    return {"open_s": _best(times)}


def run(name: str, tree: dict[str, Any], root: str, reps: int, cold_mode: str) -> dict[str, Any]:
    expected = host_copy(tree)
    system = make_system(name, tree)
    suffix = {"raw": ".bin", "safetensors": ".safetensors", "flax_msgpack": ".msgpack"}.get(name, "")
    saves, blocked, warm, cold = [], [], [], []
    save_rss = restore_rss = None
    # One untimed round first (compilations, imports, thread pools).
    warm_path = os.path.join(root, "warmup" + suffix)
    system.save(warm_path)
    system.restore(warm_path)
    (shutil.rmtree if os.path.isdir(warm_path) else os.remove)(warm_path)
    ok = True
    for k in range(reps):
        path = os.path.join(root, f"rep{k}" + suffix)
        before = _status("VmRSS")
        peak_ok = reset_peak()
        b, t = system.save(path)
        if peak_ok:
            save_rss = max(save_rss or 0, _status("VmHWM") - before)
        saves.append(t)
        blocked.append(b)
        make_cold([path], cold_mode)
        before = _status("VmRSS")
        peak_ok = reset_peak()
        t0 = time.perf_counter()
        out = system.restore(path)
        cold.append(time.perf_counter() - t0)
        if peak_ok:
            restore_rss = max(restore_rss or 0, _status("VmHWM") - before)
        del out
        t0 = time.perf_counter()
        out = system.restore(path)
        warm.append(time.perf_counter() - t0)
        if k == 0:
            ok = _same(out, expected)
        del out
        (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
    return {
        "save_s": _best(saves), "blocked_s": _best(blocked), "restore_warm_s": _best(warm),
        "restore_cold_s": _best(cold), "save_peak_rss": save_rss, "restore_peak_rss": restore_rss,
        "bitexact": ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", required=True, choices=("a", "b", "c"))
    parser.add_argument("--system", required=True, choices=SYSTEMS)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--cold", choices=("drop_caches", "fadvise"), default="fadvise")
    args = parser.parse_args(argv)
    tree = make_tree(args.case, args.size_mib)
    _block([v for v in tree.values() if isinstance(v, jax.Array)])
    result: dict[str, Any] = {"case": args.case, "system": args.system, "nbytes": tree_nbytes(tree),
                              "tensors": len(tree)}
    os.makedirs(args.dir, exist_ok=True)
    try:
        if args.system.startswith("ref_"):
            result |= run_reference(args.system, tree, args.reps)
        elif args.case == "c":
            result |= run_open(args.system, tree, args.dir, args.reps)
        else:
            result |= run(args.system, tree, args.dir, args.reps, args.cold)
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
