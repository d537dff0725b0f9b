"""Slice math for partial reads: the byte runs of part of a stored tensor, the stored slices covering a request.

Pure arithmetic on shapes and extents (``(start, length)`` per axis, resolved); ``BundleReader``
does the reading.

Example:
    >>> plan_part((4, 3), ((1, 2), (0, 3)), itemsize=4)  # rows 1-2: one contiguous run
    PartPlan(strides=(12, 4), span=None, runs=(12,), run_bytes=24)
    >>> plan_part((4, 3), ((0, 4), (1, 1)), itemsize=4).span  # a column: one read, strided copy
    (4, 44)
    >>> plan_part((4, 3), ((0, 4), (0, 3)), itemsize=4) is None  # the whole tensor
    True
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxsaver._format.slices import Extent, SliceError, format_extents, intersect, resolve_extents, slice_from_proto
from jaxsaver._format.tensors import num_elements

__all__ = ["PartPlan", "TooIrregular", "check_stored_slices", "covering_pieces", "find_overlap", "piece_indices", "plan_part"]

# Partial reads issue one ranged read per contiguous run; below this run size a single read of
# the bounding range is cheaper than many small ones.
_MIN_RUN_BYTES = 1 << 16
_MAX_RUNS = 4096
# The overlap check marks stored slices on the grid their boundaries draw: at most this many
# cells (one byte each), whatever the index claims.
MAX_GRID_CELLS = 1 << 24


class TooIrregular(SliceError):
    """Stored slices whose boundaries draw a grid too large to check for overlaps."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PartPlan:
    """How to read part of a stored (C-order) tensor: one bounding span, or contiguous runs."""

    strides: tuple[int, ...]
    """Byte strides of the stored tensor."""
    span: tuple[int, int] | None = None
    """``(first, last)``: read these bytes at once, then copy strided; None to read ``runs``."""
    runs: tuple[int, ...] = ()
    """Byte offsets (in the stored tensor) of the contiguous runs, in output order."""
    run_bytes: int = 0
    """Bytes per run."""


def plan_part(stored_shape: tuple[int, ...], part: tuple[Extent, ...], itemsize: int) -> PartPlan | None:
    """The reads for ``part`` (resolved extents holding at least one element) of a stored tensor,
    or None when ``part`` is the whole tensor."""
    rank = len(stored_shape)
    # Innermost axes taken whole form one contiguous run per index of the outer axes.
    k = rank
    while k > 0 and part[k - 1] == (0, stored_shape[k - 1]):
        k -= 1
    if k == 0:
        return None
    strides = [itemsize] * rank
    for axis in range(rank - 2, -1, -1):
        strides[axis] = strides[axis + 1] * stored_shape[axis + 1]
    run_bytes = part[k - 1][1] * strides[k - 1]
    outer = [range(s, s + n) for s, n in part[: k - 1]]
    num_runs = num_elements([n for _, n in part[: k - 1]])
    base = sum(start * stride for (start, _), stride in zip(part, strides))
    if run_bytes < _MIN_RUN_BYTES and num_runs > 1 or num_runs > _MAX_RUNS:
        last = sum((s + n - 1) * stride for (s, n), stride in zip(part, strides)) + itemsize
        return PartPlan(strides=tuple(strides), span=(base, last), run_bytes=run_bytes)
    runs = tuple(
        base + sum(i * stride for i, stride in zip(idx, strides))
        for idx in (np.ndindex(*[len(r) for r in outer]) if outer else [()])
    )
    return PartPlan(strides=tuple(strides), runs=runs, run_bytes=run_bytes)


def covering_pieces(
    shape: tuple[int, ...], stored: Sequence[tuple[Any, tuple[Extent, ...]]], request: tuple[Extent, ...]
) -> tuple[list[tuple[Any, tuple[Extent, ...], tuple[Extent, ...]]], bool]:
    """``(extents, resolved, overlap)`` of each stored slice ``(extents, resolved)`` that meets
    ``request``, and whether together they cover it (stored slices do not overlap).

    Example:
        >>> stored = [("top", ((0, 2), (0, 3))), ("bottom", ((2, 2), (0, 3)))]
        >>> covering_pieces((4, 3), stored, ((1, 2), (0, 3)))
        ([('top', ((0, 2), (0, 3)), ((1, 1), (0, 3))), ('bottom', ((2, 2), (0, 3)), ((2, 1), (0, 3)))], True)
    """
    covered = 0
    pieces = []
    for extents, resolved in stored:
        overlap = intersect(shape, resolved, request)
        if overlap is None:
            continue
        covered += num_elements([n for _, n in overlap])
        pieces.append((extents, resolved, overlap))
    return pieces, covered == num_elements([n for _, n in request])


