"""CRC32C (Castagnoli) of buffers through google-crc32c, and LevelDB's CRC masking."""

from __future__ import annotations

from typing import Any

import google_crc32c
import numpy as np

__all__ = ["crc32c", "extend", "mask", "unmask", "MASK_DELTA"]

MASK_DELTA = 0xA282EAD8


def _readonly_bytes(data: Any) -> Any:
    """A read-only byte view of any C-contiguous buffer, as google-crc32c requires."""
    if isinstance(data, bytes):
        return data
    view = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    view.flags.writeable = False
    return view


def extend(crc: int, data: Any) -> int:
    """Extends a running CRC32C over ``data`` (bytes, memoryview or numpy buffer)."""
    return google_crc32c.extend(crc, _readonly_bytes(data))


def crc32c(data: Any) -> int:
    """CRC32C of ``data``.

    Example:
        >>> hex(crc32c(b"123456789"))
        '0xe3069283'
    """
    return extend(0, data)


def mask(crc: int) -> int:
    """LevelDB's masked CRC: rotate right by 15 bits and add a constant.

    Example:
        >>> hex(mask(0))
        '0xa282ead8'
    """
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
