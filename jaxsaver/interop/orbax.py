"""Reads orbax PyTree checkpoints (OCDBT or per-leaf, zarr or zarr3) through tensorstore, without orbax.

:func:`read` returns the tree as numpy arrays, or, given a target of ``jax.ShapeDtypeStruct``
leaves with shardings (or ``jax.Array`` leaves), as sharded ``jax.Array`` values, each device
block read on its own (tensorstore fetches only the chunks a block intersects).
:class:`OrbaxCheckpoint` is the lazy reader under it (the layout is described in
:mod:`jaxsaver.interop._orbax_layout`); :mod:`jaxsaver.interop.convert` writes bundles from it.

Example:
    >>> import numpy as np
    >>> from jaxsaver.interop import orbax
    >>> tree = orbax.read("/path/to/orbax/checkpoint")  # doctest: +SKIP
    >>> tree["params"]["w"].dtype                        # doctest: +SKIP
    dtype('float32')
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_dtypes  # noqa: F401  (bfloat16 & co. for numpy)
import numpy as np
import tensorstore as ts

from jaxsaver._errors import (
    CheckpointNotFoundError,
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    StorageError,
)
from jaxsaver._sharding import unique_indices
from jaxsaver.typing import PathLike, PyTree
from jaxsaver.interop._orbax_layout import (
    ARRAY_TYPES,
    EMPTY_TYPES,
    OrbaxLayout,
    OrbaxLeaf,
    build_tree,
    check_readable,
    parse_metadata,
)

__all__ = ["OrbaxCheckpoint", "read"]

logger = logging.getLogger(__name__)

_METADATA = "_METADATA"
_STRINGS = "_strings.json"
_WINDOW = 4  # blocks read concurrently by one sharded read


def _base_spec(path: str) -> Any:
    """A tensorstore kvstore spec for a directory: a local path, or a kvstore URL (``gs://``...)."""
    if "://" in path and not path.startswith("file://"):
        return path.rstrip("/") + "/"
    local = path[len("file://"):] if path.startswith("file://") else path
    return {"driver": "file", "path": os.path.abspath(local) + "/"}


def _open_kvstore(base: Any) -> ts.KvStore:
    try:
        return ts.KvStore.open(base).result()
    except ValueError as err:
        raise StorageError(f"cannot open {base}: {err}") from None


def _read_key(kvstore: ts.KvStore, key: str) -> bytes | None:
    try:
        result = kvstore.read(key.encode()).result()
    except ValueError as err:
        raise StorageError(f"cannot read {key}: {err}") from None
    return None if result.state == "missing" else bytes(result.value)


class OrbaxCheckpoint:
    """A lazy reader of one orbax PyTree item directory.

    Args:
        path: the item directory (the one holding ``_METADATA``); a directory with a single
            item subdirectory (``CheckpointManager``'s ``<step>/default``) is accepted too.

    Raises:
        CheckpointNotFoundError: no ``_METADATA`` there.
        DataLossError: ``_METADATA`` is malformed.
    """

    def __init__(self, path: PathLike) -> None:
        path = os.fspath(path)
        self.path = path
        self._base = _base_spec(path)
        kvstore = _open_kvstore(self._base)
        data = _read_key(kvstore, _METADATA)
        if data is None and isinstance(self._base, dict) and os.path.isdir(path):
            items = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, _METADATA)))
            if len(items) == 1:
                self.path = os.path.join(path, items[0])
                self._base = _base_spec(self.path)
                kvstore = _open_kvstore(self._base)
                data = _read_key(kvstore, _METADATA)
        if data is None:
            raise CheckpointNotFoundError(
                f"Not an orbax checkpoint: {path} has no {_METADATA} (pass the item directory, "
                "the one orbax's StandardCheckpointer or PyTreeCheckpointer saved to)"
            )
        self._kvstore = kvstore
        self.layout: OrbaxLayout = parse_metadata(data)
        self._strings: dict[str, Any] | None = None
        self._arrays: dict[str, ts.TensorStore] = {}

    @property
    def leaves(self) -> tuple[OrbaxLeaf, ...]:
        """Every leaf of the tree, empty nodes included."""
        return self.layout.leaves

    def leaf(self, name: str) -> OrbaxLeaf:
        """The leaf named ``name`` (keys joined by ``/``)."""
        for leaf in self.leaves:
            if leaf.name == name:
                return leaf
        raise NotFoundError(f"Key {name} not found in orbax checkpoint {self.path}")

    # ------------------------------------------------------------------ arrays

    def _spec(self, leaf: OrbaxLeaf) -> dict[str, Any]:
        if self.layout.use_ocdbt:
            kvstore: Any = {"driver": "ocdbt", "base": self._base, "path": leaf.param_name + "/"}
        elif isinstance(self._base, dict):
            kvstore = dict(self._base, path=self._base["path"] + leaf.param_name + "/")
        else:
            kvstore = self._base + leaf.param_name + "/"
        spec = {"driver": "zarr3" if self.layout.use_zarr3 else "zarr", "kvstore": kvstore}
        if self.layout.all_chunks_stored:  # a missing chunk is lost data, not the fill value
            spec["fill_missing_data_reads"] = False
        return spec

    def array(self, leaf: OrbaxLeaf) -> ts.TensorStore:
        """The tensorstore array of an array leaf (opened once, read lazily).

        Raises:
            InvalidArgumentError: the leaf is not an array (a string or an empty node).
            DataLossError: its array metadata is missing or unreadable.
        """
        check_readable(leaf)
        if leaf.value_type not in ARRAY_TYPES:
            raise InvalidArgumentError(f"orbax leaf {leaf.name} is a {leaf.value_type}, not an array")
        found = self._arrays.get(leaf.param_name)
        if found is None:
            try:
                found = ts.open(self._spec(leaf), open=True, read=True).result()
            except ValueError as err:
                raise DataLossError(f"orbax leaf {leaf.name}: cannot open its array {leaf.param_name}: {err}") from None
            self._arrays[leaf.param_name] = found
        return found

    def shape(self, leaf: OrbaxLeaf) -> tuple[int, ...]:
        return tuple(int(d) for d in self.array(leaf).shape)

    def dtype(self, leaf: OrbaxLeaf) -> np.dtype:
        return np.dtype(self.array(leaf).dtype.numpy_dtype)

    def block_shape(self, leaf: OrbaxLeaf) -> tuple[int, ...]:
        """The blocks the leaf was written in: its ``write_shape`` (a shard), else its chunks."""
        shape = self.shape(leaf)
        block = leaf.write_shape or tuple(self.array(leaf).chunk_layout.write_chunk.shape or shape)
        if len(block) != len(shape):
            raise DataLossError(f"orbax leaf {leaf.name}: write shape {list(block)} does not fit shape {list(shape)}")
        return tuple(min(b, d) if d else b for b, d in zip(block, shape))

    def blocks(self, leaf: OrbaxLeaf) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
        """Reads an array leaf block by block (the next read in flight while one is handed out)."""
        array, shape, block = self.array(leaf), self.shape(leaf), self.block_shape(leaf)
        starts = [range(0, d, b) if d else range(1) for d, b in zip(shape, block)]
        indices = [
            tuple(slice(s, min(s + b, d)) for s, b, d in zip(start, block, shape))
            for start in itertools.product(*starts)
        ]
        pending = array[indices[0]].read() if indices else None
        for k, index in enumerate(indices):
            current = pending
            pending = array[indices[k + 1]].read() if k + 1 < len(indices) else None
            yield index, self._result(leaf, current)

    def _result(self, leaf: OrbaxLeaf, future: Any) -> np.ndarray:
        try:
            return np.asarray(future.result())
        except ValueError as err:
            raise DataLossError(f"orbax leaf {leaf.name}: {err}") from None

    def read_leaf(self, leaf: OrbaxLeaf) -> Any:
        """A leaf as numpy (0-d for scalars), ``str`` for strings, or its empty node."""
        check_readable(leaf)
        if leaf.value_type in EMPTY_TYPES:
            empty = EMPTY_TYPES[leaf.value_type]
            return type(empty)() if empty is not None else None
        if leaf.value_type == "string":
            return self._string(leaf)
        return self._result(leaf, self.array(leaf).read())

    def _string(self, leaf: OrbaxLeaf) -> str:
        if self._strings is None:
            data = _read_key(self._kvstore, _STRINGS)
            try:
                self._strings = json.loads(data) if data is not None else {}
            except (ValueError, UnicodeDecodeError) as err:
                raise DataLossError(f"orbax {_STRINGS} in {self.path} is not JSON: {err}") from None
        if not isinstance(self._strings, dict) or not isinstance(self._strings.get(leaf.param_name), str):
            raise DataLossError(f"orbax string leaf {leaf.name} is not in {_STRINGS} of {self.path}")
        return self._strings[leaf.param_name]

    def read_sharded(self, leaf: OrbaxLeaf, sharding: jax.sharding.Sharding) -> jax.Array:
        """An array leaf as a ``jax.Array`` laid out by ``sharding``.

        Only this process's devices' blocks are read, each distinct block once, at most
        ``_WINDOW`` at a time (host memory: a few blocks, never the whole array), and each is
        placed on its devices as soon as it arrives.
        """
        array, shape = self.array(leaf), self.shape(leaf)
        blocks = unique_indices(sharding, shape)
        per_device: dict[Any, jax.Array] = {}
        pending: collections.deque = collections.deque()

        def place() -> None:
            devices, future = pending.popleft()
            host = self._result(leaf, future)
            for device in devices:
                per_device[device] = jax.device_put(host, device)

        for extents, devices in blocks:
            pending.append((devices, array[tuple(slice(s, s + n) for s, n in extents)].read()))
            if len(pending) >= _WINDOW:
                place()
        while pending:
            place()
        ordered = [per_device[d] for d in sharding.addressable_devices_indices_map(shape)]
        return jax.make_array_from_single_device_arrays(shape, sharding, ordered)


