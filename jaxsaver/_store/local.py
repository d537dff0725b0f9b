"""``LocalStore``: local disk through the OS (positional reads, fsync, atomic rename).

Example:
    >>> import os, tempfile
    >>> key = os.path.join(tempfile.mkdtemp(), "x.bin")
    >>> LOCAL.write(key, b"hello")
    >>> with LOCAL.open_positional(key) as f:
    ...     out = bytearray(3); f.read_into(1, memoryview(out)); bytes(out)
    b'ell'
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from typing import Any

from jaxsaver._errors import (
    CheckpointNotFoundError,
    DataLossError,
    InvalidArgumentError,
    PermissionDeniedError,
    StorageError,
)
from jaxsaver._store.base import Capabilities, ObjectWriter, PositionalFile, Store

__all__ = ["LOCAL", "LocalStore"]


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
        # The temp name says which process writes it: the leftover sweep (jaxsaver._store.leftovers)
        # removes it once that process is gone (see temp_name).
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


def _read_into_fd(fd: int, key: str, offset: int, out: memoryview) -> None:
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


class _LocalFile(PositionalFile):
    """A kept-open descriptor: ``pread``/``preadv`` at any offset, from any thread."""

    def __init__(self, key: str) -> None:
        self.key = key
        try:
            self._fd = os.open(key, os.O_RDONLY)
        except OSError as err:
            raise _os_error(err, key) from None

    def _live(self) -> int:
        if self._fd < 0:
            raise InvalidArgumentError(f"{self.key}: file is closed")
        return self._fd

    def read_into(self, offset: int, out: memoryview) -> None:
        _read_into_fd(self._live(), self.key, offset, out)

    def readv(self, buffers: list[memoryview], offset: int) -> int:
        return os.preadv(self._live(), buffers, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalStore(Store):
    """Local disk through the OS directly: positional reads, fsync, atomic rename."""

    capabilities = Capabilities(
        atomic_rename=True, positional_reads=True, directory_sync=True, directories=True
    )

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
            _read_into_fd(fd, key, offset, out)
        finally:
            os.close(fd)

    def open_positional(self, key: str) -> PositionalFile:
        return _LocalFile(key)

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

    def entries(self, prefix: str) -> list[str]:
        base = os.path.basename(prefix)
        try:
            with os.scandir(os.path.dirname(prefix) or ".") as it:
                return sorted(e.name for e in it if e.name.startswith(base))
        except FileNotFoundError:
            return []

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

    def sync_dir(self, dirkey: str) -> None:
        """Makes renames inside ``dirkey`` durable (``fsync`` of the directory)."""
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
