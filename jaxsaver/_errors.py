"""The jaxsaver error hierarchy: one root, each class also a builtin users already catch."""

from __future__ import annotations

__all__ = [
    "JaxsaverError",
    "NotFoundError",
    "CheckpointNotFoundError",
    "NotACheckpointError",
    "DataLossError",
    "InvalidArgumentError",
    "UnimplementedError",
    "FailedPreconditionError",
    "StorageError",
    "PermissionDeniedError",
    "CoordinationError",
    "DistributedTimeoutError",
    "PeerFailedError",
    "MissingDependencyError",
]


class JaxsaverError(Exception):
    """Root of every error jaxsaver raises on purpose."""


class NotFoundError(JaxsaverError, KeyError):
    """A key (tensor name) is not in a checkpoint.

    Inherits ``KeyError`` but prints its message as given (``KeyError`` would quote it).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(NotFoundError, FileNotFoundError):
    """A file, object or checkpoint prefix does not exist.

    A :class:`NotFoundError` too, so one ``except NotFoundError`` catches a missing key and a
    missing checkpoint, as with TensorFlow.
    """


class NotACheckpointError(CheckpointNotFoundError, ValueError):
    """A path handed to restore names no checkpoint (TF raises ``ValueError`` here)."""


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


class FailedPreconditionError(JaxsaverError, RuntimeError):
    """A call made in the wrong state (e.g. ``save`` before ``build`` with ``defer_build``)."""


class MissingDependencyError(JaxsaverError, ImportError):
    """An optional dependency a call needs is not installed (the message says what to install)."""


class CoordinationError(JaxsaverError, RuntimeError):
    """A step of a multi-process save could not complete (the checkpoint is named)."""


class DistributedTimeoutError(CoordinationError, TimeoutError):
    """Some processes did not reach a step of a multi-process save in time (they are named)."""


class PeerFailedError(CoordinationError):
    """Another process's part of a multi-process save failed (its error is quoted)."""
