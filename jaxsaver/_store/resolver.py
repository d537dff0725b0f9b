"""``resolve``: a user path or URL (local path, ``memory://``, ``s3://``, ``gs://``) to ``(store, key)``.

Example:
    >>> store, key = resolve("memory://doc/model")
    >>> store.write(key + ".txt", b"hello")
    >>> store.read(store.join(store.dirname(key), "model.txt"))
    b'hello'
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

from jaxsaver._errors import InvalidArgumentError
from jaxsaver._store.base import Store
from jaxsaver._store.kvstore import KvStore, cached_store, memory_store
from jaxsaver._store.local import LOCAL

__all__ = ["canonical_key", "resolve"]


def _key_in_store(path: str) -> str:
    """The key part of a URL (``s3://bucket/key`` -> ``key``, ``memory://key`` -> ``key``)."""
    scheme, sep, rest = path.partition("://")
    if not sep:
        return path
    if scheme.lower() in ("s3", "gs", "gcs"):
        return rest.partition("/")[2]
    return rest


def canonical_key(store: Store, key: str) -> str:
    """One spelling per location, for comparing keys: stores with directories take OS paths
    (made absolute, symlinks resolved), object stores plain keys (``a/./b`` -> ``a/b``).

    Example:
        >>> canonical_key(resolve("memory://")[0], "run/./ckpt/../model")
        'run/model'
    """
    if store.capabilities.directories:
        return os.path.realpath(key)
    return posixpath.normpath(key)


def resolve(path: Any, storage: Any = None) -> tuple[Store, str]:
    """Maps a user path (local path or URL) to ``(store, key)``.

    Args:
        path: a local path (str or ``os.PathLike``), ``memory://key``, ``s3://bucket/key`` or
            ``gs://bucket/key`` (see :mod:`jaxsaver._store.object_store` for the environment each
            honours). Keys of object stores are paths inside the bucket.
        storage: optional override: a :class:`~jaxsaver._store.base.Store`, or a tensorstore
            kvstore spec (dict, e.g. ``{"driver": "s3", "bucket": ..., "endpoint": ...}``), or an
            opened ``tensorstore.KvStore``; ``path`` is then a key in it (a URL's scheme and bucket
            are dropped).

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
        from jaxsaver._store.object_store import url_root_of

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
            from jaxsaver._store import object_store as obj

            url = obj.parse_url(path)
            return cached_store(obj.spec_for(url), url.root), url.key
        raise InvalidArgumentError(
            f"unsupported storage scheme {scheme!r} in {path!r}: use a local path, s3://, gs:// "
            "or memory://, or pass storage= (a tensorstore kvstore spec)"
        )
    return LOCAL, path
