"""The storage conformance suite on local disk and memory://, and the object-store helpers."""

from __future__ import annotations

import pytest

from jaxsaver._store import object_store as obj
from jaxsaver._errors import (
    CheckpointNotFoundError,
    InvalidArgumentError,
    PermissionDeniedError,
    StorageError,
)
from jaxsaver._store import resolve
from jaxsaver._store.kvstore import KvStore
from jaxsaver._store.local import LOCAL, LocalStore
from jaxsaver.testing import CountingStore, StoreTests
from store_conformance import KvStoreConformance, StoreConformance, unique


class TestLocal(StoreConformance):
    @pytest.fixture
    def url_root(self, tmp_path):
        return str(tmp_path / "ckpt")


class TestMemory(KvStoreConformance):
    @pytest.fixture
    def url_root(self):
        return f"memory://{unique('mem')}"


class TestLocalStoreDirectly(StoreTests):
    """The shipped suite as a user runs it: a store instance, relative keys."""

    @pytest.fixture
    def store(self):
        return LocalStore()


class TestCountingStore(StoreTests):
    """The counting wrapper is itself a conformant store (over memory and local disk)."""

    @pytest.fixture(params=["local", "memory"])
    def store(self, request):
        return CountingStore(LOCAL if request.param == "local" else resolve("memory://")[0])


# --------------------------------------------------------------------------- resolve


def test_resolve_schemes(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store, key = resolve("s3://my-bucket/dir/model")
    assert isinstance(store, KvStore) and key == "dir/model"
    assert store.url(key) == "s3://my-bucket/dir/model"
    assert store.spec["endpoint"] == "http://127.0.0.1:9"
    assert store.spec["aws_region"] == "eu-west-1"
    assert store.spec["aws_credentials"] == {"type": "environment"}
    again, _ = resolve("s3://my-bucket/other")
    assert again is store  # one store per bucket per process
    other, _ = resolve("s3://other-bucket/x")
    assert other is not store
    gstore, gkey = resolve("gs://g-bucket/a/b")
    assert gkey == "a/b" and gstore.url(gkey) == "gs://g-bucket/a/b" and gstore.driver == "gcs"
    assert resolve("gcs://g-bucket/a/b")[0] is gstore
    assert resolve("/tmp/x") == (LOCAL, "/tmp/x")
    assert resolve("file:///tmp/x") == (LOCAL, "/tmp/x")
    mem, mkey = resolve("memory://m/x")
    assert mkey == "m/x" and resolve("memory://y")[0] is mem
    with pytest.raises(InvalidArgumentError, match="unsupported storage scheme"):
        resolve("ftp://host/x")
    with pytest.raises(InvalidArgumentError, match="invalid bucket"):
        resolve("s3://a/x")
    with pytest.raises(InvalidArgumentError):
        resolve(3)


def test_resolve_storage_override():
    local = LocalStore()
    assert resolve("/tmp/a", storage=local) == (local, "/tmp/a")
    store, key = resolve("s3://ignored-bucket/k/x", storage={"driver": "memory"})
    assert key == "k/x" and store.driver == "memory"
    store.write(key, b"1")
    assert resolve("k/x", storage={"driver": "memory"})[0] is store
    assert store.read("k/x") == b"1"


def test_s3_spec_defaults_never_probe():
    spec = obj.s3_spec("b", {})
    assert spec["endpoint"] == "https://s3.us-east-1.amazonaws.com"
    assert spec["aws_region"] == "us-east-1"
    assert spec["aws_credentials"] == {"type": "anonymous"}
    spec = obj.s3_spec("b", {"AWS_DEFAULT_REGION": "ap-south-1", "AWS_PROFILE": "p"})
    assert spec["aws_region"] == "ap-south-1" and spec["endpoint"].endswith("ap-south-1.amazonaws.com")
    assert spec["aws_credentials"] == {"type": "profile", "profile": "p"}
    assert obj.s3_spec("b", {"JAXSAVER_AWS_CREDENTIALS": "imds"})["aws_credentials"] == {"type": "imds"}
    with pytest.raises(InvalidArgumentError):
        obj.s3_spec("b", {"JAXSAVER_AWS_CREDENTIALS": "bogus"})
    assert obj.s3_spec("b", {"AWS_ENDPOINT_URL_S3": "http://h:1/", "AWS_ENDPOINT_URL": "x"})["endpoint"] == "http://h:1"


# --------------------------------------------------------------------------- errors and retries


@pytest.mark.parametrize(
    "message, error, status",
    [
        ("NOT_FOUND: object gone", CheckpointNotFoundError, "NOT_FOUND"),
        ("NOT_FOUND: NoSuchBucket: The specified bucket does not exist", CheckpointNotFoundError, "NOT_FOUND"),
        ("PERMISSION_DENIED: AccessDenied [http_response_code='403']", PermissionDeniedError, "PERMISSION_DENIED"),
        ("UNAUTHENTICATED: bad token", PermissionDeniedError, "UNAUTHENTICATED"),
        ("UNAVAILABLE: try later", StorageError, "UNAVAILABLE"),
        ("ABORTED: All 2 retry attempts failed: CURL error Could not connect", StorageError, "UNAVAILABLE"),
        ("INVALID_ARGUMENT: nope", StorageError, "INVALID_ARGUMENT"),
    ],
)
def test_error_mapping(message, error, status):
    err = ValueError(message)
    assert obj.status_of(err) == status
    mapped = obj.map_error(err, "s3://b/k", operation="read")
    assert type(mapped) is error
    assert "s3://b/k" in str(mapped)


class _Future:
    def __init__(self, outcome):
        self.outcome = outcome
        self.cancelled = False

    def result(self, timeout=None):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self):
        self.cancelled = True


