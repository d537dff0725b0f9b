"""Reads the blocks of a sharded restore target straight from the stored slices that cover them.

Every stored slice (or unsliced tensor) that some target block needs is read at most once:

* a stored slice that equals a target block is read into that block's buffer (CRC-checked);
* a stored slice wholly used by several blocks (resharding) is read, on stores with positional
  reads, with one ranged ``readv`` (``preadv`` on local disk) scattered directly into the
  blocks, and its CRC checked over the pieces in file order;
* a stored slice only partly needed reads just the bytes it contributes (``get_slice``).

Blocks are filled by independent tasks (one per stored slice) that write disjoint regions, so
they can run concurrently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxsaver._proto import types_pb2
from jaxsaver._bundle.reader import BundleReader
from jaxsaver._errors import DataLossError, InvalidArgumentError
from jaxsaver._format.crc import mask
from jaxsaver._format.names import encode_name
from jaxsaver._format.tensors import CHUNK_BYTES
from jaxsaver._format.slices import Extent, encode_slice_key, resolve_extents, slice_from_proto
from jaxsaver._sharding import SliceRead, plan_reads, scatter_runs

__all__ = ["BlockReads", "aligned_empty"]

# preadv takes at most IOV_MAX buffers per call.
_IOV_MAX = 1024
# Below this average run size a whole read plus numpy copies beats a scatter list.
_MIN_SCATTER_RUN = 4096
# Block buffers start on this boundary: XLA's CPU client then adopts a numpy buffer as the
# device buffer without copying it (``jax.device_put`` is zero-copy for 64-byte-aligned arrays),
# and page alignment keeps every preadv target page-aligned.
_ALIGN = 4096
# Arrays under this size are allocated plainly (their device_put copy is cheap).
_SMALL_BYTES = 64 << 10


def aligned_empty(shape: Sequence[int], dtype: Any) -> np.ndarray:
    """``np.empty`` whose data starts on a page boundary (numpy's large buffers start 16 bytes in).

    On CPU devices ``jax.device_put`` of such an array aliases it instead of copying it, so a
    restored block lands on its device(s) with no second copy (a replicated block is shared by all
    of its devices; XLA never writes into an adopted buffer, donation copies it). Arrays under
    64 KiB are allocated plainly: copying them costs less than aligning them.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if dtype.kind == "O" or nbytes < _SMALL_BYTES:  # a copy of a small array costs less than aligning it
        return np.empty(shape, dtype=dtype)
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % _ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _rel(extents: Sequence[Extent], origin: Sequence[Extent]) -> tuple[slice, ...]:
    return tuple(slice(s - o, s - o + n) for (s, n), (o, _) in zip(extents, origin))


class BlockReads:
    """The distinct blocks of one tensor's target sharding, and the tasks that fill them."""

    def __init__(self, reader: BundleReader, name: str, blocks: Sequence[tuple[Extent, ...]],
                 devices: Sequence[Any] | None = None) -> None:
        self.reader = reader
        #: Per block, the devices that hold it (carried through for the caller).
        self.devices = list(devices) if devices is not None else [None] * len(blocks)
        self.name = name
        self.blocks = list(blocks)
        info = reader.info(name)
        self.dtype = reader.dtype(name)
        self.outs = [aligned_empty(tuple(n for _, n in b), self.dtype) for b in self.blocks]
        shape = info.shape
        if info.is_sliced:
            stored = []
            for proto in info.entry.slices:
                extents = slice_from_proto(proto)
                stored.append((extents, resolve_extents(shape, extents)))
        else:
            stored = [(None, tuple((0, d) for d in shape))]
        try:
            self.reads = plan_reads(name, stored, self.blocks)
        except ValueError as err:
            raise InvalidArgumentError(str(err)) from None
        self._key = encode_name(name)
        self._fast = (
            reader.store.capabilities.positional_reads
            and not reader.big_endian
            and info.dtype_code != types_pb2.DT_STRING
            and self.dtype.kind != "O"
        )

    def tasks(self) -> list[Callable[[], None]]:
        return [lambda read=read: self._run(read) for read in self.reads]

    # ------------------------------------------------------------------ one stored slice

    def _entry_key(self, read: SliceRead) -> bytes:
        return self._key if read.key_extents is None else encode_slice_key(self._key, read.key_extents)

    def _run(self, read: SliceRead) -> None:
        if not read.complete:
            for b, overlap in read.pieces:
                self.outs[b][_rel(overlap, self.blocks[b])] = self.reader.get_slice(self.name, overlap)
            return
        key = self._entry_key(read)
        if len(read.pieces) == 1 and read.pieces[0][1] == self.blocks[read.pieces[0][0]]:
            # The stored slice is the block: read it in place, CRC-checked.
            self.reader.read_into(key, self.outs[read.pieces[0][0]])
            return
        if self._fast:
            runs = scatter_runs(self.dtype.itemsize, read, self.blocks)
            if len(runs[0]) == 1 or int(runs[3].mean()) >= _MIN_SCATTER_RUN:
                self._scatter(key, runs)
                return
            self._chunked(key, read)
            return
        whole = self.reader.get_tensor(key)
        for b, overlap in read.pieces:
            self.outs[b][_rel(overlap, self.blocks[b])] = whole[_rel(overlap, read.stored)]

    def _chunked(self, key: bytes, read: SliceRead) -> None:
        """The stored slice read in row chunks into one small buffer, each chunk CRC-extended and
        copied into the blocks it feeds while it is in the CPU cache (resharding with short runs:
        no whole-slice temporary, no scatter list of tiny pieces)."""
        from jaxsaver._format.crc import extend

        info = self.reader.info(key)
        entry = info.entry
        stored = read.stored
        inner = tuple(n for _, n in stored[1:])
        row_bytes = self.dtype.itemsize
        for n in inner:
            row_bytes *= n
        rows = stored[0][1]
        if rows * row_bytes != entry.size:
            raise DataLossError(
                f"{self.reader.store.url(self.reader.prefix)}: tensor {self.name!r}: stored slice has "
                f"{entry.size} bytes, expected {rows * row_bytes}"
            )
        step = max(1, CHUNK_BYTES // max(row_bytes, 1))
        buffer = aligned_empty((min(step, rows) * row_bytes,), np.uint8)
        file = self.reader.positional_data(info.name, entry)
        path = self.reader.store.url(file.key)
        crc = 0
        first = stored[0][0]
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            chunk = buffer[: (r1 - r0) * row_bytes]
            file.read_into(entry.offset + r0 * row_bytes, memoryview(chunk))
            crc = extend(crc, chunk)
            values = chunk.view(self.dtype).reshape((r1 - r0, *inner))
            lo, hi = first + r0, first + r1
            for b, overlap in read.pieces:
                start = max(lo, overlap[0][0])
                stop = min(hi, overlap[0][0] + overlap[0][1])
                if stop <= start:
                    continue
                part = ((start, stop - start), *overlap[1:])
                src = (slice(start - lo, stop - lo), *_rel(overlap[1:], stored[1:]))
                self.outs[b][_rel(part, self.blocks[b])] = values[src]
        if mask(crc) != entry.crc32c:
            raise DataLossError(
                f"{path}: checksum does not match for tensor {self.name!r} "
                f"(stored slice {info.name!r}): stored {entry.crc32c:#010x}, calculated {mask(crc):#010x}"
            )

    def _scatter(self, key: bytes, runs: tuple[np.ndarray, ...]) -> None:
        """One ranged read of the stored slice, scattered into the blocks; CRC over the pieces."""
        import google_crc32c

        info = self.reader.info(key)
        entry = info.entry
        file_offs, block_ids, block_offs, lengths = runs
        if int(lengths.sum()) != entry.size:
            raise DataLossError(
                f"{self.reader.store.url(self.reader.prefix)}: tensor {self.name!r}: stored slice has "
                f"{entry.size} bytes, expected {int(lengths.sum())}"
            )
        file = self.reader.positional_data(info.name, entry)
        path = self.reader.store.url(file.key)
        flats = [out.reshape(-1).view(np.uint8) for out in self.outs]
        views = [memoryview(f) for f in flats]
        pieces = [
            views[b][o : o + n]
            for b, o, n in zip(block_ids.tolist(), block_offs.tolist(), lengths.tolist())
        ]
        position = entry.offset
        for start in range(0, len(pieces), _IOV_MAX):
            batch = pieces[start : start + _IOV_MAX]
            want = sum(p.nbytes for p in batch)
            done = file.readv(batch, position)
            if done < want:  # short read: finish piece by piece
                skip = done
                for p in batch:
                    if skip >= p.nbytes:
                        skip -= p.nbytes
                        continue
                    file.read_into(position + done, p[skip:])
                    done += p.nbytes - skip
                    skip = 0
            position += want
        readonly = []
        for f in flats:
            r = f.view()
            r.flags.writeable = False
            readonly.append(r)
        crc = 0
        for b, o, n in zip(block_ids.tolist(), block_offs.tolist(), lengths.tolist()):
            crc = google_crc32c.extend(crc, readonly[b][o : o + n])
        if mask(crc) != entry.crc32c:
            raise DataLossError(
                f"{path}: checksum does not match for tensor {self.name!r} "
                f"(stored slice {info.name!r}): stored {entry.crc32c:#010x}, calculated {mask(crc):#010x}"
            )

    def result(self) -> list[np.ndarray]:
        return self.outs

