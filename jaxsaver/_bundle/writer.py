"""``BundleWriter``: one ``.index`` and one ``.data-00000-of-00001``, byte-identical to SaveV2."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxsaver._proto import tensor_bundle_pb2
from jaxsaver._errors import InvalidArgumentError, UnimplementedError
from jaxsaver._format import dtypes
from jaxsaver._format.crc import extend, mask
from jaxsaver._format.slices import (
    Extent,
    SliceError,
    covers_all,
    encode_slice_key,
    extents_of,
    format_extents,
    slice_shape,
    slice_to_proto,
)
from jaxsaver._format.table import TableBuilder
from jaxsaver._format.names import display_key, encode_name
from jaxsaver._format.tensors import CHUNK_BYTES, HEADER_KEY, TensorError, data_filename, encode_strings, make_header
from jaxsaver._store import resolve

# Tensors smaller than this are gathered into one buffer and written together once it holds
# _COALESCE_BYTES (a write call per 4 KiB tensor dominated saves of many small tensors).
_SMALL_BYTES = 64 << 10
_COALESCE_BYTES = 1 << 20

__all__ = ["BundleWriter", "PartIndex"]

def _shape_proto(entry: tensor_bundle_pb2.BundleEntryProto, shape: Sequence[int]) -> None:
    entry.shape.SetInParent()
    for d in shape:
        entry.shape.dim.add().size = int(d)


def _to_host_array(array: Any) -> np.ndarray:
    if isinstance(array, (str, bytes)):
        return np.array(array, dtype=object)
    arr = np.asarray(array)
    if arr.dtype.kind in "SU":
        arr = arr.astype(object)
    elif not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # TF stores host (little-endian) order
    return arr


@dataclass(frozen=True, slots=True, kw_only=True)
class PartIndex:
    """One single-writer bundle's index, parsed: what a merge needs of it."""

    #: The part's prefix (a key in the merge's store).
    prefix: str
    #: Its bundle header.
    header: tensor_bundle_pb2.BundleHeaderProto
    #: ``(key, entry)`` pairs in key order, the header excluded.
    entries: tuple[tuple[bytes, tensor_bundle_pb2.BundleEntryProto], ...]
    #: Where its single data file is, if not at ``prefix.data-00000-of-00001``.
    data_key: str | None = None

    def data_key_of(self, shard_id: int) -> str:
        """The key of the part's data file holding ``shard_id``."""
        if self.data_key is not None and self.header.num_shards == 1:
            return self.data_key
        return data_filename(self.prefix, shard_id, self.header.num_shards)


