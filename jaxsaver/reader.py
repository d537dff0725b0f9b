"""``CheckpointReader``: TensorFlow's checkpoint reader API (``tf.train.load_checkpoint``) over a bundle.

The methods keep TensorFlow's names, return types and error wording, so code written against
``tf.train.load_checkpoint`` runs unchanged; inspection extras (:meth:`CheckpointReader.tree`,
:meth:`~CheckpointReader.stats`, :func:`diff`, notebook HTML) are formatted by
:mod:`jaxsaver.inspect`.

Example:
    >>> import numpy as np, tempfile, os
    >>> from jaxsaver import BundleWriter
    >>> prefix = os.path.join(tempfile.mkdtemp(), "model")
    >>> with BundleWriter(prefix) as w:
    ...     w.add("dense/kernel", np.ones((2, 3), np.float32))
    ...     w.add("step", np.int64(7))
    >>> reader = load_checkpoint(prefix)
    >>> reader.get_variable_to_shape_map()
    {'dense/kernel': [2, 3], 'step': []}
    >>> reader.get_variable_to_dtype_map()["step"]
    tf.int64
    >>> reader.get_tensor("step")
    np.int64(7)
    >>> list_variables(prefix)
    [('dense/kernel', [2, 3]), ('step', [])]
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxsaver import inspect as _inspect
from jaxsaver._proto import meta_graph_pb2, types_pb2
from jaxsaver._bundle.reader import BundleReader
from jaxsaver._errors import CheckpointNotFoundError, NotFoundError
from jaxsaver._format import dtypes as _dtypes
from jaxsaver._format.slices import SliceError, encode_slice_key, resolve_extents, slice_from_proto
from jaxsaver._storage import resolve
from jaxsaver.checkpoint_management import latest_checkpoint
from jaxsaver.typing import PathLike

__all__ = [
    "CheckpointReader",
    "DType",
    "diff",
    "list_variables",
    "load_checkpoint",
    "load_variable",
]

_TREE_COLLECTION = "jaxsaver_tree"  # jaxsaver.saver.TREE_COLLECTION; not imported to keep JAX out

# TensorFlow's ``DType.name`` for every DataType code (tensorflow/python/framework/dtypes.py).
_TF_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 19: "float16",
    20: "resource", 21: "variant", 22: "uint32", 23: "uint64", 24: "float8_e5m2",
    25: "float8_e4m3fn", 26: "float8_e4m3fnuz", 27: "float8_e4m3b11fnuz", 28: "float8_e5m2fnuz",
    29: "int4", 30: "uint4", 31: "int2", 32: "uint2", 33: "float4_e2m1fn",
}


@dataclass(frozen=True, slots=True)
class DType:
    """A stored tensor's dtype, as ``get_variable_to_dtype_map`` returns it.

    A stand-in for ``tf.DType`` (no TensorFlow needed): the same ``name``, ``repr``
    (``tf.float32``) and ``str`` (``<dtype: 'float32'>``), so printed maps look like
    TensorFlow's. Compares equal to another ``DType`` of the same code, to its name, to its numpy
    dtype and to a ``tf.DType`` (anything with an equal ``as_datatype_enum``).

    Example:
        >>> DType(1), DType(1).name, DType(1) == "float32", DType(1) == np.float32
        (tf.float32, 'float32', True, True)
    """

    as_datatype_enum: int
    """The ``DataType`` code (``types.proto``), e.g. 1 for ``DT_FLOAT``."""

    @property
    def name(self) -> str:
        """TensorFlow's name: ``float32``, ``string``, ``bfloat16``…"""
        return _TF_NAMES.get(self.as_datatype_enum, f"dtype{self.as_datatype_enum}")

    @property
    def tf_name(self) -> str:
        """The ``DT_FLOAT`` style enum name, as in ``debug_string``."""
        return _dtypes.name_of(self.as_datatype_enum)

    @property
    def as_numpy_dtype(self) -> type:
        """The numpy scalar type values are returned as (``object`` for strings)."""
        return _dtypes.to_numpy(self.as_datatype_enum).type

    @property
    def itemsize(self) -> int | None:
        """Bytes per element in the data file; None for strings, resources and variants."""
        if self.as_datatype_enum in (types_pb2.DT_STRING, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT):
            return None
        try:
            return _dtypes.to_numpy(self.as_datatype_enum).itemsize
        except _dtypes.UnsupportedDtype:
            return None

    def __repr__(self) -> str:
        return f"tf.{self.name}"

    def __str__(self) -> str:
        return f"<dtype: '{self.name}'>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DType):
            return other.as_datatype_enum == self.as_datatype_enum
        if isinstance(other, str):
            return other == self.name
        enum = getattr(other, "as_datatype_enum", None)
        if isinstance(enum, int):
            return enum == self.as_datatype_enum
        try:
            return np.dtype(other) == _dtypes.to_numpy(self.as_datatype_enum) and (
                self.as_datatype_enum == _dtypes.from_numpy(np.dtype(other))
            )
        except (TypeError, ValueError):
            return False

    def __hash__(self) -> int:
        return hash(self.as_datatype_enum)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing a large index allocates ~10^5 small objects; the cyclic GC would walk them all
    repeatedly (half the time of ``list_variables`` on 100 000 tensors) though none are cyclic."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _shape_debug_string(shape: tuple[int, ...]) -> bytes:
    return ("[" + ",".join(str(d) for d in shape) + "]").encode()


