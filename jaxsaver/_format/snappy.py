"""A bounded Snappy block decompressor (TensorFlow can read Snappy-compressed table blocks)."""

from __future__ import annotations

from jaxsaver._errors import InvalidArgumentError
from jaxsaver._format.varint import VarintError, decode_varint

__all__ = ["SnappyError", "decompress"]


class SnappyError(InvalidArgumentError):
    """The bytes are not a valid Snappy block."""

# Snappy's densest element is a 3-byte copy of 64 bytes; bound the claimed length accordingly.
_MAX_RATIO = 22


def decompress(data: bytes) -> bytes:
    """Decompresses a raw Snappy block; raises :class:`SnappyError` (a ``ValueError``) on malformed input."""
    try:
        length, pos = decode_varint(data, 0, len(data), 5)
    except VarintError as err:
        raise SnappyError(f"bad length: {err}") from None
    if length > _MAX_RATIO * len(data) + 64:
        raise SnappyError(f"claimed length {length} is impossible for {len(data)} input bytes")
    out = bytearray()
    n = len(data)
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                if pos + extra > n:
                    raise SnappyError("literal length runs past the end")
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            if pos + size > n:
                raise SnappyError("literal runs past the end")
            out += data[pos : pos + size]
            pos += size
        else:
            if kind == 1:
                if pos + 1 > n:
                    raise SnappyError("copy runs past the end")
                size = ((tag >> 2) & 7) + 4
                offset = ((tag >> 5) << 8) | data[pos]
                pos += 1
            else:
                width = 2 if kind == 2 else 4
                if pos + width > n:
                    raise SnappyError("copy runs past the end")
                size = (tag >> 2) + 1
                offset = int.from_bytes(data[pos : pos + width], "little")
                pos += width
            if offset == 0 or offset > len(out):
                raise SnappyError(f"bad copy offset {offset}")
            start = len(out) - offset
            for i in range(size):
                out.append(out[start + i])
        if len(out) > length:
            raise SnappyError("output longer than its stated length")
    if len(out) != length:
        raise SnappyError(f"output is {len(out)} bytes, expected {length}")
    return bytes(out)