class BundleWriter:
    """Writes a tensor bundle: ``prefix.index`` and ``prefix.data-00000-of-00001``.

    Data is streamed to a temporary file in add order; :meth:`finish` fsyncs it and renames both
    files into place, the index last, so a visible index always describes complete data.

    Args:
        prefix: the checkpoint prefix (local path or URL).
        storage: optional storage override (see :func:`jaxsaver._store.resolve`).

    Example:
        >>> import numpy as np, tempfile, os
        >>> prefix = os.path.join(tempfile.mkdtemp(), "model")
        >>> with BundleWriter(prefix) as writer:
        ...     writer.add("w", np.arange(3, dtype=np.float32))
        >>> sorted(os.listdir(os.path.dirname(prefix)))
        ['model.data-00000-of-00001', 'model.index']
    """

    def __init__(self, prefix: Any, *, storage: Any = None, data_path: Any = None) -> None:
        self._store, self._prefix = resolve(prefix, storage)
        # data_path: where the data object goes instead of prefix.data-00000-of-00001 (object
        # stores name it at write time so that merge_bundles needs no copy); same store.
        self._data_key = data_filename(self._prefix, 0, 1) if data_path is None else resolve(data_path, storage)[1]
        self._store.make_dir(self._store.dirname(self._prefix))  # one level, as TF's writer does
        self._data = self._store.open_writer(self._data_key)
        self._pending = bytearray()
        self._offset = 0
        self._entries: dict[bytes, tensor_bundle_pb2.BundleEntryProto] = {}
        self._full_entries: dict[bytes, tuple[int, tuple[int, ...]]] = {}
        self._finished = False

    @property
    def prefix(self) -> str:
        return self._prefix

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def _fail(self, message: str) -> None:
        self.abort()
        raise InvalidArgumentError(message)

    def _check_open(self) -> None:
        if self._finished:
            raise InvalidArgumentError(f"BundleWriter for {self._store.url(self._prefix)} is already finished")

    def _write(self, key: bytes, array: np.ndarray) -> tensor_bundle_pb2.BundleEntryProto:
        try:
            code = dtypes.from_numpy(array.dtype)
        except dtypes.UnsupportedDtype as err:
            self.abort()
            raise UnimplementedError(f"tensor {display_key(key)!r}: {err}") from None
        entry = tensor_bundle_pb2.BundleEntryProto(dtype=code)
        _shape_proto(entry, array.shape)
        entry.offset = self._offset
        if code == dtypes.types_pb2.DT_STRING:
            try:
                chunks, crc, size = encode_strings(array)
            except TensorError as err:
                self.abort()
                raise InvalidArgumentError(f"tensor {display_key(key)!r}: {err}") from None
            for chunk in chunks:
                self._emit(chunk)
        else:
            # Written straight from the array's memory; each chunk's CRC is computed right after
            # its write, while the chunk is still in the CPU cache.
            array = np.ascontiguousarray(array)
            buffer = array.reshape(-1).view(np.uint8)
            size = buffer.nbytes
            running = 0
            for start in range(0, size, CHUNK_BYTES):
                chunk = buffer[start : start + CHUNK_BYTES]
                self._emit(chunk)
                running = extend(running, chunk)
            crc = mask(running)
        entry.size = size
        entry.crc32c = crc
        self._offset += size
        return entry

    def _emit(self, chunk: Any) -> None:
        """Appends bytes to the data file, small ones through a buffer (order is kept)."""
        nbytes = memoryview(chunk).nbytes
        if nbytes < _SMALL_BYTES:
            self._pending += memoryview(chunk).cast("B")
            if len(self._pending) >= _COALESCE_BYTES:
                self._flush()
            return
        self._flush()
        self._data.write(chunk)

    def _flush(self) -> None:
        if self._pending:
            self._data.write(self._pending)
            self._pending = bytearray()

    def add(self, name: str | bytes, array: Any) -> None:
        """Adds a whole tensor (numpy array, scalar, bytes/str or object array of bytes)."""
        self._check_open()
        key = encode_name(name)
        if key == HEADER_KEY:
            self._fail("tensor name must not be empty: the empty key holds the bundle header")
        if key in self._entries or key in self._full_entries:
            self._fail(f"Adding duplicate key: {display_key(key)!r}")
        self._entries[key] = self._write(key, _to_host_array(array))

    def add_slice(
        self,
        name: str | bytes,
        full_shape: Sequence[int],
        slice_spec: str | tuple | Sequence[Extent],
        array: Any,
    ) -> None:
        """Adds one slice of a partitioned tensor.

        Args:
            name: the full tensor's name.
            full_shape: the full tensor's shape.
            slice_spec: TF slice syntax (``"0,2:-"``, or the complete ``"4 6 0,2:-"``), a numpy
                index tuple (``(slice(0, 2), slice(None))``), or ``((start, length), ...)``.
            array: the slice's values; its shape must equal the slice's shape.
        """
        self._check_open()
        key = encode_name(name)
        if key == HEADER_KEY:
            self._fail("tensor name must not be empty: the empty key holds the bundle header")
        full_shape = tuple(int(d) for d in full_shape)
        try:
            extents = extents_of(full_shape, slice_spec)
        except SliceError as err:
            self._fail(f"tensor {display_key(key)!r}: {err}")
        arr = _to_host_array(array)
        expected = slice_shape(full_shape, extents)
        if tuple(arr.shape) != expected:
            self._fail(
                f"tensor {display_key(key)!r}: slice shape {expected} does not match the value's shape {tuple(arr.shape)}"
            )
        if covers_all(full_shape, extents):
            self.add(key, arr)
            return
        if key in self._entries and key not in self._full_entries:
            self._fail(f"Adding duplicate key: {display_key(key)!r}")
        try:
            code = dtypes.from_numpy(arr.dtype) if arr.dtype.kind != "O" else dtypes.types_pb2.DT_STRING
        except dtypes.UnsupportedDtype as err:
            self.abort()
            raise UnimplementedError(f"tensor {display_key(key)!r}: {err}") from None
        full = self._entries.get(key)
        if full is None:
            full = tensor_bundle_pb2.BundleEntryProto(dtype=code)
            _shape_proto(full, full_shape)
            self._entries[key] = full
            self._full_entries[key] = (code, full_shape)
        elif self._full_entries[key] != (code, full_shape):
            self._fail(
                f"tensor {display_key(key)!r}: slice has dtype {dtypes.name_of(code)} and full shape "
                f"{full_shape}, earlier slices had {dtypes.name_of(self._full_entries[key][0])} and "
                f"{self._full_entries[key][1]}"
            )
        slice_key = encode_slice_key(key, extents)
        if slice_key in self._entries:
            self._fail(f"Adding duplicate slice of {display_key(key)!r}: {format_extents(extents)}")
        full.slices.append(slice_to_proto(extents))
        self._entries[slice_key] = self._write(key, arr)

    def abort(self) -> None:
        """Discards everything; no file is left behind."""
        if not self._finished:
            self._finished = True
            self._pending = bytearray()
            self._data.abort()

    def finish(self, *, write_index: bool = True) -> PartIndex:
        """Commits the data file, then the index (the index's appearance is the commit).

        Args:
            write_index: False for a part of a save merged in this process: only the data is
                committed, and the merge writes one index from the returned entries (no part
                index is written and read back).

        Returns:
            The bundle's header and entries, as a merge takes them.
        """
        self._check_open()
        self._finished = True
        header = make_header(1)
        entries = tuple((key, self._entries[key]) for key in sorted(self._entries))
        part = PartIndex(prefix=self._prefix, header=header, entries=entries, data_key=self._data_key)
        try:
            self._flush()
            self._data.commit()
            if write_index:
                builder = TableBuilder()
                builder.add(HEADER_KEY, header.SerializeToString())
                for key, entry in entries:
                    builder.add(key, entry.SerializeToString())
                self._store.write(f"{self._prefix}.index", builder.finish())
        except BaseException:
            self._data.abort()
            self._store.delete(self._data_key)
            raise
        if write_index and self._store.capabilities.directory_sync:
            self._store.sync_dir(self._store.dirname(self._prefix))
        return part
