"""The immutable sorted string table behind ``.index`` files (LevelDB-derived, TF's parameters).

Pure: :class:`TableBuilder` produces the file's bytes, :class:`TableReader` parses a file's bytes.
Every length and offset read from a file is checked against the buffer before it is used, so a
corrupt or hostile file raises :class:`TableError` and never allocates more than its own size.

Example:
    >>> builder = TableBuilder()
    >>> builder.add(b"a", b"1"); builder.add(b"b", b"2")
    >>> reader = TableReader(builder.finish())
    >>> reader.get(b"b"), [k for k, _ in reader.items()]
    (b'2', [b'a', b'b'])
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator

from jaxsaver._format.crc import crc32c, mask, unmask
from jaxsaver._format.varint import VarintError, decode_varint, encode_varint
from jaxsaver._errors import InvalidArgumentError

__all__ = ["TableBuilder", "TableReader", "TableError", "BLOCK_SIZE", "MAGIC"]

BLOCK_SIZE = 262144
RESTART_INTERVAL = 16
MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5
_FIXED32 = struct.Struct("<I")
_NO_COMPRESSION = 0
_SNAPPY = 1


class TableError(InvalidArgumentError):
    """The bytes are not a valid table (bad magic, checksum, handle or entry)."""


class _BlockBuilder:
    def __init__(self, restart_interval: int) -> None:
        self._interval = restart_interval
        self._buffer = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last_key = b""

    def empty(self) -> bool:
        return not self._buffer

    def size_estimate(self) -> int:
        return len(self._buffer) + 4 * len(self._restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self._counter < self._interval:
            last = self._last_key
            limit = min(len(last), len(key))
            while shared < limit and last[shared] == key[shared]:
                shared += 1
        else:
            self._restarts.append(len(self._buffer))
            self._counter = 0
        buf = self._buffer
        buf += encode_varint(shared)
        buf += encode_varint(len(key) - shared)
        buf += encode_varint(len(value))
        buf += key[shared:]
        buf += value
        self._last_key = key
        self._counter += 1

    def finish(self) -> bytes:
        out = self._buffer
        out += struct.pack(f"<{len(self._restarts)}I", *self._restarts)
        out += struct.pack("<I", len(self._restarts))
        return bytes(out)

    def reset(self) -> None:
        self.__init__(self._interval)


def _separator(start: bytes, limit: bytes) -> bytes:
    """Bytewise FindShortestSeparator: a short key in ``[start, limit)``."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i >= n:
        return start
    byte = start[i]
    if byte < 0xFF and byte + 1 < limit[i]:
        return start[:i] + bytes([byte + 1])
    return start


def _successor(key: bytes) -> bytes:
    """Bytewise FindShortSuccessor: a short key ``>= key``."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _encode_handle(offset: int, size: int) -> bytes:
    return encode_varint(offset) + encode_varint(size)


class TableBuilder:
    """Builds a table byte for byte as TensorFlow's bundle writer does (no compression)."""

    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        self._block_size = block_size
        self._out = bytearray()
        self._data = _BlockBuilder(RESTART_INTERVAL)
        self._index = _BlockBuilder(1)
        self._last_key = b""
        self._num_entries = 0
        self._pending_handle: bytes | None = None

    def add(self, key: bytes, value: bytes) -> None:
        """Appends an entry; keys must be strictly increasing in byte order."""
        if self._num_entries > 0:
            if key <= self._last_key:
                raise TableError(f"keys out of order: {key[:64]!r} after {self._last_key[:64]!r}")
            if len(key) + len(value) >= 2 * self._block_size:
                self._flush()
        if self._pending_handle is not None:
            self._index.add(_separator(self._last_key, key), self._pending_handle)
            self._pending_handle = None
        self._data.add(key, value)
        self._last_key = key
        self._num_entries += 1
        if self._data.size_estimate() >= self._block_size:
            self._flush()

    def _flush(self) -> None:
        if self._data.empty():
            return
        self._pending_handle = self._write_block(self._data.finish())
        self._data.reset()

    def _write_block(self, contents: bytes) -> bytes:
        handle = _encode_handle(len(self._out), len(contents))
        self._out += contents
        trailer_type = bytes([_NO_COMPRESSION])
        self._out += trailer_type
        self._out += struct.pack("<I", mask(crc32c(contents + trailer_type)))
        return handle

    def finish(self) -> bytes:
        """Writes the metaindex, index block and footer; returns the whole file."""
        self._flush()
        metaindex_handle = self._write_block(_BlockBuilder(RESTART_INTERVAL).finish())
        if self._pending_handle is not None:
            self._index.add(_successor(self._last_key), self._pending_handle)
            self._pending_handle = None
        index_handle = self._write_block(self._index.finish())
        footer = bytearray(metaindex_handle + index_handle)
        footer += bytes(40 - len(footer))
        footer += struct.pack("<Q", MAGIC)
        self._out += footer
        return bytes(self._out)


