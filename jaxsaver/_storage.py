"""One small storage interface: local disk through the OS, other stores through tensorstore.

Every layer above this one addresses files as *locations*: a ``(store, key)`` pair obtained from
:func:`resolve`. Nothing above it knows which store it is on; it asks the store's capability
flag ``atomic_rename`` where the commit protocol differs.
The local-disk store is here; the tensorstore-backed :class:`KvStore` lives in
:mod:`jaxsaver._kvstore` and is re-exported.

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
import socket
import threading
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
    if err.errno == errno.EROFS:
        return PermissionDeniedError(f"{url}: read-only file system")
    error = StorageError(f"{url}: {err.strerror or err}")
    error.errno = err.errno
    return error


def temp_name(path: str) -> str:
    """``path.tempstate-<host>-<pid>-<random>``: a temporary name that says who writes it.

    Example:
        >>> import os, socket
        >>> temp_name("d/model.index").startswith(f"d/model.index.tempstate-{socket.gethostname()}-{os.getpid()}-")
        True
    """
    return f"{path}.tempstate-{_HOST}-{os.getpid()}-{secrets.randbits(64):016x}"


_HOST = socket.gethostname().replace("/", "_") or "localhost"

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
        # The temp name says which process writes it: jaxsaver._cleanup removes it once that
        # process is gone (see temp_name).
        self._tmp = temp_name(path)
        try:
            self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as err:
            raise _os_error(err, path) from None
        self._written = 0
        self._hinted = 0

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        try:
            while view.nbytes:
                written = os.write(self._fd, view)
                view = view[written:]
                self._written += written
        except OSError as err:  # a full disk, an I/O error: nothing half-written stays
            self.abort()
            raise _os_error(err, self._path) from None
        if self._written - self._hinted >= _WRITEBACK_BYTES:
            _start_writeback(self._fd, self._hinted, self._written - self._hinted)
            self._hinted = self._written

    def commit(self) -> None:
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self._tmp, self._path)
        except OSError as err:
            self.abort()
            raise _os_error(err, self._path) from None

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
            try:
                os.makedirs(dirkey, exist_ok=True)
            except OSError as err:
                raise _os_error(err, dirkey) from None

    def make_dir(self, dirkey: str) -> None:
        if dirkey:
            try:
                os.mkdir(dirkey)
            except FileExistsError:
                pass
            except FileNotFoundError:
                pass  # the writer's open reports the missing parent
            except OSError as err:
                if not os.path.isdir(dirkey):
                    raise _os_error(err, dirkey) from None

    def remove_dir(self, dirkey: str) -> None:
        try:
            os.rmdir(dirkey)
        except OSError:
            pass

    def isdir(self, key: str) -> bool:
        return os.path.isdir(key)

    def fsync_dir(self, dirkey: str) -> None:
        """Makes renames inside ``dirkey`` durable."""
        try:
            fd = os.open(dirkey or ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise _os_error(err, dirkey or ".") from None

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
# KvStore lives in jaxsaver/_kvstore.py, which builds on Store and ObjectWriter above: imported
# here, after them, so that `from jaxsaver._storage import KvStore` keeps working without a cycle.

from jaxsaver._kvstore import KvStore as KvStore  # noqa: E402
from jaxsaver._kvstore import cached_store, memory_store  # noqa: E402


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
    if "\0" in path:
        raise InvalidArgumentError(f"path {path!r} contains a NUL character")
    if isinstance(storage, Store):
        return storage, _key_in_store(path)
    if storage is not None:
        from jaxsaver._object_store import url_root_of

        if isinstance(storage, dict):
            return cached_store(storage, url_root_of(storage)), _key_in_store(path)
        return KvStore(storage, scheme="kvstore://"), _key_in_store(path)
    if "://" in path:
        scheme, _, rest = path.partition("://")
        scheme = scheme.lower()
        if scheme == "memory":
            return memory_store(), rest
        if scheme == "file":
            return LOCAL, rest
        if scheme in ("s3", "gs", "gcs"):
            from jaxsaver import _object_store as obj

            url = obj.parse_url(path)
            return cached_store(obj.spec_for(url), url.root), url.key
        raise InvalidArgumentError(
            f"unsupported storage scheme {scheme!r} in {path!r}: use a local path, s3://, gs:// "
            "or memory://, or pass storage= (a tensorstore kvstore spec)"
        )
    return LOCAL, path
