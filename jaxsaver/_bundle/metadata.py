"""Index entries' metadata without I/O: key decoding, shape checks and the protobuf-free fast scan.

Everything here works on bytes already read from a bundle's index (``BundleReader`` reads the
index and wraps these functions); nothing opens files.

Example:
    >>> head = bytes([0x08, 0x01, 0x12, 0x04, 0x12, 0x02, 0x08, 0x03])  # DT_FLOAT, shape [3]
    >>> head_metadata(head)
    (1, (3,))
    >>> shape_problem((2, -1))
    'has a negative dimension -1'
    >>> decode_keys([b"a", b"b/c"])
    ['a', 'b/c']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from jaxsaver._proto import tensor_bundle_pb2
from jaxsaver._format.slices import SliceError, encode_slice_key, slice_from_proto
from jaxsaver._format.tensors import HEADER_KEY

__all__ = [
    "TensorInfo",
    "decode_key",
    "decode_keys",
    "drop_hidden",
    "head_metadata",
    "hidden_keys",
    "scan_entries",
    "shape_problem",
]

# No array (even with a zero dimension) may have a product of non-zero dims times the largest
# itemsize (complex128) beyond what numpy can index.
_MAX_ITEMSIZE = 16
_MAX_NBYTES = 2**63 - 1

Meta = tuple[int, tuple[int, ...]]
"""``(dtype code, dims)`` of one entry."""


class TensorInfo:
    """What the index says about one tensor (cheap; no data is read)."""

    __slots__ = ("name", "dtype_code", "shape", "entry")

    def __init__(self, name: str, entry: tensor_bundle_pb2.BundleEntryProto) -> None:
        self.name = name
        self.entry = entry
        self.dtype_code = entry.dtype
        self.shape = tuple(d.size for d in entry.shape.dim)

    @property
    def is_sliced(self) -> bool:
        return len(self.entry.slices) > 0


def decode_key(key: bytes) -> str:
    """A stored key as a name (undecodable bytes kept as surrogates)."""
    return key.decode("utf-8", "surrogateescape")


def decode_keys(keys: list[bytes]) -> list[str]:
    """``[decode_key(k) for k in keys]``, decoded in one call when no key holds a newline.

    Equal to the per-key decoding: a newline is ASCII, so no UTF-8 sequence spans one, and
    ``surrogateescape`` escapes each undecodable byte on its own.
    """
    if not keys:
        return []
    joined = b"\n".join(keys)
    if joined.count(b"\n") != len(keys) - 1:
        return [decode_key(k) for k in keys]
    return joined.decode("utf-8", "surrogateescape").split("\n")


def shape_problem(dims: tuple[int, ...]) -> str | None:
    """Why a stored shape is unusable (negative or impossibly large), or None."""
    extent = 1
    for size in dims:
        if size < 0:
            return f"has a negative dimension {size}"
        extent *= max(size, 1)
    if extent * _MAX_ITEMSIZE > _MAX_NBYTES:
        return f"has an impossibly large shape {list(dims)}"
    return None


# The metadata fast path (``scan_entries``) reads an entry ``08 <dtype> 12 <n> <shape: n
# bytes> <tail>`` without protobuf when dtype and n are single-byte varints and the tail holds
# only fields 3-6 (shard_id, offset, size, crc32c), in field order, each at most once, varints
# at most 9 bytes: a subset of what protobuf accepts, whose dtype and shape are those of the
# head alone. The head (few distinct values) is parsed once by protobuf and cached; anything
# else (slices, unknown fields, other orders, long varints) goes through protobuf.
_VARINT_RE = rb"[\x80-\xff]{0,8}[\x00-\x7f]"
_PLAIN_TAIL = re.compile(
    rb"(?:\x18%s)?(?:\x20%s)?(?:\x28%s)?(?:\x35[\x00-\xff]{4})?" % (_VARINT_RE, _VARINT_RE, _VARINT_RE),
    re.DOTALL,
).fullmatch


def head_metadata(head: bytes) -> Meta | None:
    """``(dtype, dims)`` of an entry's ``08 <dtype> 12 <n> <shape>`` head, or None if protobuf
    rejects it or the shape is unusable (the caller then takes the protobuf path, which raises)."""
    if not (head[0] == 0x08 and head[2] == 0x12 and (head[1] | head[3]) < 0x80 and len(head) == 4 + head[3]):
        return None  # not that form (or truncated)
    entry = tensor_bundle_pb2.BundleEntryProto()
    try:
        entry.ParseFromString(head)
    except Exception:
        return None
    dims = tuple(d.size for d in entry.shape.dim)
    if shape_problem(dims) is not None:
        return None
    return entry.dtype, dims


def scan_entries(
    blocks: Iterable[tuple[list[bytes], list[bytes]]],
    entry_of: Callable[[bytes, bytes], tensor_bundle_pb2.BundleEntryProto],
) -> tuple[list[bytes], list[Meta], dict[bytes, Any]]:
    """Every key of an index's ``(keys, values)`` blocks (header excluded, slice keys included)
    with its ``(dtype, dims)``, and the entries that list slices.

    Entries of the plain form (see ``_PLAIN_TAIL``) are read without protobuf; every other one
    comes from ``entry_of(key, value)``, which parses and checks it (and raises if it is bad).
    """
    out_keys: list[bytes] = []
    metas: list[Meta] = []
    sliced: dict[bytes, Any] = {}
    add_key = out_keys.append
    add_meta = metas.append
    heads: dict[bytes, Any] = {}
    plain_tail = _PLAIN_TAIL
    for keys, values in blocks:
        if keys and keys[0] == HEADER_KEY:  # keys are sorted: only the table's first
            keys = keys[1:]
            values = values[1:]
        for key, value in zip(keys, values):
            if len(value) > 3:
                end = value[3] + 4
                head = value[:end]
                meta = heads.get(head)  # only heads of the right form are truthy
                if meta is None:
                    meta = heads[head] = head_metadata(head) or False
                if meta and plain_tail(value, end):
                    add_key(key)
                    add_meta(meta)
                    continue
            entry = entry_of(key, value)
            if entry.slices:
                sliced[key] = entry
            add_key(key)
            add_meta((entry.dtype, tuple(d.size for d in entry.shape.dim)))
    return out_keys, metas, sliced


def hidden_keys(entries: Iterable[tuple[bytes, Any]]) -> set[bytes]:
    """The slice keys listed by partitioned tensors' entries (TF hides exactly these)."""
    hidden = set()
    for key, entry in entries:
        for proto in entry.slices:
            try:
                hidden.add(encode_slice_key(key, slice_from_proto(proto)))
            except SliceError:
                continue
    return hidden


def drop_hidden(keys: list[bytes], metas: list[Meta], sliced: dict[bytes, Any]) -> tuple[list[bytes], list[Meta]]:
    """``keys`` and their ``metas`` without the slice keys that ``sliced``'s entries list."""
    if sliced:
        hidden = hidden_keys(sliced.items())
        if hidden:
            kept = [i for i, key in enumerate(keys) if key not in hidden]
            keys = [keys[i] for i in kept]
            metas = [metas[i] for i in kept]
    return keys, metas
