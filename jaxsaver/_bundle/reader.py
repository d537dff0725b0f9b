"""``BundleReader``: lazy, checksum-verified reads of tensors and slices from a tensor bundle."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxsaver._proto import tensor_bundle_pb2, types_pb2
from jaxsaver._bundle.layout import check_stored_slices, covering_pieces, piece_indices, plan_part
from jaxsaver._bundle.metadata import TensorInfo as TensorInfo
from jaxsaver._bundle.metadata import decode_key, decode_keys, drop_hidden, hidden_keys, scan_entries, shape_problem
from jaxsaver._errors import CheckpointNotFoundError, DataLossError, InvalidArgumentError, NotFoundError
from jaxsaver._errors import UnimplementedError
from jaxsaver._format import dtypes
from jaxsaver._format.crc import extend, mask
from jaxsaver._format.names import display_key, encode_name
from jaxsaver._format.slices import Extent, SliceError, encode_slice_key, extents_of, format_extents
from jaxsaver._format.slices import resolve_extents, slice_from_index, slice_from_proto
from jaxsaver._format.table import TableError, TableReader
from jaxsaver._format.tensors import CHUNK_BYTES, HEADER_KEY, TensorError, data_filename, decode_strings, num_elements
from jaxsaver._store import PositionalFile, Store, resolve

__all__ = ["BundleReader", "TensorInfo"]

_READ_AHEAD_THREADS = 8
_READ_AHEAD_CHUNKS = 1


class BundleReader:
    """Reads a tensor bundle lazily; only the index is read when it is opened.

    Full reads verify the stored CRC32C; partial reads (``get_slice`` of part of a stored
    tensor) read only the bytes they need and therefore cannot verify it.

    Args:
        prefix: the checkpoint prefix (not ``prefix.index``), a local path or URL.
        storage: optional storage override.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from jaxsaver import BundleWriter
        >>> prefix = os.path.join(tempfile.mkdtemp(), "model")
        >>> with BundleWriter(prefix) as w:
        ...     w.add("w", np.arange(6, dtype=np.int32).reshape(2, 3))
        >>> with BundleReader(prefix) as r:
        ...     r.keys(), r.shape("w"), r.get_slice("w", (slice(None), 1)).tolist()
        (['w'], (2, 3), [1, 4])
    """

    def __init__(self, prefix: Any, *, storage: Any = None) -> None:
        self._store, self._prefix = resolve(prefix, storage)
        self._index_key = f"{self._prefix}.index"
        self._files: dict[int, PositionalFile] = {}
        self._sizes: dict[int, int] = {}
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        try:
            data = self._store.read(self._index_key)
        except CheckpointNotFoundError:
            raise CheckpointNotFoundError(self._missing_message()) from None
        try:
            self._table = TableReader(data)
            header_bytes = self._table.get(HEADER_KEY)
        except TableError as err:
            raise DataLossError(f"{self._url(self._index_key)}: corrupt index: {err}") from None
        if header_bytes is None:
            raise DataLossError(f"{self._url(self._index_key)}: corrupt index: no bundle header")
        header = tensor_bundle_pb2.BundleHeaderProto()
        try:
            header.ParseFromString(header_bytes)
        except Exception:
            raise DataLossError(f"{self._url(self._index_key)}: corrupt bundle header") from None
        if header.num_shards < 1:
            raise DataLossError(f"{self._url(self._index_key)}: bad num_shards {header.num_shards} in header")
        if header.endianness not in (0, 1):
            raise DataLossError(f"{self._url(self._index_key)}: bad endianness {header.endianness} in header")
        version = header.version
        if version.min_consumer > 1 or 1 in version.bad_consumers:
            raise UnimplementedError(
                f"{self._url(self._index_key)}: checkpoint format version {version.producer} "
                f"(min consumer {version.min_consumer}) is newer than this reader supports"
            )
        self.num_shards = header.num_shards
        self.big_endian = header.endianness == 1
        self._entries: dict[bytes, tensor_bundle_pb2.BundleEntryProto] = {}
        # TensorInfo per requested name: a restore asks for a tensor's shape, dtype and entry
        # several times (check, plan, read); building the info once keeps that per-tensor cost
        # out of restores of many small tensors.
        self._infos: dict[str | bytes, TensorInfo] = {}

    # ------------------------------------------------------------------ lifecycle

    def _url(self, key: str) -> str:
        return self._store.url(key)

    def _missing_message(self) -> str:
        url = self._url(self._prefix)
        if self._prefix.endswith(".index"):
            return (
                f"{url}: not found. Pass the checkpoint prefix without '.index', "
                f"e.g. {self._url(self._prefix[: -len('.index')])!r}"
            )
        if self._store.exists(self._prefix):
            return f"{url} is a file but not a V2 checkpoint prefix: V1 checkpoints are not supported"
        return f"Unsuccessful TensorSliceReader constructor: Failed to find any matching files for {url}"

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _prefetcher(self) -> concurrent.futures.ThreadPoolExecutor:
        """Helper threads that read ahead of the checksum (one in flight per tensor being read)."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(_READ_AHEAD_THREADS, thread_name_prefix="jaxsaver-read")
            return self._pool

    def close(self) -> None:
        """Closes the data files kept open for reading."""
        with self._lock:
            pool, self._pool = self._pool, None
            for file in self._files.values():
                file.close()
            self._files.clear()
            self._closed = True
        if pool is not None:
            pool.shutdown(wait=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def store(self) -> Store:
        return self._store

    # ------------------------------------------------------------------ metadata

    def _entry(self, key: bytes) -> tensor_bundle_pb2.BundleEntryProto | None:
        entry = self._entries.get(key)
        if entry is None:
            try:
                value = self._table.get(key)
            except TableError as err:
                raise DataLossError(f"{self._url(self._index_key)}: corrupt index: {err}") from None
            if value is None:
                return None
            entry = self._parse_entry(key, value)
            self._entries[key] = entry
        return entry

    def _parse_entry(self, key: bytes, value: bytes) -> tensor_bundle_pb2.BundleEntryProto:
        entry = tensor_bundle_pb2.BundleEntryProto()
        try:
            entry.ParseFromString(value)
        except Exception:
            raise DataLossError(
                f"{self._url(self._index_key)}: corrupt entry for {display_key(key)!r}"
            ) from None
        problem = shape_problem(tuple(d.size for d in entry.shape.dim))
        if problem is not None:
            raise DataLossError(f"{self._url(self._index_key)}: entry {display_key(key)!r} {problem}")
        return entry

    def _cached_or_parsed(self, key: bytes, value: bytes) -> tensor_bundle_pb2.BundleEntryProto:
        entry = self._entries.get(key)
        return self._parse_entry(key, value) if entry is None else entry

    def _iter_entries(self) -> Iterator[tuple[bytes, tensor_bundle_pb2.BundleEntryProto]]:
        try:
            for key, value in self._table.items():
                if key == HEADER_KEY:
                    continue
                yield key, self._cached_or_parsed(key, value)
        except TableError as err:
            raise DataLossError(f"{self._url(self._index_key)}: corrupt index: {err}") from None

    def raw_keys(self) -> list[str]:
        """Every key in the index except the header, slice keys included (``debug_string`` order)."""
        return [decode_key(k) for k, _ in self._iter_entries()]

    def infos(self) -> Iterator[TensorInfo]:
        """A :class:`TensorInfo` per tensor; the keys of stored slices are hidden (as TF does:
        a key is hidden when a partitioned tensor's entry lists it)."""
        entries = list(self._iter_entries())
        hidden = hidden_keys(entries)
        for key, entry in entries:
            if key not in hidden:
                yield TensorInfo(decode_key(key), entry)

    def _scan(self) -> tuple[list[bytes], list[tuple[int, tuple[int, ...]]], dict[bytes, Any]]:
        """Every stored key (header excluded, slice keys included) with its ``(dtype, dims)``,
        and the entries that list slices; each entry checked as :meth:`_parse_entry` does.

        Reads entries without protobuf where it can (see :func:`~jaxsaver._bundle.metadata.scan_entries`):
        the metadata of a 100 000-tensor index in a fraction of the time building a proto per entry takes.
        """
        try:
            return scan_entries(self._table.blocks(), self._cached_or_parsed)
        except TableError as err:
            raise DataLossError(f"{self._url(self._index_key)}: corrupt index: {err}") from None

    def metadata_columns(self) -> tuple[list[str], list[int], list[tuple[int, ...]]]:
        """``(names, dtype codes, shapes)`` of every tensor in key order, as parallel lists;
        slice keys hidden (as :meth:`infos`), partitioned tensors with their full shape.

        Reads only the index, without building a proto per entry: the fast way to list a
        large checkpoint. :meth:`list_metadata` gives the same as tuples.
        """
        keys, metas = drop_hidden(*self._scan())
        dtype_codes = [dtype for dtype, _ in metas]
        shapes = [dims for _, dims in metas]
        return decode_keys(keys), dtype_codes, shapes

    def list_metadata(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """``(name, dtype code, shape)`` of every tensor in key order (see :meth:`metadata_columns`).

        Example:
            >>> import numpy as np, tempfile, os
            >>> from jaxsaver import BundleWriter
            >>> prefix = os.path.join(tempfile.mkdtemp(), "model")
            >>> with BundleWriter(prefix) as w:
            ...     w.add("w", np.zeros((2, 3), np.float32))
            >>> BundleReader(prefix).list_metadata()
            [('w', 1, (2, 3))]
        """
        return list(zip(*self.metadata_columns()))

    def debug_entries(self) -> list[tuple[bytes, int, tuple[int, ...]]]:
        """``(key, dtype code, shape)`` of every stored entry in key order, slice keys included
        and partitioned tensors' entries omitted (what TF's ``debug_string`` lists)."""
        keys, metas, sliced = self._scan()
        return [(key, dtype, dims) for key, (dtype, dims) in zip(keys, metas) if key not in sliced]

    def keys(self) -> list[str]:
        """Tensor names in key order (slice keys hidden)."""
        return [info.name for info in self.infos()]

    def __contains__(self, name: str | bytes) -> bool:
        return self.has_tensor(name)

    def has_tensor(self, name: str | bytes) -> bool:
        key = encode_name(name)
        return key != HEADER_KEY and self._entry(key) is not None

    def info(self, name: str | bytes) -> TensorInfo:
        info = self._infos.get(name)
        if info is not None:
            return info
        key = encode_name(name)
        entry = self._entry(key) if key != HEADER_KEY else None
        if entry is None:
            raise NotFoundError(f"Key {display_key(key)} not found in checkpoint")
        info = self._infos[name] = TensorInfo(decode_key(key), entry)
        return info

    def dtype(self, name: str | bytes) -> np.dtype:
        """The stored tensor's numpy dtype (object for DT_STRING)."""
        info = self.info(name)
        return self._numpy_dtype(info)

    def dtype_code(self, name: str | bytes) -> int:
        return self.info(name).dtype_code

    def shape(self, name: str | bytes) -> tuple[int, ...]:
        """The full tensor's shape (for sliced tensors too)."""
        return self.info(name).shape

    def _numpy_dtype(self, info: TensorInfo) -> np.dtype:
        code = info.dtype_code
        if code in (types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE):
            raise UnimplementedError(
                f"tensor {info.name!r} has dtype {dtypes.name_of(code)}, which jaxsaver cannot decode"
            )
        try:
            return dtypes.to_numpy(code)
        except dtypes.UnsupportedDtype:
            raise DataLossError(
                f"{self._url(self._index_key)}: tensor {info.name!r} has unknown dtype code {code}"
            ) from None

    # ------------------------------------------------------------------ data access

    def _data_key(self, shard_id: int) -> str:
        return data_filename(self._prefix, shard_id, self.num_shards)

    def _data_size(self, shard_id: int) -> int:
        size = self._sizes.get(shard_id)
        if size is None:
            key = self._data_key(shard_id)
            try:
                size = self._store.size(key)
            except CheckpointNotFoundError:
                raise CheckpointNotFoundError(
                    f"{self._url(key)}: data file of checkpoint {self._url(self._prefix)} is missing"
                ) from None
            self._sizes[shard_id] = size
        return size

    def _data_file(self, shard_id: int) -> PositionalFile:
        """The kept-open data file (stores with ``positional_reads``)."""
        with self._lock:
            if self._closed:
                raise InvalidArgumentError(f"reader for {self._url(self._prefix)} is closed")
            file = self._files.get(shard_id)
            if file is None:
                key = self._data_key(shard_id)
                try:
                    file = self._store.open_positional(key)
                except CheckpointNotFoundError:
                    raise CheckpointNotFoundError(f"{self._url(key)}: data file is missing") from None
                self._files[shard_id] = file
            return file

    def positional_data(self, name: str, entry: tensor_bundle_pb2.BundleEntryProto) -> PositionalFile:
        """The kept-open data file of an entry, its extent checked against the file.

        For readers that scatter one stored entry straight into several buffers (``readv``), on
        stores with ``capabilities.positional_reads``; the file stays owned by this reader.
        """
        if not self._store.capabilities.positional_reads:
            raise InvalidArgumentError(f"{self._url(self._prefix)}: the store has no positional reads")
        self._check_extent(name, entry)
        return self._data_file(entry.shard_id)

    def _read_into(self, shard_id: int, offset: int, out: memoryview) -> None:
        if not out.nbytes:
            return
        if self._store.capabilities.positional_reads:
            self._data_file(shard_id).read_into(offset, out)
        else:
            self._store.read_into(self._data_key(shard_id), offset, out)

    def _check_extent(self, name: str, entry: tensor_bundle_pb2.BundleEntryProto) -> None:
        if entry.shard_id < 0 or entry.shard_id >= self.num_shards:
            raise DataLossError(
                f"{self._url(self._index_key)}: tensor {name!r} is in shard {entry.shard_id}, "
                f"but the checkpoint has {self.num_shards}"
            )
        if entry.offset < 0 or entry.size < 0:
            raise DataLossError(f"{self._url(self._index_key)}: tensor {name!r} has a negative offset or size")
        file_size = self._data_size(entry.shard_id)
        if entry.offset + entry.size > file_size:
            raise DataLossError(
                f"{self._url(self._data_key(entry.shard_id))}: tensor {name!r} needs bytes "
                f"[{entry.offset}, {entry.offset + entry.size}) but the file has {file_size}: truncated"
            )

    def _expected_nbytes(self, name: str, entry: tensor_bundle_pb2.BundleEntryProto, dtype: np.dtype) -> int:
        shape = tuple(d.size for d in entry.shape.dim)
        nbytes = num_elements(shape) * dtype.itemsize
        if entry.size != nbytes:
            raise DataLossError(
                f"{self._url(self._index_key)}: Invalid size in bundle entry: key {name!r}; stored size "
                f"{entry.size}; expected size {nbytes}"
            )
        return nbytes

    def _host_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype.newbyteorder(">") if self.big_endian and dtype.itemsize > 1 else dtype

    def _read_whole(self, name: str, entry: tensor_bundle_pb2.BundleEntryProto, dtype: np.dtype,
                    out: np.ndarray | None = None) -> np.ndarray:
        """Reads and CRC-checks one stored (unsliced) entry."""
        shape = tuple(d.size for d in entry.shape.dim)
        self._check_extent(name, entry)
        if entry.dtype == types_pb2.DT_STRING:
            raw = np.empty(entry.size, dtype=np.uint8)
            self._read_into(entry.shard_id, entry.offset, memoryview(raw))
            try:
                array, crc = decode_strings(raw.tobytes(), shape, self.big_endian)
            except TensorError as err:
                raise DataLossError(
                    f"{self._url(self._data_key(entry.shard_id))}: checksum does not match for "
                    f"tensor {name!r}: {err}"
                ) from None
            self._check_crc(name, entry, crc)
            if out is not None:
                out[...] = array
                return out
            return array
        self._expected_nbytes(name, entry, dtype)
        if out is None:
            out = np.empty(shape, dtype=self._host_dtype(dtype))
        # Read straight into the output in pieces. While one piece is checksummed (in the CPU
        # cache still), the next is already being read by a helper thread: the read releases the
        # GIL, so disk and checksum overlap.
        flat = out.reshape(-1).view(np.uint8)
        chunks = [flat[start : start + CHUNK_BYTES] for start in range(0, flat.nbytes, CHUNK_BYTES)]

        def read(k: int) -> None:
            self._read_into(entry.shard_id, entry.offset + k * CHUNK_BYTES, memoryview(chunks[k]))

        running = 0
        if len(chunks) <= 1:
            for k in range(len(chunks)):
                read(k)
                running = extend(running, chunks[k])
        else:
            pool = self._prefetcher()
            pending = [pool.submit(read, k) for k in range(min(_READ_AHEAD_CHUNKS, len(chunks)))]
            for k in range(len(chunks)):
                pending.pop(0).result()
                if k + _READ_AHEAD_CHUNKS < len(chunks):
                    pending.append(pool.submit(read, k + _READ_AHEAD_CHUNKS))
                running = extend(running, chunks[k])
        self._check_crc(name, entry, mask(running))
        if self.big_endian and dtype.itemsize > 1:
            out = out.astype(dtype)
        return out

    def _check_crc(self, name: str, entry: tensor_bundle_pb2.BundleEntryProto, actual: int) -> None:
        if actual != entry.crc32c:
            raise DataLossError(
                f"{self._url(self._data_key(entry.shard_id))}: checksum does not match for tensor "
                f"{name!r}: stored {entry.crc32c:#010x}, calculated {actual:#010x}"
            )

    def _read_part(self, name: str, entry: tensor_bundle_pb2.BundleEntryProto, dtype: np.dtype,
                   stored_shape: tuple[int, ...], part: tuple[Extent, ...]) -> np.ndarray:
        """Reads ``part`` (resolved extents relative to the stored entry) without the CRC check."""
        if all(start == 0 and length == dim for (start, length), dim in zip(part, stored_shape)):
            return self._read_whole(name, entry, dtype)
        if entry.dtype == types_pb2.DT_STRING:
            whole = self._read_whole(name, entry, dtype)
            return whole[tuple(slice(s, s + n) for s, n in part)]
        self._check_extent(name, entry)
        self._expected_nbytes(name, entry, dtype)
        hdtype = self._host_dtype(dtype)
        itemsize = dtype.itemsize
        out = np.empty(tuple(n for _, n in part), dtype=hdtype)
        if out.size == 0:
            return out.astype(dtype)
        plan = plan_part(stored_shape, part, itemsize)
        if plan is None:
            return self._read_whole(name, entry, dtype)
        if plan.span is not None:
            # One read of the bounding range, then a strided copy.
            first, last = plan.span
            span = np.empty(last - first, dtype=np.uint8)
            self._read_into(entry.shard_id, entry.offset + first, memoryview(span))
            view = np.lib.stride_tricks.as_strided(
                span.view(hdtype) if span.size % itemsize == 0 else span[: span.size - span.size % itemsize].view(hdtype),
                shape=tuple(n for _, n in part),
                strides=plan.strides,
            )
            out[...] = view
        else:
            flat = out.reshape(-1).view(np.uint8)
            run_bytes = plan.run_bytes
            for pos, offset in zip(range(0, len(plan.runs) * run_bytes, run_bytes), plan.runs):
                self._read_into(entry.shard_id, entry.offset + offset, memoryview(flat[pos : pos + run_bytes]))
        return out.astype(dtype) if hdtype != dtype else out

    def _resolve_request(self, info: TensorInfo, spec: Any) -> tuple[tuple[Extent, ...], tuple[int, ...]]:
        try:
            if isinstance(spec, str):
                extents = extents_of(info.shape, spec)
                squeeze: tuple[int, ...] = ()
            elif isinstance(spec, tuple) and spec and all(
                isinstance(e, tuple) and len(e) == 2 for e in spec
            ) and len(spec) == len(info.shape):
                extents, squeeze = extents_of(info.shape, spec), ()
            else:
                extents, squeeze = slice_from_index(info.shape, spec)
        except SliceError as err:
            raise InvalidArgumentError(f"tensor {info.name!r}: {err}") from None
        return resolve_extents(info.shape, extents), squeeze

    def get_tensor(self, name: str | bytes) -> np.ndarray:
        """The whole tensor, CRC-checked (sliced tensors are reassembled)."""
        info = self.info(name)
        dtype = self._numpy_dtype(info)
        if info.is_sliced:
            return self._assemble(info, dtype, resolve_extents(info.shape, [(0, -1)] * len(info.shape)))
        return self._read_whole(info.name, info.entry, dtype)

    def read_into(self, name: str | bytes, out: np.ndarray) -> np.ndarray:
        """Reads the whole tensor into a preallocated, C-contiguous array of its shape and dtype."""
        info = self.info(name)
        dtype = self._numpy_dtype(info)
        if tuple(out.shape) != info.shape or out.dtype != dtype or not out.flags.c_contiguous:
            raise InvalidArgumentError(
                f"tensor {info.name!r}: read_into needs a C-contiguous {dtype} array of shape {info.shape}, "
                f"got {out.dtype} {tuple(out.shape)}"
            )
        if info.is_sliced or self.big_endian or dtype.kind == "O":
            out[...] = self.get_tensor(name)
            return out
        return self._read_whole(info.name, info.entry, dtype, out=out)

    def get_slice(self, name: str | bytes, spec: Any) -> np.ndarray:
        """Part of a tensor: a TF slice string (``"4 6 0,2:-"`` or ``"0,2:-"``) or a numpy index.

        Only the bytes the request needs are read.
        """
        info = self.info(name)
        dtype = self._numpy_dtype(info)
        extents, squeeze = self._resolve_request(info, spec)
        if info.is_sliced:
            result = self._assemble(info, dtype, extents)
        else:
            result = self._read_part(info.name, info.entry, dtype, info.shape, extents)
        return result.squeeze(axis=squeeze) if squeeze else result

    def stored_slices(self, name: str | bytes) -> list[tuple[Extent, ...]]:
        """The slices a partitioned tensor is stored as (resolved); one full slice otherwise."""
        info = self.info(name)
        if not info.is_sliced:
            return [tuple((0, d) for d in info.shape)]
        return [resolve_extents(info.shape, slice_from_proto(s)) for s in info.entry.slices]

    def _assemble(self, info: TensorInfo, dtype: np.dtype, request: tuple[Extent, ...]) -> np.ndarray:
        key = encode_name(info.name)
        try:
            stored = check_stored_slices(info.shape, info.entry.slices)
        except SliceError as err:
            raise DataLossError(f"{self._url(self._index_key)}: tensor {info.name!r}: {err}") from None
        pieces, complete = covering_pieces(info.shape, stored, request)
        if not complete:
            raise InvalidArgumentError(
                f"tensor {info.name!r}: Does not have sufficient slices for partitioned tensor: "
                f"requested {format_extents(request)} of shape {info.shape}"
            )
        # Check every piece against its entry and the data file before allocating the output,
        # so the full shape claimed by a corrupt index never sizes an allocation on its own.
        checked = []
        for extents, resolved, overlap in pieces:
            slice_key = encode_slice_key(key, extents)
            entry = self._entry(slice_key)
            if entry is None:
                raise DataLossError(
                    f"{self._url(self._index_key)}: tensor {info.name!r}: slice "
                    f"{format_extents(extents)} is listed but has no entry"
                )
            stored_shape = tuple(d.size for d in entry.shape.dim)
            if stored_shape != tuple(n for _, n in resolved) or entry.dtype != info.dtype_code:
                raise DataLossError(
                    f"{self._url(self._index_key)}: tensor {info.name!r}: slice {format_extents(extents)} "
                    f"entry has shape {stored_shape}, expected {tuple(n for _, n in resolved)}"
                )
            self._check_extent(info.name, entry)
            if entry.dtype == types_pb2.DT_STRING:
                if num_elements(stored_shape) > entry.size:
                    raise DataLossError(
                        f"{self._url(self._index_key)}: tensor {info.name!r}: slice "
                        f"{format_extents(extents)} has {num_elements(stored_shape)} strings in "
                        f"{entry.size} bytes"
                    )
            else:
                self._expected_nbytes(info.name, entry, dtype)
            checked.append((entry, stored_shape, resolved, overlap))
        out = np.empty(tuple(n for _, n in request), dtype=dtype)
        for entry, stored_shape, resolved, overlap in checked:
            local, target = piece_indices(resolved, overlap, request)
            out[target] = self._read_part(info.name, entry, dtype, stored_shape, local)
        return out

    def verify(self, *, progress: Any = None) -> list[tuple[str, str]]:
        """Reads every stored entry with its checksum; returns ``(key, problem)`` for each bad one.

        ``progress``: None, True (a tqdm bar over 64 MiB) or a callable taking a
        :class:`jaxsaver.ProgressEvent` (operation ``"verify"``), counting stored entries.
        """
        from jaxsaver._progress import Tracker

        entries = [(key, entry) for key, entry in self._iter_entries() if not entry.slices]
        tracker = Tracker.of(
            progress, operation="verify", checkpoint=self._url(self._prefix),
            bytes_total=sum(max(entry.size, 0) for _, entry in entries), tensors_total=len(entries),
        )
        problems = []
        for key, entry in entries:
            name = decode_key(key)
            try:
                info = TensorInfo(name, entry)
                dtype = self._numpy_dtype(info)
                self._read_whole(name, entry, dtype)
            except (DataLossError, CheckpointNotFoundError, UnimplementedError) as err:
                problems.append((name, str(err)))
            if tracker is not None:
                tracker.advance(max(entry.size, 0), tensors=1)
        if tracker is not None:
            tracker.finish()
        return problems
