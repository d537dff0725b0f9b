"""One small storage interface: local disk through the OS, other stores through tensorstore.

Every layer above this one addresses files as *locations*: a ``(store, key)`` pair obtained from
:func:`resolve`. Nothing above it knows which store it is on; it asks the store's capability
flag ``atomic_rename`` where the commit protocol differs.

Example:
    >>> store, key = resolve("memory://doc/model")
    >>> store.write(key + ".txt", b"hello")
    >>> store.read(store.join(store.dirname(key), "model.txt"))
    b'hello'
"""

from __future__ import annotations

import abc
import errno
import os
import posixpath
import secrets
import threading
import time
from typing import Any

from jaxsaver._errors import (
    CheckpointNotFoundError,
    DataLossError,
    InvalidArgumentError,
    PermissionDeniedError,
    StorageError,
)

__all__ = ["Store", "ObjectWriter", "LocalStore", "KvStore", "resolve", "LOCAL"]


class ObjectWriter(abc.ABC):
    """Streams one object; it becomes visible under its key only at :meth:`commit`."""

    @abc.abstractmethod
    def write(self, data: Any) -> None:
        """Appends a bytes-like object (any C-contiguous buffer)."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Makes the object durable and visible under its final key."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discards everything written; the final key is left untouched."""


class Store(abc.ABC):
    """A flat namespace of byte objects addressed by string keys."""

    #: True where :meth:`rename` is atomic and cheap (local disk).
    atomic_rename: bool = False

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """The user-facing name of ``key`` for messages."""

    @abc.abstractmethod
    def read(self, key: str, offset: int = 0, size: int | None = None) -> bytes:
        """Reads ``size`` bytes at ``offset`` (to the end if None); short reads are an error."""

    def read_into(self, key: str, offset: int, out: memoryview) -> None:
        """Fills the writable buffer ``out`` with the bytes at ``offset``."""
        data = self.read(key, offset, out.nbytes)
        out.cast("B")[:] = data

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; ``CheckpointNotFoundError`` if absent."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abc.abstractmethod
    def open_writer(self, key: str) -> ObjectWriter:
        """A streaming writer whose object appears at ``key`` on commit."""

    def write(self, key: str, data: Any) -> None:
        """Writes a whole object atomically."""
        writer = self.open_writer(key)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """All keys starting with ``prefix``, sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Deletes ``key``; a missing key is not an error."""

    @abc.abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Moves an object (atomic where ``atomic_rename``)."""

    @abc.abstractmethod
    def mtime(self, key: str) -> float:
        """Last modification time in seconds since the epoch."""

    def makedirs(self, dirkey: str) -> None:
        """Creates a directory and its parents where the store has directories."""

    def make_dir(self, dirkey: str) -> None:
        """Creates one directory level (its parent must exist) where the store has directories."""

    def remove_dir(self, dirkey: str) -> None:
        """Removes an empty directory where the store has directories."""

    def isdir(self, key: str) -> bool:
        """Whether ``key`` names a directory (or a non-empty key prefix on object stores)."""
        prefix = key.rstrip("/") + "/"
        return bool(self.list(prefix))

    def dirname(self, key: str) -> str:
        return posixpath.dirname(key)

    def basename(self, key: str) -> str:
        return posixpath.basename(key)

    def join(self, *parts: str) -> str:
        return posixpath.join(*parts)

    def isabs(self, key: str) -> bool:
        return True


# --------------------------------------------------------------------------- local disk


def _os_error(err: OSError, url: str) -> Exception:
    if err.errno == errno.ENOENT:
        return CheckpointNotFoundError(f"{url}: no such file or directory")
    if err.errno in (errno.EACCES, errno.EPERM):
        return PermissionDeniedError(f"{url}: permission denied")
    return StorageError(f"{url}: {err.strerror or err}")


# The local writer asks the kernel to start writing back every this many bytes, so the disk
# works while later data is still being copied in and the final fsync has little left to do.
_WRITEBACK_BYTES = 8 << 20


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Starts asynchronous writeback of a just-written range (a hint; errors are ignored).

    ``POSIX_FADV_DONTNEED`` makes Linux queue the range's dirty pages for writeback without
    waiting; pages still dirty or under writeback stay cached.
    """
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass


