"""Tensor slices: TF's slice-spec strings, Python index tuples, slice keys and slice arithmetic.

A slice is a tuple of extents ``(start, length)``, one per dimension; ``length == -1`` means the
whole dimension (TF's ``-``). The two spellings of a full dimension (``-`` and ``0,n``) are kept
apart because TensorFlow keys them differently.

Example:
    >>> parse_slice_spec("4 6 0,2:-")
    ((4, 6), ((0, 2), (0, -1)))
    >>> format_slice_spec((4, 6), ((0, 2), (0, -1)))
    '4 6 0,2:-'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from jaxsaver._proto import tensor_slice_pb2
from jaxsaver._errors import InvalidArgumentError

__all__ = [
    "Extent",
    "SliceError",
    "parse_slice_spec",
    "format_slice_spec",
    "slice_from_index",
    "resolve_extents",
    "covers_all",
    "slice_shape",
    "intersect",
    "intersect_resolved",
    "encode_slice_key",
    "slice_to_proto",
    "slice_from_proto",
    "full_slice",
]

Extent = tuple[int, int]


_DECIMAL = re.compile(r"[0-9]+")


class SliceError(InvalidArgumentError):
    """A slice spec or index that is malformed or out of bounds."""


def full_slice(rank: int) -> tuple[Extent, ...]:
    return tuple((0, -1) for _ in range(rank))


def parse_slice_spec(spec: str) -> tuple[tuple[int, ...] | None, tuple[Extent, ...] | None]:
    """Parses ``"d0 d1 … SLICE"``; ``""`` (whole tensor) gives ``(None, None)``."""
    if spec == "":
        return None, None
    tokens = spec.split(" ")
    if len(tokens) < 2:
        raise SliceError(f"slice spec {spec!r} needs the full shape followed by the slice")
    shape = []
    for token in tokens[:-1]:
        try:
            dim = int(token, 10)
        except ValueError:
            raise SliceError(f"slice spec {spec!r}: {token!r} is not a dimension") from None
        if dim < 0 or not _DECIMAL.fullmatch(token):
            raise SliceError(f"slice spec {spec!r}: bad dimension {token!r}")
        shape.append(dim)
    items = tokens[-1].split(":")
    if len(items) != len(shape):
        raise SliceError(
            f"slice spec {spec!r}: slice has rank {len(items)} but the shape has rank {len(shape)}"
        )
    extents = []
    for dim, item in zip(shape, items):
        if item == "-":
            extents.append((0, -1))
            continue
        parts = item.split(",")
        if len(parts) != 2 or not all(_DECIMAL.fullmatch(p) for p in parts):
            raise SliceError(f"slice spec {spec!r}: bad extent {item!r}")
        start, length = int(parts[0]), int(parts[1])
        if length == 0:
            raise SliceError(f"slice spec {spec!r}: extent {item!r} must have a positive length")
        if start + length > dim:
            raise SliceError(
                f"slice spec {spec!r}: extent {item!r} exceeds dimension of size {dim}"
            )
        extents.append((start, length))
    return tuple(shape), tuple(extents)


def format_slice_spec(full_shape: Sequence[int], extents: Sequence[Extent]) -> str:
    """The inverse of :func:`parse_slice_spec`."""
    dims = " ".join(str(int(d)) for d in full_shape)
    items = ":".join("-" if length == -1 else f"{start},{length}" for start, length in extents)
    return f"{dims} {items}"


def resolve_extents(full_shape: Sequence[int], extents: Sequence[Extent]) -> tuple[Extent, ...]:
    """Extents with every ``-`` replaced by ``(0, dim)``."""
    return tuple(
        (0, int(dim)) if length == -1 else (start, length) for dim, (start, length) in zip(full_shape, extents)
    )


def covers_all(full_shape: Sequence[int], extents: Sequence[Extent]) -> bool:
    return all(
        length == -1 or (start == 0 and length == dim) for dim, (start, length) in zip(full_shape, extents)
    )


def slice_shape(full_shape: Sequence[int], extents: Sequence[Extent]) -> tuple[int, ...]:
    return tuple(length for _, length in resolve_extents(full_shape, extents))


def slice_from_index(full_shape: Sequence[int], index: Any) -> tuple[tuple[Extent, ...], tuple[int, ...]]:
    """A numpy-style index (ints, unit-step slices, Ellipsis) as extents.

    Returns the extents and the axes to squeeze (those indexed by an int).
    """
    if not isinstance(index, tuple):
        index = (index,)
    rank = len(full_shape)
    if sum(1 for i in index if i is Ellipsis) > 1:
        raise SliceError("an index can only have a single ellipsis")
    if Ellipsis in index:
        at = index.index(Ellipsis)
        fill = rank - (len(index) - 1)
        index = index[:at] + (slice(None),) * fill + index[at + 1 :]
    if len(index) > rank:
        raise SliceError(f"too many indices ({len(index)}) for a tensor of rank {rank}")
    index = index + (slice(None),) * (rank - len(index))
    extents: list[Extent] = []
    squeeze: list[int] = []
    for axis, (dim, item) in enumerate(zip(full_shape, index)):
        if isinstance(item, slice):
            start, stop, step = item.indices(dim)
            if step != 1:
                raise SliceError(f"axis {axis}: only unit-step slices are supported, got step {step}")
            extents.append((start, max(stop - start, 0)))
        elif isinstance(item, (int,)) or hasattr(item, "__index__"):
            i = int(item)
            if not -dim <= i < dim:
                raise SliceError(f"axis {axis}: index {i} out of range for dimension {dim}")
            extents.append((i % dim, 1))
            squeeze.append(axis)
        else:
            raise SliceError(f"axis {axis}: unsupported index {item!r}")
    return tuple(extents), tuple(squeeze)


def intersect(
    full_shape: Sequence[int], a: Sequence[Extent], b: Sequence[Extent]
) -> tuple[Extent, ...] | None:
    """The (resolved) intersection of two slices, or None if it holds no element."""
    return intersect_resolved(resolve_extents(full_shape, a), resolve_extents(full_shape, b))


def intersect_resolved(a: Sequence[Extent], b: Sequence[Extent]) -> tuple[Extent, ...] | None:
    """The intersection of two slices without ``-`` extents, or None if it holds no element.

    Example:
        >>> intersect_resolved(((0, 4), (2, 2)), ((2, 4), (0, 3)))
        ((2, 2), (2, 1))
    """
    out = []
    for (sa, la), (sb, lb) in zip(a, b):
        start = max(sa, sb)
        stop = min(sa + la, sb + lb)
        if stop <= start:
            return None
        out.append((start, stop - start))
    return tuple(out)


# ----------------------------------------------------------------------------- protos and keys


def slice_to_proto(extents: Sequence[Extent]) -> tensor_slice_pb2.TensorSliceProto:
    proto = tensor_slice_pb2.TensorSliceProto()
    for start, length in extents:
        extent = proto.extent.add()
        if length != -1:
            extent.start = start
            extent.length = length
    return proto


def slice_from_proto(proto: tensor_slice_pb2.TensorSliceProto) -> tuple[Extent, ...]:
    out = []
    for extent in proto.extent:
        if extent.WhichOneof("has_length") is None:
            out.append((0, -1))
        else:
            if extent.start < 0 or extent.length < 0:
                raise SliceError(f"negative extent ({extent.start}, {extent.length}) in a stored slice")
            out.append((extent.start, extent.length))
    return tuple(out)


def _unsigned(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(raw)]) + raw


def _signed(value: int) -> bytes:
    for n in range(1, 11):
        bound = 1 << (7 * n - 1)
        if -bound <= value < bound:
            break
    else:
        raise SliceError(f"{value} is too large for a slice key")
    raw = value & ((1 << (8 * n)) - 1)
    raw ^= ((1 << n) - 1) << (8 * n - n)
    return raw.to_bytes(n, "big")


_ESCAPES = {b"\x00": b"\x00\xff", b"\xff": b"\xff\x00"}
_SPECIAL = re.compile(rb"[\x00\xff]")


def _escape(name: bytes) -> bytes:
    """OrderedCode string escaping: ``00`` -> ``00 ff``, ``ff`` -> ``ff 00``."""
    return _SPECIAL.sub(lambda m: _ESCAPES[m.group()], name)


def encode_slice_key(name: bytes, extents: Sequence[Extent]) -> bytes:
    """TF's ``EncodeTensorNameSlice``: the key of one stored slice.

    Example:
        >>> encode_slice_key(b"w", ((0, 2), (0, -1))).hex(" ")
        '00 77 00 01 01 02 80 82 80 7f'
    """
    parts = [b"\x00", _escape(name), b"\x00\x01", _unsigned(len(extents))]
    for start, length in extents:
        parts.append(_signed(start))
        parts.append(_signed(length))
    return b"".join(parts)


def format_extents(extents: Sequence[Extent]) -> str:
    """Extents in TF's slice-spec spelling without the shape (for messages).

    Example:
        >>> format_extents(((0, 2), (0, -1)))
        '0,2:-'
    """
    return ":".join("-" if length == -1 else f"{start},{length}" for start, length in extents)


def extents_of(full_shape: tuple[int, ...], spec: Any) -> tuple[Extent, ...]:
    """The extents a slice request names: a slice-spec string (with or without the shape), a
    tuple of ``(start, length)`` extents, or a Python index (ints, slices with step 1, ``...``).

    Example:
        >>> extents_of((4, 6), "0,2:-"), extents_of((4, 6), (slice(1, 3), 2))
        (((0, 2), (0, -1)), ((1, 2), (2, 1)))

    Raises:
        SliceError: the request is malformed or out of bounds.
    """
    if isinstance(spec, str):
        if spec == "":
            return tuple((0, -1) for _ in full_shape)
        if " " not in spec:
            spec = " ".join(str(d) for d in full_shape) + " " + spec
        shape, extents = parse_slice_spec(spec)
        if shape is None:
            return tuple((0, -1) for _ in full_shape)
        if shape != full_shape:
            raise SliceError(f"slice spec {spec!r} is for shape {shape}, not {full_shape}")
        return extents
    if isinstance(spec, tuple) and all(
        isinstance(e, tuple) and len(e) == 2 and all(isinstance(x, int) for x in e) for e in spec
    ) and len(spec) == len(full_shape) and spec:
        for dim, (start, length) in zip(full_shape, spec):
            if length != -1 and (start < 0 or length < 0 or start + length > dim):
                raise SliceError(f"extent ({start}, {length}) out of bounds for dimension {dim}")
        return spec
    extents, _ = slice_from_index(full_shape, spec)
    return extents