class CheckpointReader:
    """Reads a checkpoint's tensors by name (TensorFlow's ``CheckpointReader``).

    Opening reads only the ``.index`` file; each ``get_tensor`` reads and checksums one tensor.

    Args:
        prefix: the checkpoint prefix (``ckpt/model-3``, not ``ckpt/model-3.index``), a local
            path or URL. Use :func:`load_checkpoint` to also accept a directory.
        storage: optional storage override (see :mod:`jaxsaver._storage`).

    Raises:
        CheckpointNotFoundError: no checkpoint at ``prefix`` (the message says to drop
            ``.index`` when it was given).
        DataLossError: the index is corrupt.
    """

    def __init__(self, prefix: Any, *, storage: Any = None) -> None:
        if isinstance(prefix, bytes):
            prefix = prefix.decode()
        prefix = os.fspath(prefix)
        self._bundle = BundleReader(prefix, storage=storage)
        self._path = prefix
        self._storage = storage
        self._infos: list | None = None
        self._meta: tuple[list[str], list[int], list[tuple[int, ...]]] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the data files kept open."""
        self._bundle.close()

    @property
    def prefix(self) -> str:
        """The checkpoint prefix as given."""
        return self._path

    @property
    def bundle(self) -> BundleReader:
        """The underlying :class:`~jaxsaver.BundleReader` (slices, ``verify``, ``read_into``)."""
        return self._bundle

    # ------------------------------------------------------------------ TF's API

    def _metadata(self) -> tuple[list[str], list[int], list[tuple[int, ...]]]:
        """``(names, dtype codes, shapes)`` from the index alone, cached (no per-entry protos)."""
        if self._meta is None:
            with _gc_paused():
                self._meta = self._bundle.metadata_columns()
        return self._meta

    def _tensor_infos(self) -> list:
        if self._infos is None:
            with _gc_paused():
                self._infos = list(self._bundle.infos())
        return self._infos

    def has_tensor(self, name: str) -> bool:
        """Whether the checkpoint has a tensor (or raw slice key) called ``name``."""
        return self._bundle.has_tensor(name)

    def get_tensor(self, name: str) -> Any:
        """The tensor's value, checksum-verified; 0-d tensors as numpy scalars, strings as bytes.

        Raises:
            NotFoundError: "Key NAME not found in checkpoint".
            DataLossError: the stored bytes fail their checksum.
        """
        value = self._bundle.get_tensor(name)
        return value[()] if value.ndim == 0 else value

    def get_slice(self, name: str, index: Any) -> np.ndarray:
        """Part of a tensor (numpy index or TF slice string); reads only the bytes it needs."""
        return self._bundle.get_slice(name, index)

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        """``{name: shape list}``; slice keys hidden, partitioned tensors with their full shape."""
        names, _, shapes = self._metadata()
        with _gc_paused():
            return dict(zip(names, map(list, shapes)))

    def get_variable_to_dtype_map(self) -> dict[str, DType]:
        """``{name: DType}`` (``DType`` prints like ``tf.float32``); slice keys hidden."""
        names, codes, _ = self._metadata()
        by_code = {code: DType(code) for code in set(codes)}  # immutable: shared between names
        return dict(zip(names, map(by_code.__getitem__, codes)))

    def keys(self) -> list[str]:
        """Tensor names in key order (slice keys hidden)."""
        return list(self._metadata()[0])

    def __contains__(self, name: str) -> bool:
        return self.has_tensor(name)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._metadata()[0])

    def debug_string(self) -> bytes:
        """TensorFlow's ``debug_string()``, byte for byte: one ``NAME (DT_X) [d0,d1]`` line per
        stored entry in key order; raw slice keys listed, partitioned tensors' entries omitted."""
        with _gc_paused():
            entries = self._bundle.debug_entries()
        by_code: dict[int, bytes] = {}
        lines = []
        for key, code, shape in entries:
            name = by_code.get(code)
            if name is None:
                name = by_code[code] = b" (" + _dtypes.name_of(code).encode() + b") "
            lines.append(key + name + _shape_debug_string(shape) + b"\n")
        return b"".join(lines)

    # ------------------------------------------------------------------ inspection

    def dtype(self, name: str) -> DType:
        """The stored dtype of ``name``."""
        return DType(self._bundle.dtype_code(name))

    def shape(self, name: str) -> tuple[int, ...]:
        """The full shape of ``name``."""
        return self._bundle.shape(name)

    def tensor_infos(self) -> list[_inspect.TensorSummary]:
        """Index-only facts per tensor: shape, dtype, stored bytes, slices, data shards."""
        out = []
        for info in self._tensor_infos():
            entry = info.entry
            dtype = DType(info.dtype_code)
            count = int(np.prod(info.shape, dtype=np.int64))
            slices: tuple = ()
            if info.is_sliced:
                shards, nbytes = set(), 0
                key = info.name.encode("utf-8", "surrogateescape")
                resolved = []
                for proto in entry.slices:
                    try:
                        extents = slice_from_proto(proto)
                    except SliceError:
                        continue
                    resolved.append(resolve_extents(info.shape, extents))
                    try:
                        part = self._bundle.info(encode_slice_key(key, extents))
                    except NotFoundError:
                        continue
                    shards.add(part.entry.shard_id)
                    nbytes += part.entry.size
                slices = tuple(resolved)
                shard_ids = tuple(sorted(shards))
            else:
                shard_ids = (entry.shard_id,)
                nbytes = entry.size
            out.append(
                _inspect.TensorSummary(
                    name=info.name,
                    shape=tuple(info.shape),
                    dtype=dtype.name,
                    num_elements=count,
                    nbytes=nbytes,
                    slices=slices,
                    shards=shard_ids,
                )
            )
        return out

    def meta_tree(self) -> dict | None:
        """The tree description a jaxsaver ``Saver`` stored in ``PREFIX.meta``, if any."""
        store, key = resolve(self._path, self._storage)
        meta_key = key + ".meta"
        try:
            if not store.exists(meta_key):
                return None
            meta = meta_graph_pb2.MetaGraphDef()
            meta.ParseFromString(store.read(meta_key))
        except Exception:  # a foreign or unreadable .meta only loses the stored structure
            return None
        return _inspect.tree_description(meta)

    def tree(self, *, use_meta: bool = True) -> _inspect.TreeNode:
        """The tensors regrouped into their nested structure (from ``.meta`` when present).

        Each leaf carries shape, dtype, stored size, slices and data shards; groups carry totals.
        Reads only the index (and the ``.meta`` file).
        """
        description = self.meta_tree() if use_meta else None
        return _inspect.build_tree(self.tensor_infos(), description, title=self._path)

    def stats(self, name: str, *, chunk_bytes: int = 16 << 20) -> _inspect.TensorStats:
        """min / max / mean / std and NaN / Inf counts of one tensor, read in chunks of rows."""
        return _inspect.tensor_stats(self, name, chunk_bytes=chunk_bytes)

    def __repr__(self) -> str:
        return _inspect.tree_text(self.tree())

    def _repr_html_(self) -> str:
        return _inspect.tree_html(self.tree())