class _LocalWriter(ObjectWriter):
    def __init__(self, path: str) -> None:
        self._path = path
        self._tmp = f"{path}.tempstate{secrets.randbits(64)}"
        try:
            self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as err:
            raise _os_error(err, path) from None
        self._written = 0
        self._hinted = 0

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        while view.nbytes:
            written = os.write(self._fd, view)
            view = view[written:]
            self._written += written
        if self._written - self._hinted >= _WRITEBACK_BYTES:
            _start_writeback(self._fd, self._hinted, self._written - self._hinted)
            self._hinted = self._written

    def commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self._tmp, self._path)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


class LocalStore(Store):
    """Local disk through the OS directly: positional reads, fsync, atomic rename."""

    atomic_rename = True

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def url(self, key: str) -> str:
        return key

    def _fd(self, key: str) -> int:
        try:
            return os.open(key, os.O_RDONLY)
        except OSError as err:
            raise _os_error(err, key) from None

    def read(self, key: str, offset: int = 0, size: int | None = None) -> bytes:
        fd = self._fd(key)
        try:
            if size is None:
                size = max(os.fstat(fd).st_size - offset, 0)
            data = os.pread(fd, size, offset)
            while len(data) < size:
                more = os.pread(fd, size - len(data), offset + len(data))
                if not more:
                    raise DataLossError(
                        f"{key}: truncated: wanted {size} bytes at offset {offset}, "
                        f"file has {os.fstat(fd).st_size}"
                    )
                data += more
            return data
        finally:
            os.close(fd)

    def read_into(self, key: str, offset: int, out: memoryview) -> None:
        fd = self._fd(key)
        try:
            self.read_into_fd(fd, key, offset, out)
        finally:
            os.close(fd)

    @staticmethod
    def read_into_fd(fd: int, key: str, offset: int, out: memoryview) -> None:
        """Fills ``out`` from an already open descriptor (the reader keeps data files open)."""
        view = memoryview(out).cast("B")
        done = 0
        total = view.nbytes
        while done < total:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise DataLossError(
                    f"{key}: truncated: wanted {total} bytes at offset {offset}, "
                    f"file has {os.fstat(fd).st_size}"
                )
            done += n

    def size(self, key: str) -> int:
        try:
            return os.stat(key).st_size
        except OSError as err:
            raise _os_error(err, key) from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(key)

    def open_writer(self, key: str) -> ObjectWriter:
        return _LocalWriter(key)

    def list(self, prefix: str) -> list[str]:
        directory = os.path.dirname(prefix) or "."
        base = os.path.basename(prefix)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(base):
                full = os.path.join(os.path.dirname(prefix), name)
                if os.path.isfile(full):
                    out.append(full)
        return sorted(out)

    def delete(self, key: str) -> None:
        try:
            os.unlink(key)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise _os_error(err, key) from None

    def rename(self, src: str, dst: str) -> None:
        try:
            os.replace(src, dst)
        except OSError as err:
            raise _os_error(err, src) from None

    def mtime(self, key: str) -> float:
        try:
            return os.stat(key).st_mtime
        except OSError as err:
            raise _os_error(err, key) from None

    def makedirs(self, dirkey: str) -> None:
        if dirkey:
            os.makedirs(dirkey, exist_ok=True)

    def make_dir(self, dirkey: str) -> None:
        if dirkey:
            try:
                os.mkdir(dirkey)
            except FileExistsError:
                pass
            except FileNotFoundError:
                pass  # the writer's open reports the missing parent

    def remove_dir(self, dirkey: str) -> None:
        try:
            os.rmdir(dirkey)
        except OSError:
            pass

    def isdir(self, key: str) -> bool:
        return os.path.isdir(key)

    def fsync_dir(self, dirkey: str) -> None:
        """Makes renames inside ``dirkey`` durable."""
        fd = os.open(dirkey or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def dirname(self, key: str) -> str:
        return os.path.dirname(key)

    def basename(self, key: str) -> str:
        return os.path.basename(key)

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def isabs(self, key: str) -> bool:
        return os.path.isabs(key)


LOCAL = LocalStore()


# --------------------------------------------------------------------------- tensorstore kvstores
# (owned by the object-store work: KvStore, _KvWriter, resolve; see jaxsaver/_object_store.py)


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

    Every request runs under :class:`jaxsaver._object_store.RetryPolicy` (bounded retries of
    transient failures, a deadline per try) and failures become typed jaxsaver errors naming the
    user-facing URL (``s3://bucket/key``).

    Args:
        spec: a tensorstore kvstore spec (dict) or an opened ``tensorstore.KvStore``.
        scheme: the URL prefix of keys in messages, e.g. ``"memory://"`` or ``"s3://bucket/"``.
        max_object_bytes: the largest object :meth:`open_writer` accepts (default
            ``JAXSAVER_MAX_OBJECT_BYTES``, 4 GiB; tensorstore's S3 driver cannot put 5 GiB).
        retry: the retry policy (default from the environment).
    """

    atomic_rename = False

    def __init__(
        self,
        spec: Any,
        scheme: str = "",
        *,
        max_object_bytes: int | None = None,
        retry: Any = None,
    ) -> None:
        import tensorstore as ts

        from jaxsaver import _object_store as obj

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


def _cached_store(spec: dict[str, Any], scheme: str) -> KvStore:
    """One :class:`KvStore` per spec (per bucket and endpoint) per process."""
    from jaxsaver._object_store import cache_key

    key = cache_key(spec)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = KvStore(spec, scheme=scheme)
        return store


def _memory_store() -> KvStore:
    return _cached_store({"driver": "memory"}, "memory://")


def _key_in_store(path: str) -> str:
    """The key part of a URL (``s3://bucket/key`` -> ``key``, ``memory://key`` -> ``key``)."""
    scheme, sep, rest = path.partition("://")
    if not sep:
        return path
    if scheme.lower() in ("s3", "gs", "gcs"):
        return rest.partition("/")[2]
    return rest


def resolve(path: Any, storage: Any = None) -> tuple[Store, str]:
    """Maps a user path (local path or URL) to ``(store, key)``.

    Args:
        path: a local path (str or ``os.PathLike``), ``memory://key``, ``s3://bucket/key`` or
            ``gs://bucket/key`` (see :mod:`jaxsaver._object_store` for the environment each
            honours). Keys of object stores are paths inside the bucket.
        storage: optional override: a :class:`Store`, or a tensorstore kvstore spec (dict, e.g.
            ``{"driver": "s3", "bucket": ..., "endpoint": ...}``), or an opened
            ``tensorstore.KvStore``; ``path`` is then a key in it (a URL's scheme and bucket are
            dropped).

    Raises:
        InvalidArgumentError: the path is not a string or uses an unknown scheme.
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidArgumentError(
            f"expected a path or URL string, got {type(path).__name__}: {path!r}"
        ) from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(storage, Store):
        return storage, _key_in_store(path)
    if storage is not None:
        from jaxsaver._object_store import url_root_of

        if isinstance(storage, dict):
            return _cached_store(storage, url_root_of(storage)), _key_in_store(path)
        return KvStore(storage, scheme="kvstore://"), _key_in_store(path)
    if "://" in path:
        scheme, _, rest = path.partition("://")
        scheme = scheme.lower()
        if scheme == "memory":
            return _memory_store(), rest
        if scheme == "file":
            return LOCAL, rest
        if scheme in ("s3", "gs", "gcs"):
            from jaxsaver import _object_store as obj

            url = obj.parse_url(path)
            return _cached_store(obj.spec_for(url), url.root), url.key
        raise InvalidArgumentError(
            f"unsupported storage scheme {scheme!r} in {path!r}: use a local path, s3://, gs:// "
            "or memory://, or pass storage= (a tensorstore kvstore spec)"
        )
    return LOCAL, path
