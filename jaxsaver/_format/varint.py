"""Protobuf/LEB128 unsigned varints and little-endian fixed-width integers, with bounds checks."""

from __future__ import annotations

import struct

from jaxsaver._errors import InvalidArgumentError

__all__ = ["encode_varint", "decode_varint", "VarintError", "put_fixed32", "get_fixed32"]


class VarintError(InvalidArgumentError):
    """A varint runs past the end of its buffer or is longer than allowed."""


def encode_varint(value: int) -> bytes:
    """Encodes a non-negative integer.

    Example:
        >>> encode_varint(300).hex()
        'ac02'
    """
    if value < 0:
        raise VarintError(f"varint must be non-negative, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int, limit: int, max_bytes: int = 10) -> tuple[int, int]:
    """Decodes a varint at ``pos`` that must end before ``limit``; returns ``(value, new_pos)``."""
    result = 0
    shift = 0
    for i in range(max_bytes):
        if pos >= limit:
            raise VarintError("varint runs past the end of the buffer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise VarintError(f"varint longer than {max_bytes} bytes")


_FIXED32 = struct.Struct("<I")


def put_fixed32(value: int) -> bytes:
    return _FIXED32.pack(value & 0xFFFFFFFF)


def get_fixed32(buf: bytes | memoryview, pos: int) -> int:
    return _FIXED32.unpack_from(buf, pos)[0]