def _checkpoint_filename(dir_or_prefix: Any, storage: Any) -> str:
    path = os.fspath(dir_or_prefix.decode() if isinstance(dir_or_prefix, bytes) else dir_or_prefix)
    store, key = resolve(path, storage)
    try:
        is_dir = store.isdir(key)
    except Exception:
        is_dir = False
    if is_dir:
        latest = latest_checkpoint(path, storage=storage)
        if latest is None:
            raise CheckpointNotFoundError(
                f"Couldn't find 'checkpoint' file or checkpoints in given directory {path}"
            )
        return latest
    return path


def load_checkpoint(ckpt_dir_or_file: PathLike, *, storage: Any = None) -> CheckpointReader:
    """A :class:`CheckpointReader` for a prefix, or for the latest checkpoint of a directory.

    Raises:
        CheckpointNotFoundError: the directory has no ``checkpoint`` file naming an existing
            checkpoint, or the prefix does not exist.
    """
    return CheckpointReader(_checkpoint_filename(ckpt_dir_or_file, storage), storage=storage)


def list_variables(ckpt_dir_or_file: PathLike, *, storage: Any = None) -> list[tuple[str, list[int]]]:
    """Sorted ``(name, shape)`` of every tensor; reads only the index."""
    with load_checkpoint(ckpt_dir_or_file, storage=storage) as reader:
        names, _, shapes = reader._metadata()
        with _gc_paused():
            return sorted(zip(names, map(list, shapes)))  # names are unique: sorted by name


def load_variable(ckpt_dir_or_file: PathLike, name: str, *, storage: Any = None) -> Any:
    """One tensor's value (``name`` may end in ``:0``, as a graph tensor name does)."""
    if name.endswith(":0"):
        name = name[:-2]
    with load_checkpoint(ckpt_dir_or_file, storage=storage) as reader:
        return reader.get_tensor(name)


def diff(a: Any, b: Any, *, storage: Any = None, chunk_bytes: int = 16 << 20) -> _inspect.DiffResult:
    """Compares two checkpoints (readers, prefixes or directories) tensor by tensor."""
    ra = a if isinstance(a, CheckpointReader) else load_checkpoint(a, storage=storage)
    rb = b if isinstance(b, CheckpointReader) else load_checkpoint(b, storage=storage)
    try:
        return _inspect.diff_readers(ra, rb, chunk_bytes=chunk_bytes)
    finally:
        if ra is not a:
            ra.close()
        if rb is not b:
            rb.close()

