"""``KvStore``: the :class:`~jaxsaver._store.base.Store` interface over any tensorstore kvstore.

Memory, S3 and GCS (see :mod:`jaxsaver._store.object_store` for URLs, specs and retries);
:func:`jaxsaver._store.resolve` builds these stores.

Example:
    >>> store = memory_store()
    >>> store.write("doc/kv.txt", b"hello")
    >>> store.list("doc/kv"), store.size("doc/kv.txt"), store.url("doc/kv.txt")
    (['doc/kv.txt'], 5, 'memory://doc/kv.txt')
"""

from __future__ import annotations

import threading
import time
from typing import Any

from jaxsaver._errors import CheckpointNotFoundError, DataLossError, StorageError
from jaxsaver._store.base import Capabilities, ObjectWriter, Store

__all__ = ["KvStore", "cached_store", "memory_store"]


class _KvWriter(ObjectWriter):
    """Buffers one object (at most the store's object cap) and puts it in one request on commit."""

    def __init__(self, store: KvStore, key: str) -> None:
        self._store = store
        self._key = key
        self._single: bytes | None = None  # a lone bytes write is kept without a copy
        self._buffer = bytearray()
        self._size = 0

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        n = view.nbytes
        cap = self._store.max_object_bytes
        if self._size + n > cap:
            size = self._size + n
            self.abort()
            raise StorageError(
                f"{self._store.url(self._key)}: object would be {size} bytes, over this store's "
                f"limit of {cap} bytes per object (JAXSAVER_MAX_OBJECT_BYTES): split the data over "
                "more bundles (e.g. a sharded save with smaller device groups)"
            )
        if not n:
            return
        if self._size == 0 and isinstance(data, bytes):
            self._single = data
        else:
            if self._single is not None:
                self._buffer += self._single
                self._single = None
            self._buffer += view
        self._size += n

    def commit(self) -> None:
        value: Any = self._single if self._single is not None else self._buffer
        try:
            self._store._put(self._key, value if self._size else b"", nbytes=self._size)
        finally:
            self.abort()

    def abort(self) -> None:
        self._single = None
        self._buffer = bytearray()
        self._size = 0


