"""``CountingStore``: a real store wrapped to count every operation and byte, per key.

Not a mock: every call goes through to the wrapped store (so real bytes move), and the wrapper
only records what was asked. Tests use it to prove how often a path reads or writes an object.

Example:
    >>> from jaxsaver._store import resolve
    >>> inner, key = resolve("memory://counting-doc/x")
    >>> store = CountingStore(inner)
    >>> store.write(key, b"abc")
    >>> store.read(key, 1)
    b'bc'
    >>> store.count("read", key), store.count("write", key), store.bytes_read[key]
    (1, 1, 2)
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from jaxsaver._store.base import Capabilities, ObjectWriter, PositionalFile, Store

__all__ = ["CountingStore"]


class _CountingWriter(ObjectWriter):
    def __init__(self, owner: CountingStore, key: str, inner: ObjectWriter) -> None:
        self._owner, self._key, self._inner = owner, key, inner

    def write(self, data: Any) -> None:
        self._inner.write(data)
        self._owner._record("writer.write", self._key, written=memoryview(data).nbytes)

    def commit(self) -> None:
        self._inner.commit()
        self._owner._record("commit", self._key)

    def abort(self) -> None:
        self._inner.abort()
        self._owner._record("abort", self._key)


class _CountingFile(PositionalFile):
    def __init__(self, owner: CountingStore, inner: PositionalFile) -> None:
        self._owner, self._inner, self.key = owner, inner, inner.key

    def read_into(self, offset: int, out: memoryview) -> None:
        self._inner.read_into(offset, out)
        self._owner._record("file.read_into", self.key, read=memoryview(out).nbytes)

    def readv(self, buffers: list[memoryview], offset: int) -> int:
        n = self._inner.readv(buffers, offset)
        self._owner._record("file.readv", self.key, read=n)
        return n

    def close(self) -> None:
        self._inner.close()


class CountingStore(Store):
    """Delegates every operation to ``inner`` and counts it per ``(operation, key)``.

    Attributes:
        calls: ``Counter`` of ``(operation, key)``; operations are the method names, plus
            ``writer.write``, ``commit``, ``abort`` of writers and ``file.read_into``,
            ``file.readv`` of positional files.
        bytes_read: bytes returned per key (all read paths together).
        bytes_written: bytes written per key.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.bytes_read: collections.Counter[str] = collections.Counter()
        self.bytes_written: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.inner.capabilities

    def _record(self, op: str, key: str, *, read: int = 0, written: int = 0) -> None:
        with self._lock:
            self.calls[(op, key)] += 1
            if read:
                self.bytes_read[key] += read
            if written:
                self.bytes_written[key] += written

    def count(self, op: str, key: str | None = None) -> int:
        """How often ``op`` ran on ``key`` (on any key if None)."""
        with self._lock:
            return sum(n for (o, k), n in self.calls.items() if o == op and (key is None or k == key))

    def keys_for(self, *ops: str) -> list[str]:
        """The keys any of ``ops`` touched, sorted."""
        with self._lock:
            return sorted({k for (o, k) in self.calls if o in ops})

    def reset(self) -> None:
        """Forgets every count."""
        with self._lock:
            self.calls.clear()
            self.bytes_read.clear()
            self.bytes_written.clear()

    # --------------------------------------------------------------- delegated operations

    def url(self, key: str) -> str:
        return self.inner.url(key)

    def read(self, key: str, offset: int = 0, size: int | None = None) -> bytes:
        data = self.inner.read(key, offset, size)
        self._record("read", key, read=len(data))
        return data

    def read_into(self, key: str, offset: int, out: memoryview) -> None:
        self.inner.read_into(key, offset, out)
        self._record("read_into", key, read=memoryview(out).nbytes)

    def size(self, key: str) -> int:
        self._record("size", key)
        return self.inner.size(key)

    def exists(self, key: str) -> bool:
        self._record("exists", key)
        return self.inner.exists(key)

    def open_writer(self, key: str) -> ObjectWriter:
        self._record("open_writer", key)
        return _CountingWriter(self, key, self.inner.open_writer(key))

    def write(self, key: str, data: Any) -> None:
        self.inner.write(key, data)
        self._record("write", key, written=memoryview(data).nbytes)

    def list(self, prefix: str) -> list[str]:
        self._record("list", prefix)
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._record("delete", key)
        self.inner.delete(key)

    def rename(self, src: str, dst: str) -> None:
        self._record("rename", src)
        self.inner.rename(src, dst)

    def mtime(self, key: str) -> float:
        self._record("mtime", key)
        return self.inner.mtime(key)

    def open_positional(self, key: str) -> PositionalFile:
        self._record("open_positional", key)
        return _CountingFile(self, self.inner.open_positional(key))

    def sync_dir(self, dirkey: str) -> None:
        self._record("sync_dir", dirkey)
        self.inner.sync_dir(dirkey)

    def makedirs(self, dirkey: str) -> None:
        self.inner.makedirs(dirkey)

    def make_dir(self, dirkey: str) -> None:
        self.inner.make_dir(dirkey)

    def remove_dir(self, dirkey: str) -> None:
        self.inner.remove_dir(dirkey)

    def isdir(self, key: str) -> bool:
        return self.inner.isdir(key)

    def dirname(self, key: str) -> str:
        return self.inner.dirname(key)

    def basename(self, key: str) -> str:
        return self.inner.basename(key)

    def join(self, *parts: str) -> str:
        return self.inner.join(*parts)

    def isabs(self, key: str) -> bool:
        return self.inner.isabs(key)