def test_retry_policy_bounded():
    policy = obj.RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)
    calls, sleeps = [], []

    def start():
        calls.append(1)
        return _Future(ValueError("UNAVAILABLE: down"))

    with pytest.raises(StorageError, match="unreachable"):
        obj.call(start, url="gs://b/k", policy=policy, sleep=sleeps.append)
    assert len(calls) == 3 and sleeps == [0.01, 0.02]

    calls.clear()
    outcomes = [ValueError("DEADLINE_EXCEEDED: slow"), "ok"]
    assert obj.call(lambda: (calls.append(1), _Future(outcomes[len(calls) - 1]))[1], url="u",
                    policy=policy, sleep=lambda s: None) == "ok"

    calls.clear()
    with pytest.raises(CheckpointNotFoundError):  # not transient: no retry
        obj.call(lambda: (calls.append(1), _Future(ValueError("NOT_FOUND: x")))[1], url="u", policy=policy)
    assert len(calls) == 1

    timed_out = _Future(TimeoutError())
    with pytest.raises(StorageError, match="timed out"):
        obj.call(lambda: timed_out, url="u", policy=obj.RetryPolicy(attempts=1))
    assert timed_out.cancelled


def test_inflight_budget():
    import threading

    budget = obj.InflightBudget(100)
    held = budget.acquire(80)
    big = budget.acquire(0)
    assert held == 80 and big == 0
    got = []
    t = threading.Thread(target=lambda: got.append(budget.acquire(500)))  # capped at the limit
    t.start()
    t.join(0.1)
    assert not got  # waits for the 80 bytes in flight
    budget.release(held)
    t.join(5)
    assert got == [100] and budget.used == 100
    budget.release(100)
    assert budget.used == 0


def test_gcs_generation_time():
    micros = 1_700_000_000_123_456
    assert obj.gcs_generation_time(b"\x00" + micros.to_bytes(8, "little")) == pytest.approx(1_700_000_000.123456)
    assert obj.gcs_generation_time(b'\x00"etag"') is None