def _decode_handle(buf: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    offset, pos = decode_varint(buf, pos, limit)
    size, pos = decode_varint(buf, pos, limit)
    return offset, size, pos


def _parse_block(block: bytes, what: str) -> tuple[list[bytes], list[bytes]]:
    """All keys and values of one block, every length checked, keys strictly increasing.

    A tight loop: the three entry varints are read inline when each is a single byte (always
    the case for TensorFlow's bundles, whose entries are short), and through
    :func:`decode_varint` otherwise.
    """
    size = len(block)
    if size < 4:
        raise TableError(f"{what}: block of {size} bytes is too short")
    (num_restarts,) = _FIXED32.unpack_from(block, size - 4)
    limit = size - 4 * (num_restarts + 1)
    if num_restarts == 0 or limit < 0:
        raise TableError(f"{what}: bad restart count {num_restarts}")
    keys: list[bytes] = []
    values: list[bytes] = []
    add_key = keys.append
    add_value = values.append
    pos = 0
    key = b""
    key_len = 0
    try:
        while pos < limit:
            # pos < limit <= size - 8 (at least one restart), so these three reads are in bounds.
            shared = block[pos]
            non_shared = block[pos + 1]
            value_len = block[pos + 2]
            if (shared | non_shared | value_len) < 0x80 and pos + 3 <= limit:
                pos += 3
            else:
                shared, pos = decode_varint(block, pos, limit, 5)
                non_shared, pos = decode_varint(block, pos, limit, 5)
                value_len, pos = decode_varint(block, pos, limit, 5)
            end = pos + non_shared
            value_end = end + value_len
            if shared > key_len or value_end > limit:
                raise TableError(f"{what}: corrupt entry at offset {pos}")
            new_key = key[:shared] + block[pos:end]
            if new_key <= key and keys:
                raise TableError(f"{what}: keys are not sorted")
            key = new_key
            key_len = shared + non_shared
            add_key(key)
            add_value(block[end:value_end])
            pos = value_end
    except VarintError as err:
        raise TableError(f"{what}: corrupt entry: {err}") from None
    return keys, values


class TableReader:
    """Parses a table held in memory; data blocks are decoded (and CRC-checked) on first use."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        size = len(data)
        if size < FOOTER_SIZE:
            raise TableError(f"file is too short ({size} bytes) to be a table")
        (magic,) = struct.unpack_from("<Q", data, size - 8)
        if magic != MAGIC:
            raise TableError("not a table (bad magic number)")
        footer_start = size - FOOTER_SIZE
        try:
            _, _, pos = _decode_handle(data, footer_start, size - 8)
            index_offset, index_size, _ = _decode_handle(data, pos, size - 8)
        except VarintError as err:
            raise TableError(f"corrupt footer: {err}") from None
        self._index_keys, handles = _parse_block(
            self._read_block(index_offset, index_size, "index block"), "index block"
        )
        self._handles = []
        for value in handles:
            try:
                offset, blk_size, _ = _decode_handle(value, 0, len(value))
            except VarintError as err:
                raise TableError(f"corrupt block handle: {err}") from None
            self._handles.append((offset, blk_size))
        self._blocks: dict[int, tuple[list[bytes], list[bytes]]] = {}

    def _read_block(self, offset: int, size: int, what: str) -> bytes:
        end = offset + size + TRAILER_SIZE
        if end > len(self._data) - FOOTER_SIZE:
            raise TableError(f"{what} handle points past the end of the file")
        contents = self._data[offset : offset + size]
        kind = self._data[offset + size]
        (stored,) = struct.unpack_from("<I", self._data, offset + size + 1)
        if crc32c(contents + bytes([kind])) != unmask(stored):
            raise TableError(f"{what}: block checksum mismatch")
        if kind == _SNAPPY:
            from jaxsaver._format.snappy import decompress

            try:
                contents = decompress(contents)
            except ValueError as err:
                raise TableError(f"{what}: corrupt snappy block: {err}") from None
        elif kind != _NO_COMPRESSION:
            raise TableError(f"{what}: unknown compression type {kind}")
        return contents

    def _block(self, i: int) -> tuple[list[bytes], list[bytes]]:
        cached = self._blocks.get(i)
        if cached is None:
            offset, size = self._handles[i]
            what = f"data block {i}"
            cached = _parse_block(self._read_block(offset, size, what), what)
            self._blocks[i] = cached
        return cached

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""
        i = bisect.bisect_left(self._index_keys, key)
        if i >= len(self._index_keys):
            return None
        keys, values = self._block(i)
        j = bisect.bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            return values[j]
        return None

    def blocks(self) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """``(keys, values)`` of each data block in order (keys checked sorted across blocks).

        The lists are the reader's cache: callers must not modify them.
        """
        previous = None
        for i in range(len(self._handles)):
            keys, values = self._block(i)
            if keys:
                if previous is not None and keys[0] <= previous:
                    raise TableError(f"data block {i}: keys are not sorted across blocks")
                previous = keys[-1]
            yield keys, values

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """All entries in key order."""
        for keys, values in self.blocks():
            yield from zip(keys, values)