class KvStore(Store):
    """Any tensorstore kvstore (memory, gcs, s3, ...); keys are paths inside its root.

    Every request runs under :class:`jaxsaver._store.object_store.RetryPolicy` (bounded retries of
    transient failures, a deadline per try) and failures become typed jaxsaver errors naming the
    user-facing URL (``s3://bucket/key``).

    Args:
        spec: a tensorstore kvstore spec (dict) or an opened ``tensorstore.KvStore``.
        scheme: the URL prefix of keys in messages, e.g. ``"memory://"`` or ``"s3://bucket/"``.
        max_object_bytes: the largest object :meth:`open_writer` accepts (default
            ``JAXSAVER_MAX_OBJECT_BYTES``, 4 GiB; tensorstore's S3 driver cannot put 5 GiB).
        retry: the retry policy (default from the environment).
    """

    def __init__(
        self,
        spec: Any,
        scheme: str = "",
        *,
        max_object_bytes: int | None = None,
        retry: Any = None,
    ) -> None:
        import tensorstore as ts

        from jaxsaver._store import object_store as obj

        self._ts = ts
        self._obj = obj
        self._scheme = scheme
        self.retry = retry if retry is not None else obj.RetryPolicy.from_env()
        self.max_object_bytes = int(max_object_bytes) if max_object_bytes else obj.max_object_bytes()
        if isinstance(spec, ts.KvStore):
            self._kv = spec
        else:
            try:
                self._kv = ts.KvStore.open(spec).result(timeout=self.retry.timeout)
            except Exception as err:  # tensorstore raises ValueError for every status
                raise StorageError(f"cannot open store {self._scheme or spec!r}: {err}") from None
        self.spec: dict[str, Any] = dict(spec) if isinstance(spec, dict) else self._kv.spec().to_json()
        self.driver: str = self.spec.get("driver", "")
        self._written: dict[str, float] = {}  # mtimes of objects this process put

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """No rename, no directories, no positional files; objects capped at ``max_object_bytes``."""
        return Capabilities(max_object_bytes=self.max_object_bytes)

    def url(self, key: str) -> str:
        return f"{self._scheme}{key}"

    def _call(self, start: Any, key: str, *, nbytes: int = 0, operation: str = "", handle: Any = None) -> Any:
        return self._obj.call(
            start, url=self.url(key), policy=self.retry, nbytes=nbytes, operation=operation, handle=handle
        )

    def _put(self, key: str, value: Any, nbytes: int | None = None) -> None:
        nbytes = len(value) if nbytes is None and value is not None else (nbytes or 0)
        held = self._obj.INFLIGHT.acquire(nbytes)
        try:
            self._call(
                lambda: self._kv.write(key, value), key, nbytes=nbytes,
                operation="delete" if value is None else "write",
            )
        finally:
            self._obj.INFLIGHT.release(held)
        if value is None:
            self._written.pop(key, None)
        else:
            self._written[key] = time.time()

    def _stat(self, key: str) -> Any:
        result = self._call(lambda: self._kv.read(key, byte_range=slice(0, 0)), key, operation="stat")
        if result.state != "value":
            raise CheckpointNotFoundError(f"{self.url(key)}: no such object")
        return result

    def read(self, key: str, offset: int = 0, size: int | None = None) -> bytes:
        end = None if size is None else offset + size
        byte_range = slice(offset, end) if (offset or end is not None) else None

        def out_of_range(err: BaseException) -> Any:
            if self._obj.status_of(err) == "OUT_OF_RANGE":
                total = self._obj.size_from_error(err)
                has = f", object has {total}" if total is not None else ""
                raise DataLossError(
                    f"{self.url(key)}: truncated: wanted {size if size is not None else 'all'} bytes "
                    f"at offset {offset}{has}"
                ) from None
            return None

        result = self._call(
            lambda: self._kv.read(key, byte_range=byte_range), key, nbytes=size or 0,
            operation="read", handle=out_of_range,
        )
        if result.state != "value":
            raise CheckpointNotFoundError(f"{self.url(key)}: no such object")
        data = result.value
        if size is not None and len(data) != size:
            raise DataLossError(
                f"{self.url(key)}: truncated: wanted {size} bytes at offset {offset}, got {len(data)}"
            )
        return data

    def _byte_exists(self, key: str, offset: int) -> bool:
        """Whether the object has a byte at ``offset`` (False also when it is missing)."""

        def out_of_range(err: BaseException) -> Any:
            return (False,) if self._obj.status_of(err) == "OUT_OF_RANGE" else None

        result = self._call(
            lambda: self._kv.read(key, byte_range=slice(offset, offset + 1)), key, operation="stat",
            handle=out_of_range,
        )
        if isinstance(result, tuple):
            return False
        return result.state == "value" and len(result.value) == 1

    def size(self, key: str) -> int:
        """The object's size: from the store's out-of-range answer where it carries one (memory,
        S3), else by probing single bytes (GCS: about 2·log2(size) small requests)."""
        far = 1 << 62

        def out_of_range(err: BaseException) -> Any:
            if self._obj.status_of(err) == "OUT_OF_RANGE":
                return (self._obj.size_from_error(err),)
            return None

        result = self._call(
            lambda: self._kv.read(key, byte_range=slice(far, far + 1)), key, operation="stat", handle=out_of_range
        )
        if not isinstance(result, tuple):
            if result.state != "value":
                raise CheckpointNotFoundError(f"{self.url(key)}: no such object")
        elif result[0] is not None:
            return result[0]
        self._stat(key)  # raises if missing
        if not self._byte_exists(key, 0):
            return 0
        lo, hi = 1, 2  # invariant: size >= lo; probe doubling until a byte at hi-1 is missing
        while self._byte_exists(key, hi - 1):
            lo, hi = hi, hi * 2
        while lo < hi:  # size in [lo, hi): find the first missing byte
            mid = (lo + hi) // 2
            if self._byte_exists(key, mid):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def exists(self, key: str) -> bool:
        result = self._call(lambda: self._kv.read(key, byte_range=slice(0, 0)), key, operation="stat")
        return result.state == "value"

    def open_writer(self, key: str) -> ObjectWriter:
        return _KvWriter(self, key)

    def write(self, key: str, data: Any) -> None:
        """Puts a whole object in one request (no copy for ``bytes``)."""
        writer = _KvWriter(self, key)
        writer.write(data)
        writer.commit()

    def list(self, prefix: str) -> list[str]:
        ts = self._ts
        rng = ts.KvStore.KeyRange(inclusive_min=prefix, exclusive_max=_prefix_end(prefix))
        keys = self._call(lambda: self._kv.list(rng), prefix, operation="list")
        return sorted(k.decode("utf-8", "surrogateescape") for k in keys)

    def delete(self, key: str) -> None:
        self._put(key, None)

    def rename(self, src: str, dst: str) -> None:
        """Copies then deletes (object stores cannot rename): neither atomic nor cheap."""
        self._put(dst, self.read(src))
        self.delete(src)

    def mtime(self, key: str) -> float:
        """Creation time: GCS's generation, S3's Last-Modified (through botocore if installed),
        else the time this process wrote it, else now (tensorstore reports no object times)."""
        result = self._stat(key)
        when = None
        if self.driver == "gcs":
            when = self._obj.gcs_generation_time(bytes(result.stamp.generation))
        elif self.driver == "s3":
            when = self._obj.s3_last_modified(self.spec, self.spec.get("path", "") + key)
        if when is None:
            when = self._written.get(key)
        return float(when if when is not None else result.stamp.time)


def _prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    if not prefix:
        return ""
    raw = bytearray(prefix.encode("utf-8", "surrogateescape"))
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return ""
    raw[-1] += 1
    return raw.decode("utf-8", "surrogateescape")


_STORES: dict[str, KvStore] = {}
_STORES_LOCK = threading.Lock()


def cached_store(spec: dict[str, Any], scheme: str) -> KvStore:
    """One :class:`KvStore` per spec (per bucket and endpoint) per process."""
    from jaxsaver._store.object_store import cache_key

    key = cache_key(spec)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = KvStore(spec, scheme=scheme)
        return store


def memory_store() -> KvStore:
    return cached_store({"driver": "memory"}, "memory://")