def _target_leaf(x: Any) -> bool:
    return isinstance(x, (jax.ShapeDtypeStruct, jax.Array, np.ndarray, np.generic))


def read(path: PathLike, target: PyTree | None = None) -> PyTree:
    """Reads an orbax PyTree checkpoint.

    Args:
        path: the item directory orbax saved to (``StandardCheckpointer`` /
            ``PyTreeCheckpointer``), local or a tensorstore kvstore URL (``gs://``, ``s3://``).
        target: None for the whole tree as numpy (dicts and lists, scalars as 0-d arrays,
            strings as ``str``, empty nodes as themselves); or a pytree whose leaves name what to
            read and how: ``jax.ShapeDtypeStruct`` with a sharding, or a ``jax.Array`` (its
            sharding) → a sharded ``jax.Array``; a ``ShapeDtypeStruct`` without sharding, a numpy
            array or scalar → numpy. Shapes and dtypes must match the checkpoint's (no casts).

    Returns:
        The tree (the target's structure when given).

    Raises:
        CheckpointNotFoundError: ``path`` holds no orbax checkpoint.
        NotFoundError: target leaves absent from the checkpoint (all listed).
        InvalidArgumentError: shapes or dtypes differ from the target's (all listed).
        DataLossError: the metadata or an array is damaged, or a chunk is missing.
    """
    checkpoint = OrbaxCheckpoint(path)
    if target is None:
        values = [checkpoint.read_leaf(leaf) for leaf in checkpoint.leaves]
        return build_tree(checkpoint.leaves, values)
    by_keys = {tuple(str(k) for k in leaf.keys): leaf for leaf in checkpoint.leaves}
    paths, treedef = jax.tree_util.tree_flatten_with_path(target, is_leaf=_target_leaf)
    missing, problems, leaves = [], [], []
    for key_path, wanted in paths:
        keys = tuple(str(_key_name(k)) for k in key_path)
        leaf = by_keys.get(keys)
        name = "/".join(keys)
        if leaf is None:
            missing.append(name)
            continue
        leaves.append(leaf)
        if leaf.value_type not in ARRAY_TYPES:
            continue
        stored_shape, stored_dtype = checkpoint.shape(leaf), checkpoint.dtype(leaf)
        shape = tuple(np.shape(wanted))
        dtype = np.dtype(wanted.dtype) if hasattr(wanted, "dtype") else None
        if shape != stored_shape:
            problems.append(f"{name}: shape: checkpoint has {list(stored_shape)}, target {list(shape)}")
        if dtype is not None and dtype != stored_dtype:
            problems.append(f"{name}: dtype: checkpoint has {stored_dtype}, target {dtype}")
    if missing:
        raise NotFoundError(
            f"{len(missing)} target leaves not found in orbax checkpoint {checkpoint.path}: "
            + ", ".join(missing)
        )
    if problems:
        raise InvalidArgumentError(
            f"The orbax checkpoint {checkpoint.path} does not match the target:\n  " + "\n  ".join(problems)
        )
    values = []
    for (_, wanted), leaf in zip(paths, leaves):
        sharding = getattr(wanted, "sharding", None)
        if sharding is not None and leaf.value_type in ARRAY_TYPES:
            values.append(checkpoint.read_sharded(leaf, sharding))
        else:
            values.append(checkpoint.read_leaf(leaf))
    return jax.tree_util.tree_unflatten(treedef, values)


def _key_name(entry: Any) -> Any:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    raise InvalidArgumentError(f"unsupported key in target: {entry!r}")
