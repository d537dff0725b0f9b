"""The storage interface: ``Store``, its ``Capabilities``, streaming writers and positional files.

Every layer above :mod:`jaxsaver._store` addresses files as a ``(store, key)`` pair from
:func:`jaxsaver._store.resolve` and never asks which backend it holds: where the commit protocol
or the read path differs, it reads a flag of :attr:`Store.capabilities` and calls the matching
method (:meth:`Store.open_positional`, :meth:`Store.sync_dir`).

Example:
    >>> caps = Capabilities(atomic_rename=True, positional_reads=True, directory_sync=True,
    ...                     directories=True)
    >>> caps.max_object_bytes is None
    True
"""

from __future__ import annotations

import abc
import posixpath
from dataclasses import dataclass
from typing import Any

from jaxsaver._errors import UnimplementedError

__all__ = ["Capabilities", "ObjectWriter", "PositionalFile", "Store"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a store can do beyond the common interface; callers branch on these, never on classes."""

    #: :meth:`Store.rename` is atomic and cheap (local disk); else it copies (object stores).
    atomic_rename: bool = False
    #: The largest object one writer accepts, or None for no limit.
    max_object_bytes: int | None = None
    #: :meth:`Store.open_positional` returns a kept-open file with scatter reads (``preadv``).
    positional_reads: bool = False
    #: :meth:`Store.sync_dir` makes renames inside a directory durable (``fsync`` of the directory).
    directory_sync: bool = False
    #: Directories exist as such (they must be created, and can be removed when empty).
    directories: bool = False


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


class PositionalFile(abc.ABC):
    """One object kept open for many positional reads (stores with ``positional_reads``)."""

    #: The key it was opened from (for messages).
    key: str

    @abc.abstractmethod
    def read_into(self, offset: int, out: memoryview) -> None:
        """Fills ``out`` with the bytes at ``offset``; a short file is a ``DataLossError``."""

    @abc.abstractmethod
    def readv(self, buffers: list[memoryview], offset: int) -> int:
        """One scatter read into ``buffers`` from ``offset``; returns the bytes read (may be short)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the file; further reads are an error."""

    def __enter__(self) -> PositionalFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Store(abc.ABC):
    """A flat namespace of byte objects addressed by string keys."""

    #: What this store can do (see :class:`Capabilities`).
    capabilities: Capabilities = Capabilities()

    @property
    def atomic_rename(self) -> bool:
        """Shorthand for ``capabilities.atomic_rename``."""
        return self.capabilities.atomic_rename

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

    def entries(self, prefix: str) -> list[str]:
        """Names of the entries directly in ``prefix``'s directory that start with its basename:
        objects, and directories (key prefixes on object stores) such as ``<prefix>_temp``; sorted."""
        directory = self.dirname(prefix)
        skip = len(directory) + 1 if directory else 0
        return sorted({key[skip:].split("/", 1)[0] for key in self.list(prefix)})

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Deletes ``key``; a missing key is not an error."""

    @abc.abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Moves an object (atomic where ``capabilities.atomic_rename``)."""

    @abc.abstractmethod
    def mtime(self, key: str) -> float:
        """Last modification time in seconds since the epoch."""

    def open_positional(self, key: str) -> PositionalFile:
        """Opens ``key`` for positional reads (only where ``capabilities.positional_reads``).

        Raises:
            UnimplementedError: the store has no positional file access.
        """
        raise UnimplementedError(f"{self.url(key)}: this store has no positional file access")

    def sync_dir(self, dirkey: str) -> None:
        """Makes renames inside ``dirkey`` durable where ``capabilities.directory_sync``; else nothing
        to do (object stores commit each put on its own)."""

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
        """The key's parent (``posixpath`` rules unless the store says otherwise)."""
        return posixpath.dirname(key)

    def basename(self, key: str) -> str:
        """The key's last component."""
        return posixpath.basename(key)

    def join(self, *parts: str) -> str:
        """Joins key components."""
        return posixpath.join(*parts)

    def isabs(self, key: str) -> bool:
        """Whether ``key`` is absolute (always, on stores without a working directory)."""
        return True