def piece_indices(
    resolved: tuple[Extent, ...], overlap: tuple[Extent, ...], request: tuple[Extent, ...]
) -> tuple[tuple[Extent, ...], tuple[slice, ...]]:
    """Where ``overlap`` lies inside its stored slice (extents) and inside the request (an index)."""
    local = tuple((s - rs, n) for (s, n), (rs, _) in zip(overlap, resolved))
    target = tuple(slice(s - qs, s - qs + n) for (s, n), (qs, _) in zip(overlap, request))
    return local, target


def check_stored_slices(shape: tuple[int, ...], protos: Sequence[Any]) -> list[tuple[tuple[Extent, ...], tuple[Extent, ...]]]:
    """A partitioned tensor's stored slices as ``(extents, resolved)``, checked against its shape.

    Raises:
        SliceError: a slice does not parse, has another rank, exceeds the shape, or overlaps
            another (TF's "Overlapping slices" wording); :class:`TooIrregular` (a ``SliceError``)
            when the slices are too irregular to check within :data:`MAX_GRID_CELLS`.
    """
    stored = []
    for proto in protos:
        extents = slice_from_proto(proto)
        if len(extents) != len(shape):
            raise SliceError(f"stored slice of rank {len(extents)} for a tensor of rank {len(shape)}")
        resolved = resolve_extents(shape, extents)
        if any(s + n > d for (s, n), d in zip(resolved, shape)):
            raise SliceError(f"stored slice {format_extents(extents)} exceeds shape {shape}")
        stored.append((extents, resolved))
    overlap = find_overlap(shape, [resolved for _, resolved in stored])
    if overlap is not None:
        a, b = (stored[k][1] for k in overlap)
        raise SliceError(f"Overlapping slices {format_extents(a)} and {format_extents(b)}")
    return stored


def find_overlap(shape: tuple[int, ...], boxes: Sequence[tuple[Extent, ...]]) -> tuple[int, int] | None:
    """The indices of two stored slices (resolved extents inside ``shape``) that share an
    element, or None; linear in the grid the slices' boundaries draw, not quadratic in their count.

    Every slice marks the cells of that grid it covers; a cell marked twice is an overlap. A
    sharded tensor's slices draw one cell per slice, so the check costs about one numpy
    assignment per slice.

    Raises:
        TooIrregular: the grid would have more than :data:`MAX_GRID_CELLS` cells.

    Example:
        >>> find_overlap((4, 3), [((0, 2), (0, 3)), ((2, 2), (0, 3))]) is None
        True
        >>> find_overlap((4, 3), [((0, 3), (0, 3)), ((2, 2), (0, 3))])
        (0, 1)
    """
    kept = [i for i, box in enumerate(boxes) if all(n > 0 for _, n in box)]
    if len(kept) < 2:
        return None
    if not shape:
        return (kept[0], kept[1])
    edges = [sorted({s for s, _ in axis} | {s + n for s, n in axis}) for axis in zip(*(boxes[i] for i in kept))]
    cells = 1
    for axis_edges in edges:
        cells *= max(len(axis_edges) - 1, 1)
    if cells > MAX_GRID_CELLS:
        raise TooIrregular(
            f"{len(kept)} stored slices draw a grid of {cells} cells to check for overlaps "
            f"(limit {MAX_GRID_CELLS})"
        )
    taken = np.zeros(tuple(max(len(e) - 1, 1) for e in edges), dtype=np.bool_)
    for at, i in enumerate(kept):
        box = boxes[i]
        index = tuple(
            slice(bisect.bisect_left(e, s), bisect.bisect_left(e, s + n)) for e, (s, n) in zip(edges, box)
        )
        region = taken[index]
        if region.any():
            for j in kept[:at]:
                if intersect(shape, boxes[j], box) is not None:
                    return (j, i)
        region[...] = True
    return None
