"""The jaxsaver error hierarchy: one root, each class also a builtin users already catch."""

from __future__ import annotations

__all__ = [
    "JaxsaverError",
    "NotFoundError",
    "CheckpointNotFoundError",
    "DataLossError",
    "InvalidArgumentError",
    "UnimplementedError",
    "StorageError",
    "PermissionDeniedError",
]


class JaxsaverError(Exception):
    """Root of every error jaxsaver raises on purpose."""


class NotFoundError(JaxsaverError, KeyError):
    """A key (tensor name) is not in a checkpoint.

    Inherits ``KeyError`` but prints its message as given (``KeyError`` would quote it).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(JaxsaverError, FileNotFoundError):
    """A file, object or checkpoint prefix does not exist."""


class DataLossError(JaxsaverError, OSError):
    """Stored bytes are corrupt or truncated (checksum mismatch, malformed index, short file)."""


class InvalidArgumentError(JaxsaverError, ValueError):
    """An argument (name, shape, slice spec, dtype, path) is not acceptable."""


class UnimplementedError(JaxsaverError, NotImplementedError):
    """A valid checkpoint feature jaxsaver deliberately does not support (e.g. DT_VARIANT)."""


class StorageError(JaxsaverError, OSError):
    """A storage backend failed (server unreachable, bucket missing, I/O error)."""


class PermissionDeniedError(StorageError, PermissionError):
    """The storage backend refused access."""
