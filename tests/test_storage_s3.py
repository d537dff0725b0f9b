"""The storage conformance suite against a real S3 server on loopback (moto), and S3 failures."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'moto[server]')")
pytest.importorskip("boto3", reason="boto3 (a moto dependency) is needed to create buckets")

from jaxsaver._errors import CheckpointNotFoundError, StorageError  # noqa: E402
from jaxsaver._store import resolve
from jaxsaver._store.kvstore import KvStore  # noqa: E402
from store_conformance import (  # noqa: E402
    KvStoreConformance,
    MotoS3,
    environment,
    free_port,
    small_tree,
    bump,
    assert_tree_equal,
    unique,
)

BUCKET = "jaxsaver-test"


@pytest.fixture(scope="module")
def s3_server():
    server = MotoS3()
    try:
        with environment(server.env()):
            server.create_bucket(BUCKET)
            yield server
    finally:
        server.stop()


@pytest.mark.timeout(120)
class TestS3(KvStoreConformance):
    @pytest.fixture
    def url_root(self, s3_server):
        return f"s3://{BUCKET}/{unique('s3')}"

    def test_store_is_s3_with_explicit_settings(self, url_root, s3_server):
        store, key = resolve(url_root + "/model")
        assert isinstance(store, KvStore) and store.driver == "s3"
        assert store.spec["endpoint"] == s3_server.endpoint
        assert store.spec["aws_region"] == s3_server.region
        assert store.spec["aws_credentials"] == {"type": "environment"}
        assert key.endswith("/model") and not key.startswith("s3:")

    def test_interrupted_save_leaves_no_checkpoint(self, url_root, monkeypatch):
        """A crash after the data objects and before the index: nothing new is visible."""
        from jaxsaver import Saver, latest_checkpoint

        tree = small_tree()
        saver = Saver(template=tree, sharded=True, max_to_keep=2)
        saver.save(bump(tree, 1), f"{url_root}/model", global_step=1)
        store, dirkey = resolve(url_root + "/")
        index_key = resolve(f"{url_root}/model-2.index")[1]
        real_put = store._put

        def crash_on_index(key, value, nbytes=None):
            if key == index_key:
                raise RuntimeError("simulated crash between data and index")
            return real_put(key, value, nbytes)

        monkeypatch.setattr(store, "_put", crash_on_index)
        with pytest.raises(RuntimeError, match="simulated crash"):
            saver.save(bump(tree, 2), f"{url_root}/model", global_step=2)
        monkeypatch.undo()
        names = [store.basename(k) for k in store.list(dirkey)]
        # The failed save removed the data objects it wrote (nothing half-written stays) ...
        assert not any(n.startswith("model-2.data-") for n in names), names
        assert "model-2.index" not in names  # ... and the checkpoint never became visible
        assert latest_checkpoint(url_root) == f"{url_root}/model-1"
        restored = Saver(template=tree).restore(latest_checkpoint(url_root), target=tree)
        assert_tree_equal(restored, bump(tree, 1))

    def test_server_killed_before_index(self):
        """The server dies between data and index: the save fails promptly, no hang."""
        from jaxsaver import Saver

        server = MotoS3()
        try:
            with environment(server.env()):
                server.create_bucket("killed")
                url_root = f"s3://killed/{unique()}"
                tree = small_tree()
                saver = Saver(template=tree, sharded=True)
                store, _ = resolve(url_root + "/x")
                index_key = resolve(f"{url_root}/model.index")[1]
                real_put = store._put

                def kill_then_put(key, value, nbytes=None):
                    if key == index_key:
                        server.stop()
                    return real_put(key, value, nbytes)

                store._put = kill_then_put
                start = time.monotonic()
                with pytest.raises(StorageError, match="killed/.*model.index"):
                    saver.save(tree, f"{url_root}/model")
                assert time.monotonic() - start < 60
        finally:
            server.stop()

    def test_missing_bucket(self, s3_server):
        store, key = resolve("s3://no-such-bucket-here/dir/model.index")
        with pytest.raises(CheckpointNotFoundError, match="s3://no-such-bucket-here/dir/model.index"):
            store.write(key, b"x")
        with pytest.raises(CheckpointNotFoundError):
            store.read(key)
        assert not store.exists(key)

    def test_unreachable_server_is_bounded(self):
        port = free_port()  # nothing listens there
        with environment({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
                          "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}):
            store, key = resolve("s3://some-bucket/model.index")
            start = time.monotonic()
            with pytest.raises(StorageError, match="s3://some-bucket/model.index.*unreachable"):
                store.read(key)
            with pytest.raises(StorageError, match="unreachable"):
                store.write(key, b"x")
            assert time.monotonic() - start < 30

    def test_latest_checkpoint_missing_dir(self, url_root):
        from jaxsaver import latest_checkpoint

        assert latest_checkpoint(url_root) is None
