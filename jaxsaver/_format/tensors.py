"""Bundle records: header and entry protos, data file names, and DT_STRING tensor encoding."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from jaxsaver._proto import tensor_bundle_pb2
from jaxsaver._format.crc import extend, mask, unmask
from jaxsaver._format.varint import VarintError, decode_varint, encode_varint
from jaxsaver._errors import InvalidArgumentError

__all__ = [
    "CHUNK_BYTES",
    "HEADER_KEY",
    "data_filename",
    "make_header",
    "encode_strings",
    "decode_strings",
    "TensorError",
    "num_elements",
]

HEADER_KEY = b""
#: Tensor data is written, read and checksummed in pieces of this size (each piece is CRC-checked
#: while it is still in the CPU cache; resharded slices are read in row chunks of about this size).
CHUNK_BYTES = 4 << 20


class TensorError(InvalidArgumentError):
    """Stored tensor bytes that do not decode (bad lengths, checksum)."""


def data_filename(prefix: str, shard_id: int, num_shards: int) -> str:
    """``prefix.data-00000-of-00001``.

    Example:
        >>> data_filename("ckpt/model", 1, 3)
        'ckpt/model.data-00001-of-00003'
    """
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def make_header(num_shards: int) -> tensor_bundle_pb2.BundleHeaderProto:
    header = tensor_bundle_pb2.BundleHeaderProto(num_shards=num_shards)
    header.version.producer = 1
    return header


def num_elements(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytearray, memoryview, np.bytes_)):
        return bytes(item)
    raise TensorError(f"string tensors hold bytes or str, got {type(item).__name__}")


def encode_strings(array: np.ndarray) -> tuple[list[bytes], int, int]:
    """Encodes a string tensor; returns ``(chunks, masked_crc, size)``.

    Layout: varint lengths, the masked CRC of the lengths, then the bytes (FORMAT.md §4.4).
    """
    items = [_as_bytes(x) for x in np.asarray(array, dtype=object).reshape(-1)]
    lengths = b"".join(encode_varint(len(x)) for x in items)
    crc = 0
    for item in items:
        n = len(item)
        crc = extend(crc, struct.pack("<Q", n) if n > 0xFFFFFFFF else struct.pack("<I", n))
    length_checksum = struct.pack("<I", mask(crc))
    crc = extend(crc, length_checksum)
    for item in items:
        crc = extend(crc, item)
    chunks = [lengths, length_checksum, *items]
    return chunks, mask(crc), sum(len(c) for c in chunks)


def decode_strings(data: bytes, shape: Sequence[int], big_endian: bool = False) -> tuple[np.ndarray, int]:
    """Decodes a string tensor's stored bytes; returns ``(object array, masked crc computed)``.

    Every length is checked against ``data`` before it is used.
    """
    count = num_elements(shape)
    if count > len(data):
        raise TensorError(f"{count} strings cannot fit in {len(data)} bytes")
    fmt32, fmt64 = (">I", ">Q") if big_endian else ("<I", "<Q")
    lengths = []
    pos = 0
    try:
        for _ in range(count):
            n, pos = decode_varint(data, pos, len(data))
            lengths.append(n)
    except VarintError as err:
        raise TensorError(f"bad string length: {err}") from None
    if pos + 4 + sum(lengths) > len(data):
        raise TensorError("string lengths run past the stored bytes")
    crc = 0
    for n in lengths:
        crc = extend(crc, struct.pack(fmt64, n) if n > 0xFFFFFFFF else struct.pack(fmt32, n))
    (stored,) = struct.unpack_from(fmt32, data, pos)
    if unmask(stored) != crc:
        raise TensorError("checksum of the string lengths does not match")
    crc = extend(crc, data[pos : pos + 4])
    pos += 4
    out = np.empty(count, dtype=object)
    for i, n in enumerate(lengths):
        item = data[pos : pos + n]
        crc = extend(crc, item)
        out[i] = item
        pos += n
    return out.reshape(tuple(shape)), mask(crc)
